"""Terraform parses, is ``terraform fmt`` clean, and references only what it declares.

Offline: no provider is downloaded. Where the ``terraform`` binary is installed, ``terraform fmt
-check`` runs and the application module's manifest logic is evaluated with ``terraform plan`` on a
provider-free copy of its locals; otherwise a small checker of fmt's layout rules stands in.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml

from screener.scale_advice import SCALING
from tests.deploy.manifests import REPO

TERRAFORM = REPO / "terraform"
MODULE_DIRS = sorted(p for p in (TERRAFORM / "modules").iterdir() if p.is_dir())
ALL_DIRS = [TERRAFORM, *MODULE_DIRS]
META_ARGUMENTS = {"source", "version", "depends_on", "providers", "count", "for_each", "__is_block__"}
REQUIRED_MODULES = {"nats", "keda", "knative", "redis", "postgres", "otel_collector", "screener"}


def unquote(value: Any) -> Any:
    """Return a python-hcl2 string without the quotes it keeps."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


@dataclass
class ModuleInfo:
    """What one Terraform folder declares."""

    path: Path
    variables: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: set[str] = field(default_factory=set)
    locals: set[str] = field(default_factory=set)
    modules: dict[str, dict[str, Any]] = field(default_factory=dict)
    text: str = ""


def load_module(path: Path) -> ModuleInfo:
    """Parse every ``.tf`` file of ``path``."""
    info = ModuleInfo(path)
    for tf in sorted(path.glob("*.tf")):
        with tf.open() as handle:
            parsed = hcl2.load(handle)
        info.text += strip_comments(tf.read_text()) + "\n"
        for block in parsed.get("variable", []):
            for name, body in block.items():
                info.variables[unquote(name)] = body
        for block in parsed.get("output", []):
            info.outputs.update(unquote(name) for name in block)
        for block in parsed.get("locals", []):
            info.locals.update(k for k in block if k != "__is_block__")
        for block in parsed.get("module", []):
            for name, body in block.items():
                info.modules[unquote(name)] = body
    return info


def strip_comments(text: str) -> str:
    """Drop ``#`` comments that fill a line (ours never put ``#`` inside strings at line start)."""
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


MODULES = {p: load_module(p) for p in ALL_DIRS}


def test_root_installs_every_platform_part_and_the_application() -> None:
    root = MODULES[TERRAFORM]
    assert set(root.modules) == REQUIRED_MODULES
    text = "\n".join(MODULES[p].text for p in MODULE_DIRS)
    assert text.count('resource "helm_release"') >= 6
    assert 'resource "kubernetes_manifest"' in text


@pytest.mark.parametrize("path", ALL_DIRS, ids=lambda p: str(p.relative_to(REPO)))
def test_references_are_declared(path: Path) -> None:
    info = MODULES[path]
    for name in set(re.findall(r"\bvar\.([A-Za-z_][\w-]*)", info.text)):
        assert name in info.variables, f"{path}: var.{name} is not declared"
    for name in set(re.findall(r"\blocal\.([A-Za-z_][\w-]*)", info.text)):
        assert name in info.locals, f"{path}: local.{name} is not declared"
    for name, attribute in set(re.findall(r"\bmodule\.([A-Za-z_][\w-]*)(?:\.([A-Za-z_][\w-]*))?", info.text)):
        assert name in info.modules, f"{path}: module.{name} is not declared"
        child = MODULES[(path / unquote(info.modules[name]["source"])).resolve()]
        if attribute:
            assert attribute in child.outputs, f"{path}: module.{name}.{attribute} is not an output of {child.path}"


@pytest.mark.parametrize("path", ALL_DIRS, ids=lambda p: str(p.relative_to(REPO)))
def test_module_calls_match_the_modules_variables(path: Path) -> None:
    for name, call in MODULES[path].modules.items():
        source = (path / unquote(call["source"])).resolve()
        assert source in MODULES, f"{path}: module {name} has no source folder {source}"
        child = MODULES[source]
        given = set(call) - META_ARGUMENTS
        assert given <= set(child.variables), f"module {name}: unknown arguments {sorted(given - set(child.variables))}"
        required = {v for v, body in child.variables.items() if "default" not in body}
        assert required <= given, f"module {name}: missing arguments {sorted(required - given)}"


