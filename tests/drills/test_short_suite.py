"""The short fault-drill suite (``bench/drills.py --short``) as a test: every drill equals the clean run.

It starts its own NATS, Redis and PostgreSQL and runs the pipeline's processes, so it takes a few
minutes: deselect it with ``-m "not drills"``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHORT_DRILLS = {"clean", "calculator-kill", "poisoned", "rules-kill", "scale-2"}


@pytest.mark.drills
@pytest.mark.timeout(1200)
def test_the_short_drill_suite_matches_the_clean_run() -> None:
    # A folder of its own, not tmp_path: concurrent pytest sessions rotate pytest's temporary folders
    # away, and this test runs for minutes.
    with tempfile.TemporaryDirectory(prefix="screener-drills-test-") as folder:
        report = Path(folder) / "drills.json"
        done = subprocess.run(
            [sys.executable, "bench/drills.py", "--short", "--work-dir", f"{folder}/work", "--json", str(report)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=1100,
            check=False,
        )
        assert report.exists(), done.stdout[-3000:] + done.stderr[-3000:]
        runs = json.loads(report.read_text())
    assert {run["drill"] for run in runs} == SHORT_DRILLS, done.stdout[-3000:]
    failed = {f"{run['drill']} #{run['run']}": run["problems"] for run in runs if not run["passed"]}
    assert failed == {}, done.stdout[-3000:]
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
