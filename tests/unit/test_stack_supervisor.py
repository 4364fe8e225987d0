"""The supervisor of ``screener up``: a taken port is final, and every child's log ends saying it stopped."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from screener.config import load_settings
from screener.ports import EXIT_PORT_IN_USE
from screener.stack import Child, Stack


def _stack(tmp_path: Path) -> Stack:
    args = argparse.Namespace(port=None, data=None, speed=None, source=None)
    return Stack(load_settings({}, data_dir=tmp_path), args)


def _child(tmp_path: Path, name: str, code: str) -> Child:
    return Child(name, [sys.executable, "-c", code], {}, tmp_path / f"{name}.log")


async def test_a_child_that_cannot_listen_is_not_restarted_and_stops_the_stack(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    line = "screener gateway: port 8080 on 127.0.0.1 (the gateway) is already in use by another program"
    child = _child(tmp_path, "gateway", f"import sys; print({line!r}, file=sys.stderr); sys.exit({EXIT_PORT_IN_USE})")
    stack.children.append(child)
    async with asyncio.timeout(20):
        await stack.supervise(child)
    assert child.restarts == 0
    assert stack.failure is not None and "port 8080" in stack.failure and "already in use" in stack.failure
    assert stack._stopping.is_set()


async def test_every_child_log_ends_with_a_stopped_line(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    stack.children += [
        _child(tmp_path, "calculator", "import time; print('working', flush=True); time.sleep(60)"),
        _child(tmp_path, "gateway", "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *_: sys.exit(0));"
               " print('serving', flush=True); time.sleep(60)"),
    ]  # fmt: skip
    supervisors = [asyncio.create_task(stack.supervise(c)) for c in stack.children]
    await asyncio.sleep(1.0)
    await stack.stop_children(grace=10)
    await asyncio.gather(*supervisors)
    for child in stack.children:
        last = child.log_path.read_text().splitlines()[-1]
        assert f"screener up: {child.name} stopped (exit status" in last, last
    assert stack.children[1].log_path.read_text().splitlines()[-1].endswith("stopped (exit status 0)")
