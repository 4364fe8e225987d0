"""The WebSocket fan-out: raw mode, protocol v2, resume, per-user routing, slow clients, shutdown."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
from typing import Any

import aiohttp
import asyncpg
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient
from nats.aio.client import Client as NATS
from redis.asyncio import Redis

from gateway.context import GATEWAY
from screener.events.envelope import make_event, nats_subject
from screener.events.models import MINUTE_MS, AlertAudience, MetricsSnapshot, TimeframeMetrics
from screener.events.nats_binding import to_binary
from screener.names import EVENT_SOURCE_CALCULATOR, TYPE_METRICS_COMPUTED
from state.metrics_store import SYMBOLS_KEY
from tests.gateway.conftest import GatewayFactory
from tests.gateway.helpers import BASE_MINUTE, insert_alerts, make_alert, publish_alert, token

Client = TestClient[web.Request, web.Application]
WS = aiohttp.ClientWebSocketResponse
TIMEOUT = 5.0


async def wait_for(condition: Any, what: str) -> None:
    """Poll ``condition`` (cheap, in-process state) until true."""
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def connected(gw: Client, count: int) -> None:
    """Wait until the gateway has registered ``count`` WebSocket clients."""
    hub = gw.app[GATEWAY].hub
    await wait_for(lambda: len(hub.clients) >= count, f"{count} clients")


async def next_json(ws: WS) -> dict[str, Any]:
    msg = await ws.receive(timeout=TIMEOUT)
    assert msg.type == WSMsgType.TEXT, msg
    data = json.loads(msg.data)
    assert isinstance(data, dict)
    return data


async def test_raw_mode_frames_are_exactly_alert_objects(gw: Client, nats_client: NATS) -> None:
    ws = await gw.ws_connect("/ws/alerts")
    await connected(gw, 1)
    await ws.send_str(json.dumps({"type": "ping"}))  # the web client's keep-alive: never answered
    await ws.send_str("not json at all")
    await ws.send_bytes(b"\x00\x01")
    alert = make_alert()
    await publish_alert(nats_client, alert)
    assert await next_json(ws) == alert.public_view()
    await ws.close()


async def test_v2_hello_ping_and_subscribe_filters(gw: Client, nats_client: NATS, redis_client: Redis) -> None:
    await redis_client.sadd(SYMBOLS_KEY, "BTCUSDT", "ETHUSDT")  # a filter names only tracked symbols
    ws = await gw.ws_connect("/ws/alerts?protocol=2")
    hello = await next_json(ws)
    assert hello["type"] == "hello" and hello["protocol"] == 2
    await ws.send_json({"type": "ping", "id": 7})
    assert await next_json(ws) == {"type": "pong", "id": 7}
    await ws.send_json({"type": "subscribe", "symbols": ["ethusdt"], "rule_types": ["futures_pioneer_bull"]})
    subscribed = await next_json(ws)
    assert subscribed["changed"] == {
        "action": "subscribe",
        "symbols": ["ETHUSDT"],
        "rule_types": ["futures_pioneer_bull"],
    }
    assert subscribed["subscription"]["symbols"] == 1  # sizes, so a reply never grows with the filters
    await publish_alert(nats_client, make_alert("BTCUSDT"))
    await publish_alert(nats_client, make_alert("ETHUSDT", "futures_top_hunter"))
    wanted = make_alert("ETHUSDT")
    await publish_alert(nats_client, wanted)
    frame = await next_json(ws)
    assert frame == {"type": "alert", "rule_name": "Scout Bull", "data": wanted.public_view()}
    await ws.send_json({"type": "unsubscribe", "symbols": ["ETHUSDT"]})
    assert (await next_json(ws))["subscription"]["symbols"] == 0
    await ws.close()


async def test_first_hello_message_switches_to_protocol_2(gw: Client) -> None:
    ws = await gw.ws_connect("/ws/alerts")
    await ws.send_json({"type": "hello", "protocol": 2})
    assert (await next_json(ws))["type"] == "hello"
    await ws.send_json({"type": "ping"})
    assert await next_json(ws) == {"type": "pong"}
    await ws.close()


async def test_v2_live_metrics_for_the_screener_table(gw: Client, nats_client: NATS) -> None:
    ws = await gw.ws_connect("/ws/alerts?protocol=2")
    await next_json(ws)
    await ws.send_json({"type": "subscribe", "metrics": True, "alerts": False})
    await next_json(ws)
    snapshot = MetricsSnapshot(
        symbol="SOLUSDT",
        minute=BASE_MINUTE,
        timestamp="2026-02-02T02:41:00Z",
        last_price=101.5,
        timeframes={"5m": TimeframeMetrics(price_change=1.25, volume=1e6, coverage=1.0)},
    )
    event = make_event(
        event_type=TYPE_METRICS_COMPUTED,
        source=EVENT_SOURCE_CALCULATOR,
        event_id="metrics:SOLUSDT:1",
        subject="SOLUSDT",
        data=snapshot,
    )
    headers, body = to_binary(event)
    await nats_client.publish(nats_subject(event), body, headers=headers)
    frame = await next_json(ws)
    assert frame["type"] == "metrics"
    assert frame["data"]["symbol"] == "SOLUSDT" and frame["data"]["last_price"] == 101.5
    assert frame["data"]["timeframes"]["5m"]["price_change"] == 1.25
    assert frame["data"]["timeframes"]["1d"]["fibonacci"]["pivot"] is None
    await ws.close()


async def test_resume_replays_missed_alerts_then_goes_live(gw: Client, pool: asyncpg.Pool, nats_client: NATS) -> None:
    history = [make_alert("BTCUSDT", minute=BASE_MINUTE + i * MINUTE_MS) for i in range(4)]
    async with pool.acquire() as conn:
        await insert_alerts(conn, history)
    ws = await gw.ws_connect(f"/ws/alerts?protocol=2&last_alert_id={history[1].id}")
    assert (await next_json(ws))["type"] == "hello"
    replayed = [await next_json(ws), await next_json(ws)]
    assert [f["data"]["id"] for f in replayed] == [history[2].id, history[3].id]
    resumed = await next_json(ws)
    assert resumed == {"type": "resumed", "last_alert_id": history[1].id, "replayed": 2, "complete": True}
    live = make_alert("BTCUSDT", minute=BASE_MINUTE + 10 * MINUTE_MS)
    await publish_alert(nats_client, live)
    assert (await next_json(ws))["data"]["id"] == live.id
    await ws.close()
    fresh = await gw.ws_connect("/ws/alerts?protocol=2")
    await next_json(fresh)
    await fresh.send_json({"type": "resume", "last_alert_id": "00000000-0000-0000-0000-000000000000"})
    unknown = await next_json(fresh)
    assert unknown["type"] == "resumed" and unknown["complete"] is False and "reason" in unknown
    await fresh.close()


async def test_personal_switches_and_audience_route_each_alert(
    gw: Client, nats_client: NATS, pool: asyncpg.Pool
) -> None:
    off = await gw.put(
        "/api/alert-rules/futures_pioneer_bull",
        json={"enabled": False},
        headers={"Authorization": f"Bearer {token('user-1')}"},
    )
    assert off.status == 200
    user1 = await gw.ws_connect(f"/ws/alerts?token={token('user-1')}")
    user2 = await gw.ws_connect("/ws/alerts", headers={"Authorization": f"Bearer {token('user-2')}"})
    anonymous = await gw.ws_connect("/ws/alerts")
    await connected(gw, 3)
    switched_off = make_alert("BTCUSDT", "futures_pioneer_bull")
    own = make_alert("BTCUSDT", "custom_x", audience=AlertAudience(public=False, owner="user-2"))
    default_off = make_alert("BTCUSDT", "futures_whale_detector")
    everyone = make_alert("BTCUSDT", "futures_top_hunter")
    for alert in (switched_off, own, default_off, everyone):
        await publish_alert(nats_client, alert)
    assert (await next_json(user1))["id"] == everyone.id
    assert [(await next_json(user2))["id"] for _ in range(2)] == [switched_off.id, own.id]
    assert (await next_json(user2))["id"] == everyone.id
    assert [(await next_json(anonymous))["id"] for _ in range(2)] == [switched_off.id, everyone.id]
    # A switch written by another replica (straight to the table) arrives through LISTEN/NOTIFY.
    switches = gw.app[GATEWAY].switches
    version = switches.version
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO user_settings (user_id, rules) VALUES ('user-1', '{\"futures_pioneer_bull\": true}') "
            "ON CONFLICT (user_id) DO UPDATE SET rules = EXCLUDED.rules"
        )
    await wait_for(lambda: switches.version > version, "the switches to reload")
    again = make_alert("ETHUSDT", "futures_pioneer_bull")
    await publish_alert(nats_client, again)
    assert (await next_json(user1))["id"] == again.id
    for ws in (user1, user2, anonymous):
        await ws.close()


def _raw_handshake(port: int) -> socket.socket:
    """Open a WebSocket with a tiny receive buffer and never read from it: a stalled client."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws/alerts HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