@pytest.mark.parametrize("path", ALL_DIRS, ids=lambda p: str(p.relative_to(REPO)))
def test_variables_have_a_type_and_a_description(path: Path) -> None:
    for name, body in MODULES[path].variables.items():
        assert "type" in body, f"{path}: variable {name} has no type"
        assert unquote(body.get("description", "")), f"{path}: variable {name} has no description"


def test_replica_bounds_default_to_the_scaling_table() -> None:
    default = MODULES[TERRAFORM].variables["replica_bounds"]["default"]
    bounds = {unquote(k): v for k, v in default.items()}
    assert set(bounds) == set(SCALING)
    for function, policy in SCALING.items():
        assert (bounds[function]["min"], bounds[function]["max"]) == (policy.min_replicas, policy.max_replicas)


def test_http_functions_allowed_are_the_knative_function_manifests() -> None:
    text = (TERRAFORM / "variables.tf").read_text()
    allowed = re.search(r"for f in var\.http_functions : contains\(\[([^\]]*)\], f\)", text)
    assert allowed is not None
    names = {n.strip().strip('"') for n in allowed.group(1).split(",")}
    assert names == {p.stem for p in (REPO / "knative" / "functions").glob("*.yaml")} - {"kustomization"}


def test_secrets_are_passed_by_name_only() -> None:
    for info in MODULES.values():
        assert "kubernetes_secret" not in info.text, f"{info.path} reads or writes a Secret"
        for name in info.variables:
            assert not re.search(r"password|token|dsn|jwt", name), f"{info.path}: variable {name} carries a secret"


# --- terraform fmt ------------------------------------------------------------------------------------

_ATTRIBUTE = re.compile(r"^(?P<indent> *)(?P<key>[\w\-\"./()]+)(?P<gap> +)= ")


def _balanced(line: str) -> bool:
    depth = 0
    for char in re.sub(r'"(?:[^"\\]|\\.)*"', '""', line):
        if char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
    return depth == 0


def fmt_problems(text: str) -> list[str]:
    """Return where ``text`` departs from terraform fmt's layout (indentation, spacing, ``=`` alignment).

    fmt aligns the ``=`` of consecutive one-line attributes at the same indentation; a blank line, a
    comment, a block or a multi-line value ends such a group.
    """
    problems = []
    group: list[tuple[int, re.Match[str]]] = []

    def close() -> None:
        if group:
            width = max(len(m["key"]) for _, m in group)
            for number, m in group:
                if len(m["key"]) + len(m["gap"]) != width + 1:
                    problems.append(f"line {number}: '=' not aligned in its group")
        group.clear()

    for number, line in enumerate(text.splitlines(), 1):
        if "\t" in line or line != line.rstrip():
            problems.append(f"line {number}: tab or trailing space")
        indent = len(line) - len(line.lstrip(" "))
        if line.strip() and indent % 2:
            problems.append(f"line {number}: indentation is not a multiple of two")
        match = _ATTRIBUTE.match(line)
        if match and _balanced(line):
            if group and len(group[-1][1]["indent"]) != len(match["indent"]):
                close()
            group.append((number, match))
        else:
            close()
    close()
    if text and not text.endswith("\n"):
        problems.append("no newline at end of file")
    return problems


def tf_files() -> list[Path]:
    """Return every Terraform file."""
    return sorted(TERRAFORM.rglob("*.tf"))


def test_fmt_checker_catches_misalignment() -> None:
    assert fmt_problems("a = 1\nbbb = 2\n")
    assert fmt_problems("x {\n   a = 1\n}\n")
    assert not fmt_problems("a   = 1\nbbb = 2\n\nc = {\n  d = 1\n}\n")


