"""Alerts reach the sockets in passes: an alert arriving during a pass joins it for the sockets still ahead."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

import gateway.fanout
from gateway.context import GATEWAY
from tests.gateway.helpers import make_alert

Client = TestClient[web.Request, web.Application]
TIMEOUT = 5.0


class RecordingTransport(asyncio.Transport):
    """The socket's real transport, with each ``write`` call's bytes noted."""

    def __init__(self, transport: asyncio.Transport | None) -> None:
        super().__init__()
        assert transport is not None
        self._transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))
        self._transport.write(data)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size()


async def test_an_alert_arriving_mid_pass_joins_it_for_the_sockets_still_ahead(gw: Client, monkeypatch: Any) -> None:
    monkeypatch.setattr(gateway.fanout, "PASS_CHUNK", 1)  # a look at the event loop after every socket
    sockets = [await gw.ws_connect("/ws/alerts") for _ in range(4)]
    hub = gw.app[GATEWAY].hub
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while len(hub.clients) < 4:
        assert asyncio.get_running_loop().time() < deadline, "4 sockets never registered"
        await asyncio.sleep(0.01)
    recorders = []
    for client in hub.clients:
        client.transport = recorder = RecordingTransport(client.transport)
        recorders.append(recorder)
    first, second = make_alert("BTCUSDT"), make_alert("ETHUSDT")

    hub.broadcast_alert(first)
    await asyncio.sleep(0)  # the pass writes to one socket, then looks at the loop
    assert sorted(len(r.writes) for r in recorders) == [0, 0, 0, 1]
    hub.broadcast_alert(second)

    for ws in sockets:
        got = [json.loads((await ws.receive(timeout=TIMEOUT)).data)["id"] for _ in range(2)]
        assert got == [first.id, second.id]
    # The socket written before the second alert came gets it in the next pass; the three still ahead
    # got both alerts in one write.
    assert sorted(len(r.writes) for r in recorders) == [1, 1, 1, 2]
    for ws in sockets:
        await ws.close()


async def test_alerts_every_socket_was_handed_are_not_kept(gw: Client) -> None:
    hub = gw.app[GATEWAY].hub
    hub.broadcast_alert(make_alert("SOLUSDT"))  # no socket at all
    ws = await gw.ws_connect("/ws/alerts")
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while not hub.clients:
        assert asyncio.get_running_loop().time() < deadline, "the socket never registered"
        await asyncio.sleep(0.01)
    for offset in range(3):
        hub.broadcast_alert(make_alert("BTCUSDT", minute=make_alert().minute + 60_000 * offset))
    assert [json.loads((await ws.receive(timeout=TIMEOUT)).data)["symbol"] for _ in range(3)] == ["BTCUSDT"] * 3
    if hub._fan_out is not None:
        await asyncio.wait_for(hub._fan_out, TIMEOUT)
    assert not hub._alerts, "alerts every socket has are dropped"
    await ws.close()