def _close_code(sock: socket.socket) -> int | None:
    """Read frames until the close frame; return its code."""
    sock.settimeout(TIMEOUT)
    buffer = b""

    def need(n: int) -> bytes:
        nonlocal buffer
        while len(buffer) < n:
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise EOFError
            buffer += chunk
        out, buffer = buffer[:n], buffer[n:]
        return out

    while True:
        head = need(2)
        opcode, length = head[0] & 0x0F, head[1] & 0x7F
        if length == 126:
            length = struct.unpack("!H", need(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", need(8))[0]
        payload = need(length)
        if opcode == 0x8:
            return int(struct.unpack("!H", payload[:2])[0]) if len(payload) >= 2 else None


async def test_a_slow_client_is_closed_with_4008_and_nobody_else_notices(
    make_gateway: GatewayFactory, nats_client: NATS
) -> None:
    gw = await make_gateway(ws_send_queue=16)
    fast = await gw.ws_connect("/ws/alerts")
    assert gw.port is not None
    slow = await asyncio.to_thread(_raw_handshake, gw.port)
    await connected(gw, 2)
    padding = "x" * 4000
    alerts = [make_alert("BTCUSDT", minute=BASE_MINUTE + i * MINUTE_MS, metadata={"pad": padding}) for i in range(1500)]
    received: list[str] = []

    async def read_all() -> None:
        while len(received) < len(alerts):
            received.append((await next_json(fast))["id"])

    reader = asyncio.create_task(read_all())
    for alert in alerts:
        await publish_alert(nats_client, alert)
    await asyncio.wait_for(reader, 30)
    assert received == [a.id for a in alerts]
    registry = gw.app[GATEWAY].registry
    assert sum(registry.slow_closes.values.values()) == 1
    assert await asyncio.to_thread(_close_code, slow) == 4008
    slow.close()
    assert not fast.closed
    await fast.close()


async def test_shutdown_drains_and_closes_with_1001(make_gateway: GatewayFactory, nats_client: NATS) -> None:
    gw = await make_gateway()
    ws = await gw.ws_connect("/ws/alerts")
    await connected(gw, 1)
    alert = make_alert()
    await publish_alert(nats_client, alert)
    assert (await next_json(ws))["id"] == alert.id
    closing = asyncio.create_task(gw.server.close())  # the server shuts down, not the client
    msg = await ws.receive(timeout=TIMEOUT)
    assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING)
    assert ws.close_code == 1001
    await closing


def test_text_frames_use_the_right_length_encoding() -> None:
    from gateway.fanout import text_frame

    assert text_frame("hi") == b"\x81\x02hi"
    medium = text_frame("x" * 300)
    assert medium[:4] == b"\x81\x7e\x01\x2c" and len(medium) == 304
    large = text_frame("y" * 70_000)
    assert large[:2] == b"\x81\x7f" and struct.unpack("!Q", large[2:10])[0] == 70_000


async def test_the_server_pings_at_the_protocol_level(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(ws_heartbeat_seconds=0.3)
    ws = await gw.ws_connect("/ws/alerts", autoping=False)
    msg = await ws.receive(timeout=TIMEOUT)
    assert msg.type == WSMsgType.PING  # a control frame: the raw-mode client still sees no non-alert message
    await ws.pong(msg.data)
    await ws.close()
