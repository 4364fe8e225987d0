"""Connections cost the server a file descriptor each: a client may hold only so many, and only so long idle."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway import server
from tests.gateway.conftest import GatewayFactory

Client = TestClient[web.Request, web.Application]


async def _open(gw: Client) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(gw.host, gw.port)


async def test_a_client_holds_at_most_its_cap_of_connections(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(max_connections_per_client=3)
    held = [await _open(gw) for _ in range(3)]
    reader, writer = await _open(gw)
    answer = await asyncio.wait_for(reader.read(), timeout=5)  # the server answers, then closes
    assert answer.startswith(b"HTTP/1.1 429 ")
    assert b'"code":"too_many_connections"' in answer
    writer.close()
    # The held connections still serve requests, and a closed one frees its place.
    _, first = held.pop()
    first.close()
    await first.wait_closed()
    await asyncio.sleep(0.1)
    assert (await gw.get("/health/live")).status == 200
    for _, writer in held:
        writer.close()


async def test_a_connection_that_never_completes_a_request_head_is_closed(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server, "HEADERS_TIMEOUT_SECONDS", 0.5)
    gw = await make_gateway()
    reader, writer = await _open(gw)
    writer.write(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")  # and then one header line now and then
    with contextlib.suppress(ConnectionError):  # the server's close ends the trickle
        for _ in range(3):
            await asyncio.sleep(0.3)
            writer.write(b"X-Slow: 1\r\n")
            await writer.drain()
    with contextlib.suppress(ConnectionError):
        assert await asyncio.wait_for(reader.read(), timeout=5) == b""  # closed by the server, unanswered
    assert reader.at_eof()
    writer.close()
    # A connection that completes its head in time is served as usual.
    assert (await gw.get("/health/live")).status == 200
