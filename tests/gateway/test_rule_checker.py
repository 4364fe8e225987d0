"""The rule checker's worker process ends with the gateway, even when the gateway is killed outright."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# A gateway in miniature: one check starts the worker; then it prints the worker's pid and waits.
GATEWAY = """
import asyncio, multiprocessing
from functions.rules.ruleset import Rule
from gateway.rule_checker import RuleChecker

async def main():
    checker = RuleChecker()
    assert await checker.check(Rule(rule_type="custom_a", name="a", expression="c5m > 1"), []) is None
    print(*(child.pid for child in multiprocessing.active_children()), flush=True)
    await asyncio.sleep(120)

asyncio.run(main())
"""
GONE_WITHIN_SECONDS = 10.0


def _running(pid: int) -> bool:
    """Return whether ``pid`` is a live process (a zombie waiting for its reaper is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signals are Linux's")
def test_the_worker_ends_when_the_gateway_is_killed_with_sigkill() -> None:
    gateway = subprocess.Popen([sys.executable, "-c", GATEWAY], stdout=subprocess.PIPE, text=True)
    try:
        assert gateway.stdout is not None
        workers = [int(pid) for pid in gateway.stdout.readline().split()]
        assert workers and all(_running(pid) for pid in workers)
    finally:
        gateway.kill()
        gateway.wait()
    deadline = time.monotonic() + GONE_WITHIN_SECONDS
    while any(_running(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [pid for pid in workers if _running(pid)]
    for pid in left:  # don't leave the orphan behind for the next test run
        os.kill(pid, signal.SIGKILL)
    assert left == [], "the rule checker's worker outlived the killed gateway"
