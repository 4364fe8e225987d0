"""The supervisor of ``screener up``: a taken port is final, and every child's log ends saying it stopped."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import nats
import nats.errors
import pytest

from screener.config import load_settings
from screener.embedded.servers import free_port, start_nats
from screener.ports import EXIT_PORT_IN_USE
from screener.stack import Child, Stack, _latest_message


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


async def test_an_embedded_server_killed_is_restarted_on_its_port_with_its_data(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    server = start_nats(tmp_path / "nats")
    stack.servers.append(server)
    supervisor = asyncio.create_task(stack.supervise_servers())
    try:
        nc = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
        js = nc.jetstream()
        await js.add_stream(name="KEPT", subjects=["kept.>"])
        await js.publish("kept.one", b"before the kill")
        server.process.kill()
        async with asyncio.timeout(30):
            while True:  # the client reconnects to the same URL; JetStream kept the stream on disk
                with contextlib.suppress(nats.errors.Error):
                    if stack.server_restarts == 1 and (await js.stream_info("KEPT")).state.messages == 1:
                        break
                await asyncio.sleep(0.2)
        assert server.exited is None
        await nc.close()
    finally:
        stack.request_stop()
        await supervisor
        stack.stop_servers()


def test_children_end_with_their_parent_even_when_it_is_killed(tmp_path: Path) -> None:
    # A parent that starts a long sleeper the way ``screener up`` starts its children, then is SIGKILLed.
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time\n"
            "from screener.embedded.lifetime import terminate_with_parent\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'],\n"
            "                         start_new_session=True, preexec_fn=terminate_with_parent)\n"
            f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
            "time.sleep(120)\n",
        ]
    )
    deadline = time.monotonic() + 20
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, "the parent did not start its child"
        time.sleep(0.05)
    child_pid = int(pid_file.read_text())
    parent.kill()
    parent.wait()
    while _alive(child_pid):
        assert time.monotonic() < deadline, "the child outlived its killed parent"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead: reaped by init once its parent is gone, but it may linger a moment.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    return False


async def test_replay_data_that_is_not_there_stops_up_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for data, said in [(tmp_path / "typo", "not a folder of kline CSV files"), (tmp_path, "no kline files")]:
        args = argparse.Namespace(port=free_port(), data=data, speed=None, source=None)
        stack = Stack(load_settings({}, data_dir=tmp_path / "screener"), args)
        assert await stack.run() == 2
        assert said in capsys.readouterr().err
        assert not stack.servers and not stack.children and not (tmp_path / "screener").exists()


async def test_a_collector_that_finished_its_replay_is_not_restarted(tmp_path: Path) -> None:
    args = argparse.Namespace(port=None, data=None, speed=None, source=None)
    stack = Stack(load_settings({}, data_dir=tmp_path, replay_loop=False), args)
    child = _child(tmp_path, "collector", "print('replay finished')")
    stack.children.append(child)
    async with asyncio.timeout(20):
        await stack.supervise(child)
    assert child.restarts == 0 and stack.failure is None and not stack._stopping.is_set()
    assert child.log_path.read_text().splitlines()[-1].endswith("collector finished its replay; not restarted")


async def test_a_looping_collector_that_exits_cleanly_was_stopped_from_outside_and_is_restarted(
    tmp_path: Path,
) -> None:
    """SIGTERM ends a collector with status 0 too; with the replay looping, only a restart makes sense."""
    stack = _stack(tmp_path)
    marker = tmp_path / "ran-once"
    code = f"import pathlib, time; p = pathlib.Path({str(marker)!r}); (p.exists() and time.sleep(60)); p.touch()"
    child = _child(tmp_path, "collector", code)
    stack.children.append(child)
    supervising = asyncio.create_task(stack.supervise(child))
    try:
        for _ in range(400):  # 20 s at most
            if child.restarts:
                break
            await asyncio.sleep(0.05)
    finally:
        stack.request_stop()
        if child.process is not None and child.process.returncode is None:
            child.process.kill()
        await asyncio.wait_for(supervising, 20)
    assert child.restarts == 1


def test_the_progress_line_of_a_starting_stack_says_what_the_collector_is_doing(tmp_path: Path) -> None:
    log = tmp_path / "collector.log"
    assert _latest_message(log) == "starting"
    log.write_text(
        "x" * 5000 + "\n"
        "2026-12-06 06:07:41,498 INFO marketdata.klines: read 50 of 56 kline files of /data (8 s)\n"
        "2026-12-06 06:07:42 screener up: collector exited with 1; restarting in 1s\n"
    )
    assert _latest_message(log) == "read 50 of 56 kline files of /data (8 s)"
