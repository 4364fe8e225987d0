"""Per-socket budgets: message rate, filters of known names only, one resume, replies that stay small."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp import WSMsgType, WSServerHandshakeError, web
from aiohttp.test_utils import TestClient

from gateway.ws import MESSAGE_BURST
from screener.events.models import AlertAudience
from state.metrics_store import SYMBOLS_KEY
from tests.gateway.conftest import GatewayFactory
from tests.gateway.helpers import BASE_MINUTE, insert_alerts, make_alert, token

Client = TestClient[web.Request, web.Application]
TRACKED = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
# The headers of a WebSocket handshake, to read a refusal's HTTP answer with a plain GET.
_UPGRADE = {
    "Connection": "Upgrade",
    "Upgrade": "websocket",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}


@pytest.fixture
async def tracked(redis_client: aioredis.Redis) -> None:
    """Make the screener track a few symbols (as the calculator's snapshots would)."""
    await redis_client.sadd(SYMBOLS_KEY, *TRACKED)


async def _v2(gw: Client, query: str = "") -> Any:
    ws = await gw.ws_connect(f"/ws/alerts?protocol=2{query}")
    hello = await ws.receive_json(timeout=5)
    assert hello["type"] == "hello"
    return ws


async def test_a_message_flood_closes_the_socket_with_policy_violation(gw: Client) -> None:
    ws = await _v2(gw)
    for i in range(MESSAGE_BURST * 5):
        await ws.send_str(json.dumps({"type": "ping", "id": i}))
    pongs = 0
    while True:
        msg = await ws.receive(timeout=5)
        if msg.type != WSMsgType.TEXT:
            break
        pongs += 1
    assert msg.type == WSMsgType.CLOSE and ws.close_code == 1008
    assert pongs <= MESSAGE_BURST


async def test_filters_take_only_symbols_the_screener_tracks(gw: Client, tracked: None) -> None:
    ws = await _v2(gw)
    await ws.send_json({"type": "subscribe", "symbols": ["BTCUSDT", "NOPEUSDT"]})
    reply = await ws.receive_json(timeout=5)
    assert reply["type"] == "error" and "NOPEUSDT" in reply["error"]["message"]
    await ws.send_json({"type": "subscribe", "rule_types": ["no_such_rule"]})
    assert (await ws.receive_json(timeout=5))["type"] == "error"
    await ws.send_json({"type": "subscribe", "symbols": list(TRACKED)})
    reply = await ws.receive_json(timeout=5)
    assert reply["type"] == "subscribed" and reply["subscription"]["symbols"] == len(TRACKED)
    await ws.close()


async def test_replies_do_not_grow_with_the_filter_set(gw: Client, tracked: None) -> None:
    ws = await _v2(gw)
    sizes = []
    for symbol in TRACKED:
        await ws.send_json({"type": "subscribe", "symbols": [symbol]})
        msg = await ws.receive(timeout=5)
        sizes.append(len(msg.data))
    assert len(set(sizes)) == 1, sizes  # the same size whatever the filters already hold
    await ws.close()


async def test_one_resume_per_connection(gw: Client, pool: asyncpg.Pool) -> None:
    history = [make_alert("BTCUSDT", minute=BASE_MINUTE + i * 60_000) for i in range(2)]
    async with pool.acquire() as conn:
        await insert_alerts(conn, history)
    ws = await _v2(gw)
    await ws.send_json({"type": "resume", "last_alert_id": history[0].id})
    assert (await ws.receive_json(timeout=5))["data"]["id"] == history[1].id
    assert (await ws.receive_json(timeout=5))["type"] == "resumed"
    for _ in range(3):
        await ws.send_json({"type": "resume", "last_alert_id": history[0].id})
        reply = await ws.receive_json(timeout=5)
        assert reply["type"] == "error" and "resume" in reply["error"]["message"]
    await ws.close()


async def test_resume_does_not_tell_whether_someone_elses_alert_exists(gw: Client, pool: asyncpg.Pool) -> None:
    private = make_alert("BTCUSDT", "custom_abc", audience=AlertAudience(public=False, users=["bob"], owner="bob"))
    async with pool.acquire() as conn:
        await insert_alerts(conn, [private])
    replies = []
    for alert_id in (private.id, "00000000-0000-0000-0000-000000000000"):
        ws = await _v2(gw, f"&token={token('eve')}")
        await ws.send_json({"type": "resume", "last_alert_id": alert_id})
        reply = await ws.receive_json(timeout=5)
        replies.append({k: v for k, v in reply.items() if k != "last_alert_id"})
        await ws.close()
    assert replies[0] == replies[1] and replies[0]["complete"] is False


async def test_deeply_nested_frames_are_refused_cheaply_and_the_socket_lives_on(gw: Client) -> None:
    ws = await _v2(gw)
    await ws.send_str("[" * 7000 + "]" * 7000)
    reply = await ws.receive_json(timeout=5)
    assert reply["type"] == "error" and "nested" in reply["error"]["message"]
    await ws.send_str('{"type": "ping", "x": ' + "[" * 50 + "]" * 50 + "}")
    assert (await ws.receive_json(timeout=5))["type"] == "error"
    await ws.send_json({"type": "ping"})
    assert await ws.receive_json(timeout=5) == {"type": "pong"}
    await ws.close()


async def test_open_connections_are_capped_per_ip_and_per_user(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(ws_max_connections_per_client=3)
    anonymous = [await _v2(gw) for _ in range(3)]
    refused = await gw.get("/ws/alerts", headers=_UPGRADE)
    body = await refused.json()
    assert refused.status == 429 and body["code"] == "too_many_connections", body
    # A user's connections are counted for the user, apart from the IP's anonymous ones.
    users = [await _v2(gw, f"&token={token('capped')}") for _ in range(3)]
    with pytest.raises(WSServerHandshakeError) as over:
        await gw.ws_connect(f"/ws/alerts?token={token('capped')}")
    assert over.value.status == 429
    # A closed connection frees its place at once.
    await anonymous[0].close()
    replacement = await _v2(gw)
    for ws in [*anonymous[1:], *users, replacement]:
        await ws.close()
