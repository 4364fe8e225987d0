"""The container image definition, checked statically (no Docker daemon here or in CI)."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import tomllib
from dataclasses import dataclass

from tests.deploy.manifests import REPO

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction, continuation lines joined."""

    keyword: str
    arguments: str


def parse(text: str) -> list[Instruction]:
    """Return the instructions of a Dockerfile (comments dropped, continuations joined)."""
    instructions: list[Instruction] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


INSTRUCTIONS = parse(DOCKERFILE.read_text())


def stages() -> list[list[Instruction]]:
    """Return the instructions grouped by build stage."""
    groups: list[list[Instruction]] = []
    for instruction in INSTRUCTIONS:
        if instruction.keyword == "FROM":
            groups.append([])
        if groups:
            groups[-1].append(instruction)
    return groups


def test_build_is_multi_stage_from_a_pinned_slim_base() -> None:
    froms = [i.arguments for i in INSTRUCTIONS if i.keyword == "FROM"]
    assert len(froms) >= 2
    for image in froms:
        name = image.split()[0]
        tag = name.partition(":")[2]
        assert re.fullmatch(r"\d+\.\d+\.\d+-slim-\w+", tag) or "@sha256:" in name, f"{name} is not pinned"
    assert froms[0].endswith("AS builder")


def test_runtime_stage_copies_only_the_virtualenv_from_the_builder() -> None:
    runtime = stages()[-1]
    copies = [i.arguments for i in runtime if i.keyword == "COPY"]
    assert any(c.startswith("--from=builder /opt/venv") for c in copies)
    assert not any(i.keyword == "RUN" and "apt-get install" in i.arguments for i in runtime)


def test_runtime_runs_as_a_non_root_user() -> None:
    users = [i.arguments for i in stages()[-1] if i.keyword == "USER"]
    assert users, "the runtime stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in {"0", "root"}
    assert int(user) >= 10000  # matches runAsUser in the manifests


def test_the_screener_command_is_the_entrypoint() -> None:
    (entrypoint,) = [i.arguments for i in INSTRUCTIONS if i.keyword == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["screener"]


def test_no_secret_is_baked_into_the_image() -> None:
    for instruction in INSTRUCTIONS:
        if instruction.keyword in {"ENV", "ARG"}:
            names = re.findall(r"([A-Z_]+)=", instruction.arguments) or [instruction.arguments.split("=")[0]]
            for name in names:
                assert not re.search(r"PASSWORD|SECRET|TOKEN|DSN|REDIS_URL|KEY", name), f"{name} set in the image"


def ignored(path: str, patterns: list[str]) -> bool:
    """Return whether ``path`` is excluded by .dockerignore patterns (enough of its syntax for ours)."""
    result = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw.lstrip("!").rstrip("/")
        if pattern.startswith("**/"):
            hit = any(fnmatch.fnmatch(part, pattern[3:]) for part in path.split("/"))
        else:
            hit = fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/")
        if hit:
            result = not negate
    return result


def test_every_copied_path_exists_and_is_in_the_build_context() -> None:
    patterns = [
        line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    for instruction in INSTRUCTIONS:
        if instruction.keyword != "COPY" or "--from=" in instruction.arguments:
            continue
        sources = [a for a in shlex.split(instruction.arguments) if not a.startswith("--")][:-1]
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: no such path"
            assert not ignored(source, patterns), f"COPY {source}: excluded by .dockerignore"


def test_dockerignore_keeps_the_context_small_and_free_of_secrets() -> None:
    patterns = DOCKERIGNORE.read_text().splitlines()
    for required in (".git", ".venv", "tests", "terraform", "**/*.tfstate*", ".env"):
        assert required in patterns


def test_package_folders_copied_are_the_wheels_packages() -> None:
    with (REPO / "pyproject.toml").open("rb") as handle:
        wheel_packages = set(tomllib.load(handle)["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"])
    copied = {
        shlex.split(i.arguments)[0]
        for i in INSTRUCTIONS
        if i.keyword == "COPY" and "--from=" not in i.arguments and "--chown" not in i.arguments
    }
    assert wheel_packages <= copied
