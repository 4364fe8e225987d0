"""A taken port is found before anything starts, and the message says how to choose another."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from screener.embedded.servers import free_port
from screener.ports import gateway_port, is_free, taken

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def held_port() -> Iterator[int]:
    """Yield a port another program (this socket) listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_a_listening_port_is_taken_and_a_closed_one_is_free(held_port: int) -> None:
    assert not is_free("127.0.0.1", held_port)
    assert is_free("127.0.0.1", free_port())
    assert is_free("127.0.0.1", 0)


def test_taken_message_names_the_port_and_the_way_to_change_it(held_port: int) -> None:
    [port] = taken([gateway_port("127.0.0.1", held_port), gateway_port("127.0.0.1", free_port())])
    message = port.taken_message()
    assert f"port {held_port} on 127.0.0.1 (the gateway) is already in use" in message
    assert "--port" in message and "SCREENER_GATEWAY_PORT" in message


def test_screener_up_on_a_taken_port_exits_with_one_line_and_never_says_up(held_port: int, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCREENER_")}
    env["SCREENER_DATA_DIR"] = str(tmp_path / "state")
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "screener.cli", "up", "--port", str(held_port)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "screener is up" not in output
    assert f"port {held_port} on 127.0.0.1 (the gateway) is already in use" in result.stderr
    assert "--port" in result.stderr
    assert time.monotonic() - started < 30  # nothing was started before the check
    assert not (tmp_path / "state" / "postgres").exists()
