"""A gateway whose port is taken stops with the port's line instead of crashing into a restart loop."""

from __future__ import annotations

import socket

import pytest

from gateway.app import serve
from gateway.cli import run
from screener.ports import EXIT_PORT_IN_USE, PortInUseError
from tests.gateway.conftest import gateway_settings


async def test_serve_on_a_taken_port_raises_port_in_use(postgres_dsn: str, redis_url: str, nats_url: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = int(holder.getsockname()[1])
        settings = gateway_settings(
            postgres_dsn=postgres_dsn, redis_url=redis_url, nats_url=nats_url, gateway_port=port
        )
        with pytest.raises(PortInUseError) as caught:
            await serve(settings)
    assert caught.value.strerror is not None
    assert f"port {port} on 127.0.0.1 (the gateway) is already in use" in caught.value.strerror
    assert "SCREENER_GATEWAY_PORT" in caught.value.strerror


def test_gateway_command_exits_with_the_port_in_use_status(
    postgres_dsn: str, redis_url: str, nats_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = int(holder.getsockname()[1])
        settings = gateway_settings(postgres_dsn=postgres_dsn, redis_url=redis_url, nats_url=nats_url)
        status = run(argparse.Namespace(host=None, port=port), settings)
    assert status == EXIT_PORT_IN_USE
    assert f"port {port}" in capsys.readouterr().err
