#!/usr/bin/env python3
"""Bootstrap and run the project with nothing but Python and pip.

    python3 make.py up       # install into .venv if needed, then run the whole screener
    python3 make.py check    # install into .venv if needed, then lint, format check, types and tests
    python3 make.py test     # tests only (pytest arguments may follow)
    python3 make.py bench    # every benchmark script in bench/
    python3 make.py drills   # the fault drills (bench/drills.py; --short: the CI subset, --help: options)

The virtual environment lives in ``.venv``; it is (re)installed when pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"
STAMP = VENV / ".installed"


def _digest() -> str:
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()


def ensure_venv() -> None:
    """Create ``.venv`` and install the project with its dev and load extras, once per pyproject change."""
    if not (BIN / "python").exists():
        print("creating .venv ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    if STAMP.exists() and STAMP.read_text() == _digest():
        return
    print("installing the project into .venv (first run takes a few minutes) ...", flush=True)
    pip = [str(BIN / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
    subprocess.run([*pip, "-q", "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-q", "-e", f"{ROOT}[dev,load]"], check=True)
    STAMP.write_text(_digest())


def run(*command: str) -> int:
    """Run a command from the virtual environment's bin folder; return its exit status."""
    print("$", " ".join(command), flush=True)
    return subprocess.run([str(BIN / command[0]), *command[1:]], cwd=ROOT, check=False).returncode


def check(pytest_args: list[str]) -> int:
    """Run every check; stop at the first that fails."""
    steps = [
        ("ruff", "check", "."),
        ("ruff", "format", "--check", "."),
        ("mypy",),
        ("pytest", *pytest_args),
    ]
    for step in steps:
        status = run(*step)
        if status != 0:
            return status
    return 0


def main(argv: list[str]) -> int:
    """Dispatch the task named in ``argv``."""
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(__doc__)
        return 0
    task, rest = argv[0], argv[1:]
    ensure_venv()
    if task == "up":
        os.execv(str(BIN / "screener"), [str(BIN / "screener"), "up", *rest])
    if task == "check":
        return check(rest)
    if task == "test":
        return run("pytest", *rest)
    if task == "bench":
        status = 0
        for script in sorted((ROOT / "bench").glob("*.py")):
            if script.name == "drills.py":  # not a figure: a suite of its own (`make.py drills`)
                continue
            status |= run("python", str(script.relative_to(ROOT)))
        return status
    if task == "drills":
        return run("python", "bench/drills.py", *rest)
    print(f"unknown task {task!r}; see python3 make.py --help", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
