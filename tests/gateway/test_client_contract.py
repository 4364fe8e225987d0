"""The web client's conventions (client.md, decisions 1, 2, 3, 9, 10, 11, 13) against a running gateway.

Real PostgreSQL, Redis and NATS; every request is what the product's web client sends, with an
``Origin`` as a browser adds it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient
from nats.aio.client import Client as NATS

from gateway.ratelimit import RateLimiter
from screener.events.models import MINUTE_MS
from tests.gateway.conftest import GatewayFactory
from tests.gateway.helpers import BASE_MINUTE, auth, insert_alerts, insert_candles, make_alert, publish_alert, token

Client = TestClient[web.Request, web.Application]
ORIGIN = {"Origin": "http://localhost:3000"}
JSON = {"Content-Type": "application/json"}


def assert_error_body(body: object, code: str) -> None:
    """Decision 1: a flat body whose ``error`` is a sentence (a string), never an object."""
    assert isinstance(body, dict), body
    assert set(body) == {"error", "code", "message"}, body
    assert isinstance(body["error"], str) and body["error"], body
    assert isinstance(body["message"], str) and body["message"], body
    assert body["code"] == code, body


async def test_every_kind_of_error_has_the_flat_body_and_cors_headers(gw: Client) -> None:
    cases = [
        (gw.get("/api/nothing-here", headers=ORIGIN), 404, "not_found"),
        (gw.delete("/api/alerts", headers=ORIGIN), 405, "method_not_allowed"),
        (gw.get("/api/alerts", params={"limit": "lots"}, headers=ORIGIN), 400, "invalid_parameter"),
        (gw.get("/api/watchlist", headers=ORIGIN), 401, "unauthorized"),
        (gw.post("/api/watchlist", data=b"{not json", headers={**ORIGIN, **JSON, **auth()}), 400, "invalid_parameter"),
        (gw.post("/api/webhooks", data=b"x" * 70_000, headers={**ORIGIN, **JSON, **auth()}), 413, "payload_too_large"),
    ]
    for request, status, code in cases:
        response = await request
        assert response.status == status, (status, await response.text())
        assert_error_body(await response.json(), code)
        assert response.headers["Access-Control-Allow-Origin"] == "*", status


async def test_an_oversized_streamed_body_is_413_with_the_flat_body(gw: Client) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b"y" * 8192

    response = await gw.post("/api/webhooks", data=chunks(), headers={**ORIGIN, **JSON, **auth()})
    assert response.status == 413
    assert_error_body(await response.json(), "payload_too_large")
    assert response.headers["Access-Control-Allow-Origin"] == "*"


async def test_a_bad_json_body_names_the_body_and_says_it_in_a_sentence(gw: Client) -> None:
    response = await gw.post("/api/watchlist", data=b'{"symbol": ', headers={**JSON, **auth()})
    body = await response.json()
    assert response.status == 400 and "'body'" in body["message"] and "JSON" in body["error"]


async def test_preflights_allow_the_clients_methods_and_headers_on_any_path(gw: Client) -> None:
    for path, method in (("/api/webhooks/abc/toggle", "PATCH"), ("/api/watchlist", "DELETE"), ("/nowhere", "GET")):
        response = await gw.options(
            path,
            headers={
                **ORIGIN,
                "Access-Control-Request-Method": method,
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        assert response.status == 204, path
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        allowed = {m.strip() for m in response.headers["Access-Control-Allow-Methods"].split(",")}
        assert allowed == {"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
        assert response.headers["Access-Control-Allow-Headers"] == "Authorization, Content-Type"
        assert "Access-Control-Allow-Credentials" not in response.headers


async def test_cors_origins_narrow_the_allowed_origins(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(cors_origins=["http://localhost:3000"])
    allowed = await gw.get("/api/health", headers=ORIGIN)
    assert allowed.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert "Origin" in allowed.headers.getall("Vary")
    other = await gw.get("/api/health", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    refused = await gw.options(
        "/api/alerts", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
    )
    assert refused.status == 403
    assert_error_body(await refused.json(), "origin_not_allowed")


async def test_alert_history_clamps_limit_and_reads_the_clients_since(gw: Client, pool: asyncpg.Pool) -> None:
    alerts = [make_alert("BTCUSDT", "futures_pioneer_bull", BASE_MINUTE + i * MINUTE_MS) for i in range(3)]
    async with pool.acquire() as conn:
        await insert_alerts(conn, alerts)
    since = datetime.fromtimestamp(BASE_MINUTE / 1000, tz=UTC) - timedelta(hours=48)
    # What the client sends: limit=2000 and `new Date(...).toISOString()` (milliseconds and Z).
    client_since = since.strftime("%Y-%m-%dT%H:%M:%S.123Z")
    body = await (await gw.get("/api/alerts", params={"limit": "2000", "since": client_since})).json()
    assert [a["id"] for a in body] == [a.id for a in reversed(alerts)]
    later = datetime.fromtimestamp((BASE_MINUTE + 2 * MINUTE_MS) / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    recent = await (await gw.get("/api/alerts", params={"limit": "2000", "since": later})).json()
    # An alert's timestamp is its minute's close: the one of minute BASE+1 closes exactly at `later`.
    assert [a["id"] for a in recent] == [alerts[2].id, alerts[1].id]
    for params, count in ({"limit": "0"}, 1), ({"limit": "-5"}, 1), ({"limit": "999999"}, 3), ({"limit": "2"}, 2):
        response = await gw.get("/api/alerts", params=params)
        assert response.status == 200 and len(await response.json()) == count, params
    for params, name in (({"since": "yesterday"}, "since"), ({"limit": "2k"}, "limit")):
        response = await gw.get("/api/alerts", params=params)
        assert response.status == 400 and repr(name) in (await response.json())["message"]
    for alert in body:
        assert alert["timestamp"].endswith("Z")


async def test_klines_limit_is_clamped(gw: Client, pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await insert_candles(conn, "BTCUSDT", BASE_MINUTE, 3)
    response = await gw.get("/api/klines", params={"symbol": "BTCUSDT", "interval": "1m", "limit": "5000"})
    assert response.status == 200 and len(await response.json()) == 3


async def test_no_secret_configured_serves_tokens_as_anonymous_and_user_endpoints_401(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(jwt_secret=None)
    for path in ("/api/health", "/api/alerts", "/api/alert-rules", "/api/metrics/", "/api/tickers"):
        assert (await gw.get(path, headers=auth())).status == 200, path
    refused = await gw.get("/api/watchlist", headers={**ORIGIN, **auth()})
    assert refused.status == 401 and refused.headers["Access-Control-Allow-Origin"] == "*"
    assert_error_body(await refused.json(), "unauthorized")


async def test_rate_limit_is_per_user_then_per_ip_with_health_and_preflights_exempt(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(rate_limit_per_minute=3)
    for _ in range(3):
        assert (await gw.get("/api/alerts", headers=auth("alice"))).status == 200
    refused = await gw.get("/api/alerts", headers={**ORIGIN, **auth("alice")})
    assert refused.status == 429
    assert_error_body(await refused.json(), "rate_limited")
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["Access-Control-Allow-Origin"] == "*"
    # Another user on the same address has a budget of their own, and so has the anonymous address.
    assert (await gw.get("/api/alerts", headers=auth("bob"))).status == 200
    assert (await gw.get("/api/alerts")).status == 200
    for _ in range(10):
        assert (await gw.get("/api/health", headers=auth("alice"))).status == 200
        assert (await gw.get("/health/ready")).status == 200
        preflight = await gw.options("/api/alerts", headers={**ORIGIN, "Access-Control-Request-Method": "GET"})
        assert preflight.status == 204


async def test_the_window_slides_a_client_gets_no_double_burst_across_a_minute_boundary(
    redis_client: aioredis.Redis,
) -> None:
    now = [1_800_000_059.0]  # one second before a minute boundary
    limiter = RateLimiter(redis_client, 5, clock=lambda: now[0])
    assert all([(await limiter.hit("ip:1.2.3.4")).allowed for _ in range(5)])
    now[0] += 2.0  # a fixed window would start afresh here and admit 5 more
    refused = await limiter.hit("ip:1.2.3.4")
    assert not refused.allowed and refused.retry_after_seconds == 58
    now[0] += 58.0  # the first five have left the window
    assert (await limiter.hit("ip:1.2.3.4")).allowed


async def test_websocket_sends_only_alert_frames_and_ignores_client_pings(gw: Client, nats_client: NATS) -> None:
    ws = await gw.ws_connect(f"/ws/alerts?token={token('user-1')}")
    for _ in range(3):
        await ws.send_json({"type": "ping", "timestamp": 1_770_000_000_000})
    with pytest.raises(asyncio.TimeoutError):
        await ws.receive_json(timeout=0.5)  # nothing answers a ping in the client's mode
    alert = make_alert("ETHUSDT", "futures_top_hunter")
    await publish_alert(nats_client, alert)
    frame = await ws.receive_json(timeout=5)
    assert frame == alert.public_view()
    await ws.close()


async def test_alert_ids_and_timestamps_match_in_history_and_on_the_websocket(
    gw: Client, nats_client: NATS, pool: asyncpg.Pool
) -> None:
    alert = make_alert("SOLUSDT", "futures_pioneer_bull", BASE_MINUTE + 7 * MINUTE_MS)
    ws = await gw.ws_connect("/ws/alerts?token=not-a-valid-token")
    await publish_alert(nats_client, alert)
    live = await ws.receive_json(timeout=5)
    async with pool.acquire() as conn:
        await insert_alerts(conn, [alert])  # what the rules function does with the same alert
    (stored,) = await (await gw.get("/api/alerts", params={"symbol": "SOLUSDT"})).json()
    assert stored["id"] == live["id"] == alert.id
    assert stored["timestamp"] == live["timestamp"] and live["timestamp"].endswith("Z")
    await ws.close()