@pytest.mark.parametrize("path", tf_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_file_follows_fmt_layout(path: Path) -> None:
    assert not fmt_problems(path.read_text()), fmt_problems(path.read_text())


def test_terraform_fmt_check_passes() -> None:
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("terraform is not installed: test_file_follows_fmt_layout checks fmt's layout instead")
    result = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", "-diff", str(TERRAFORM)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"terraform fmt would change:\n{result.stdout}{result.stderr}"


# --- the application module's logic, evaluated ------------------------------------------------------


def evaluate_app_module(tmp_path: Path, http_functions: list[str]) -> dict[str, Any]:
    """Run the application module's locals through ``terraform plan`` with no provider; return outputs."""
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("terraform is not installed")
    module = TERRAFORM / "modules" / "screener"
    main = (module / "main.tf").read_text()
    locals_only = main[: main.index('resource "kubernetes_manifest"')]
    (tmp_path / "variables.tf").write_text((module / "variables.tf").read_text())
    (tmp_path / "main.tf").write_text(
        locals_only
        + """
output "objects" {
  value = local.objects
}
"""
    )
    variables = {
        "manifests_dir": str(REPO),
        "namespace": "prod",
        "image": "registry.example/screener:9.9.9",
        "secret_name": "prod-secrets",
        "replica_bounds": {name: {"min": 2, "max": 7} for name in SCALING},
        "gateway_scale": {"min": 2, "max": 5},
        "http_functions": http_functions,
        "config": {"SCREENER_SYMBOLS": "BTCUSDT"},
        "nats_monitoring_endpoint": "nats.prod:8222",
        "domain": "example.org",
    }
    (tmp_path / "terraform.tfvars.json").write_text(json.dumps(variables))
    env = {"TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1", "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    for command in (["init", "-input=false", "-backend=false"], ["apply", "-input=false", "-auto-approve"]):
        result = subprocess.run(
            [terraform, *command], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False, env=env
        )
        assert result.returncode == 0, result.stdout + result.stderr
    result = subprocess.run(
        [terraform, "output", "-json", "objects"], cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    objects: list[dict[str, Any]] = json.loads(result.stdout)
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in objects}


@pytest.mark.parametrize("http_functions", [[], ["notifier"]], ids=["jetstream", "http-notifier"])
def test_app_module_turns_the_manifests_into_the_chosen_profile(tmp_path: Path, http_functions: list[str]) -> None:
    objects = evaluate_app_module(tmp_path, http_functions)
    workers = {"calculator", "rules", "recorder", "notifier"} - set(http_functions)
    assert {k.split("/")[1] for k in objects if k.startswith("ScaledObject/")} == workers
    assert ("Service/notifier" in objects) == ("notifier" in http_functions)
    assert "Namespace/screener" not in objects
    for key, o in objects.items():
        assert o["metadata"]["namespace"] == "prod", key
        for container in o.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            assert container["image"] == "registry.example/screener:9.9.9", key
            for env in container.get("env", []):
                if "valueFrom" in env:
                    assert env["valueFrom"]["secretKeyRef"]["name"] == "prod-secrets", key
    for name in workers:
        spec = objects[f"ScaledObject/{name}"]["spec"]
        assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (2, 7)
        assert spec["triggers"][0]["metadata"]["natsServerMonitoringEndpoint"] == "nats.prod:8222"
    assert objects["ConfigMap/screener-config"]["data"]["SCREENER_SYMBOLS"] == "BTCUSDT"
    annotations = objects["Service/gateway"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["autoscaling.knative.dev/min-scale"] == "2"


def test_app_module_reads_the_same_base_files_as_the_kustomize_base() -> None:
    main = (TERRAFORM / "modules" / "screener" / "main.tf").read_text()
    match = re.search(r'for f in \[([^\]]*)\] : "\$\{var\.manifests_dir\}/deploy/base/', main)
    assert match is not None
    terraform_files = {f"{n.strip().strip(chr(34))}.yaml" for n in match.group(1).split(",")}
    with (REPO / "deploy" / "base" / "kustomization.yaml").open() as handle:
        kustomize_files = set(yaml.safe_load(handle)["resources"])
    # The Namespace is created with the Secret before Terraform runs (docs/deploy.md).
    assert terraform_files == kustomize_files - {"namespace.yaml"}


def test_the_example_variables_are_root_variables() -> None:
    with (TERRAFORM / "terraform.tfvars.example").open() as handle:
        example = hcl2.load(handle)
    assert set(example) - {"__comments__"} <= set(MODULES[TERRAFORM].variables)
    assert "image" in example
