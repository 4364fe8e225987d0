"""REST endpoints against a real gateway on real PostgreSQL, Redis and NATS."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway import candles
from gateway.precision import fixed
from screener.events.models import MINUTE_MS, AlertAudience
from tests.gateway.helpers import BASE_MINUTE, auth, insert_alerts, insert_candles, make_alert

Client = TestClient[web.Request, web.Application]


async def test_api_health_reports_every_dependency_ok(gw: Client) -> None:
    response = await gw.get("/api/health")
    body = await response.json()
    assert response.status == 200
    assert body["status"] == "ok"
    assert body["postgres"] is True and body["redis"] is True and body["nats"] is True
    assert body["timestamp"].endswith("Z")


async def test_probes_and_prometheus_text(gw: Client) -> None:
    assert (await gw.get("/health/live")).status == 200
    assert (await gw.get("/health/ready")).status == 200
    await gw.get("/api/alerts")
    response = await gw.get("/metrics")
    text = await response.text()
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert 'screener_gateway_http_requests_total{method="GET",route="/api/alerts",status="200"} 1.0' in text
    assert "screener_gateway_ws_connections" in text


async def test_unknown_path_is_a_json_404_without_a_trace(gw: Client) -> None:
    response = await gw.get("/api/nope")
    body = await response.json()
    assert response.status == 404
    assert body["code"] == "not_found"
    assert "Traceback" not in await response.text()


async def test_wrong_method_is_a_json_405(gw: Client) -> None:
    response = await gw.delete("/api/alerts")
    assert response.status == 405
    assert (await response.json())["code"] == "method_not_allowed"


async def test_openapi_describes_every_route(gw: Client) -> None:
    document = await (await gw.get("/api/openapi.json")).json()
    routes = {
        (r.method.lower(), r.resource.canonical)
        for r in gw.app.router.routes()
        if r.resource is not None and r.method != "HEAD" and not r.resource.canonical.startswith("/static")
    }
    described = {(method, path) for path, ops in document["paths"].items() for method in ops}
    assert routes == described
    assert document["openapi"].startswith("3.")


async def test_alert_history_is_an_array_newest_first_with_filters(gw: Client, pool: asyncpg.Pool) -> None:
    alerts = [
        make_alert("BTCUSDT", "futures_pioneer_bull", BASE_MINUTE),
        make_alert("ETHUSDT", "futures_pioneer_bull", BASE_MINUTE + MINUTE_MS),
        make_alert("BTCUSDT", "futures_top_hunter", BASE_MINUTE + 2 * MINUTE_MS),
    ]
    async with pool.acquire() as conn:
        await insert_alerts(conn, alerts)
    body = await (await gw.get("/api/alerts")).json()
    assert [a["id"] for a in body] == [alerts[2].id, alerts[1].id, alerts[0].id]
    assert body[0] == alerts[2].public_view()
    only_btc = await (await gw.get("/api/alerts", params={"symbol": "BTCUSDT"})).json()
    assert {a["symbol"] for a in only_btc} == {"BTCUSDT"} and len(only_btc) == 2
    by_rule = await (await gw.get("/api/alerts", params={"rule_type": "futures_top_hunter"})).json()
    assert [a["id"] for a in by_rule] == [alerts[2].id]
    since = datetime.fromtimestamp((BASE_MINUTE + 2 * MINUTE_MS) / 1000, tz=UTC).isoformat()
    recent = await (await gw.get("/api/alerts", params={"since": since})).json()
    assert [a["id"] for a in recent] == [alerts[1].id, alerts[2].id][::-1][:2] or len(recent) == 2
    limited = await (await gw.get("/api/alerts", params={"limit": "1"})).json()
    assert len(limited) == 1


async def test_alert_history_bad_parameters_are_400s_that_name_them(gw: Client) -> None:
    for params, name in (
        ({"limit": "1.5"}, "limit"),
        ({"limit": "9" * 30}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"since": "yesterday"}, "since"),
        ({"symbol": "BTC/USDT"}, "symbol"),
        ({"rule_type": "x;drop table"}, "rule_type"),
        ({"sybmol": "BTCUSDT"}, "sybmol"),
    ):
        response = await gw.get("/api/alerts", params=params)
        body = await response.json()
        assert response.status == 400, params
        assert body["code"] == "invalid_parameter"
        assert repr(name) in body["message"], body


async def test_owner_alerts_are_visible_only_to_their_owner(gw: Client, pool: asyncpg.Pool) -> None:
    own = make_alert("BTCUSDT", "custom_abc", BASE_MINUTE, audience=AlertAudience(public=False, owner="user-1"))
    public = make_alert("ETHUSDT", "futures_pioneer_bull", BASE_MINUTE)
    async with pool.acquire() as conn:
        await insert_alerts(conn, [own, public])
    anonymous = await (await gw.get("/api/alerts")).json()
    assert [a["id"] for a in anonymous] == [public.id]
    owner = await (await gw.get("/api/alerts", headers=auth("user-1"))).json()
    assert {a["id"] for a in owner} == {own.id, public.id}
    other = await (await gw.get("/api/alerts", headers=auth("user-2"))).json()
    assert [a["id"] for a in other] == [public.id]


async def test_rules_list_shows_defaults_then_the_users_switch(gw: Client) -> None:
    body = await (await gw.get("/api/alert-rules")).json()
    assert body["count"] == len(body["rules"]) == 20
    by_type = {r["rule_type"]: r for r in body["rules"]}
    assert by_type["futures_whale_detector"]["enabled"] is False  # default off
    assert by_type["futures_big_bull_60"]["name"] == "Surge 60 Bull"
    assert by_type["futures_big_bull_60"]["category"] == "original"
    response = await gw.put("/api/alert-rules/futures_big_bull_60", json={"enabled": False}, headers=auth("user-1"))
    assert response.status == 200
    assert await response.json() == {
        "rule_type": "futures_big_bull_60",
        "enabled": False,
        "message": "rule futures_big_bull_60 disabled",
    }
    mine = {
        r["rule_type"]: r for r in (await (await gw.get("/api/alert-rules", headers=auth("user-1"))).json())["rules"]
    }
    assert mine["futures_big_bull_60"]["enabled"] is False
    theirs = {
        r["rule_type"]: r for r in (await (await gw.get("/api/alert-rules", headers=auth("user-2"))).json())["rules"]
    }
    assert theirs["futures_big_bull_60"]["enabled"] is True


async def test_toggle_needs_a_token_a_known_rule_and_a_boolean(gw: Client) -> None:
    assert (await gw.put("/api/alert-rules/futures_big_bull_60", json={"enabled": False})).status == 401
    missing = await gw.put("/api/alert-rules/no_such_rule", json={"enabled": True}, headers=auth())
    assert missing.status == 404
    bad = await gw.put("/api/alert-rules/futures_big_bull_60", json={"enabled": "no"}, headers=auth())
    assert bad.status == 400 and "'enabled'" in (await bad.json())["message"]
    headers = {**auth(), "Content-Type": "application/json"}
    not_json = await gw.put("/api/alert-rules/futures_big_bull_60", data=b"{nope", headers=headers)
    assert not_json.status == 400
    binary = await gw.put("/api/alert-rules/futures_big_bull_60", data=b"\x00", headers=auth())
    assert binary.status == 415


async def test_toggle_fires_the_rules_changed_notification(gw: Client, postgres_dsn: str) -> None:
    received: list[str] = []
    conn = await asyncpg.connect(postgres_dsn)
    try:
        await conn.add_listener("screener_rules_changed", lambda *args: received.append(args[3]))
        response = await gw.put("/api/alert-rules/futures_top_hunter", json={"enabled": False}, headers=auth())
        assert response.status == 200
        await conn.execute("SELECT 1")  # notifications arrive with the next round trip
        assert [json.loads(r) for r in received] == [{"table": "user_settings", "user_id": "user-1"}]
    finally:
        await conn.close()


async def test_custom_rule_create_list_delete(gw: Client) -> None:
    created = await gw.post(
        "/api/alert-rules",
        json={"name": "My breakout", "expression": "c5m > 2 and v5m > 100000", "cooldown": 10},
        headers=auth("user-1"),
    )
    body = await created.json()
    assert created.status == 201, body
    assert body["rule_type"].startswith("custom_") and body["custom"] is True
    assert body["cooldown_seconds"] == 600 and body["enabled"] is True
    mine = (await (await gw.get("/api/alert-rules", headers=auth("user-1"))).json())["rules"]
    assert body["rule_type"] in {r["rule_type"] for r in mine}
    others = (await (await gw.get("/api/alert-rules", headers=auth("user-2"))).json())["rules"]
    assert body["rule_type"] not in {r["rule_type"] for r in others}
    assert (await gw.delete(f"/api/alert-rules/{body['rule_type']}", headers=auth("user-2"))).status == 404
    assert (await gw.delete("/api/alert-rules/futures_big_bull_60", headers=auth("user-1"))).status == 403
    deleted = await gw.delete(f"/api/alert-rules/{body['rule_type']}", headers=auth("user-1"))
    assert deleted.status == 200


async def test_custom_rule_with_a_bad_expression_names_position_and_reason(gw: Client) -> None:
    response = await gw.post("/api/alert-rules", json={"name": "broken", "expression": "c5m > > 2"}, headers=auth())
    body = await response.json()
    assert response.status == 400
    assert body["code"] == "invalid_expression"
    assert "position 6" in body["message"]
    unknown = await gw.post("/api/alert-rules", json={"name": "x", "expression": "c5m > 1", "bogus": 1}, headers=auth())
    assert unknown.status == 400 and "'bogus'" in (await unknown.json())["message"]


async def test_klines_in_binance_format_aggregated(gw: Client, pool: asyncpg.Pool) -> None:
    start = BASE_MINUTE - BASE_MINUTE % (15 * MINUTE_MS)
    async with pool.acquire() as conn:
        rows = await insert_candles(conn, "BTCUSDT", start, 30)
    one = await (await gw.get("/api/klines", params={"symbol": "BTCUSDT", "interval": "1m", "limit": "5"})).json()
    assert len(one) == 5
    assert one[-1][0] == rows[-1]["open_time"]
    assert float(one[-1][4]) == rows[-1]["close"]
    assert isinstance(one[-1][1], str) and one[-1][6] == rows[-1]["open_time"] + MINUTE_MS - 1
    fifteen = await (await gw.get("/api/klines", params={"symbol": "btcusdt", "interval": "15m"})).json()
    assert [k[0] for k in fifteen] == [start, start + 15 * MINUTE_MS]
    first = fifteen[0]
    # Prices at BTCUSDT's tick size (0.1), as Binance spells them.
    assert first[1] == fixed(rows[0]["open"], 1)
    assert first[4] == fixed(rows[14]["close"], 1)
    assert first[2] == fixed(max(r["high"] for r in rows[:15]), 1)
    assert first[3] == fixed(min(r["low"] for r in rows[:15]), 1)
    assert abs(float(first[5]) - sum(r["volume"] for r in rows[:15])) < 1e-9
    assert first[8] == sum(int(r["trades"]) for r in rows[:15])
    ranged = await (
        await gw.get(
            "/api/klines",
            params={"symbol": "BTCUSDT", "interval": "5m", "startTime": str(start + 1), "limit": "2"},
        )
    ).json()
    assert [k[0] for k in ranged] == [start + 5 * MINUTE_MS, start + 10 * MINUTE_MS]
    bad = await gw.get("/api/klines", params={"symbol": "BTCUSDT", "interval": "7m"})
    assert bad.status == 400 and "'interval'" in (await bad.json())["message"]
    assert (await gw.get("/api/klines", params={"interval": "1m"})).status == 400


async def test_tickers_are_24h_windows_of_our_candles(gw: Client, pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        btc = await insert_candles(conn, "BTCUSDT", BASE_MINUTE, 20)
        await insert_candles(conn, "ETHUSDT", BASE_MINUTE, 10, price=2000.0)
    tickers = await (await gw.get("/api/tickers", params={"symbols": "BTCUSDT,ETHUSDT"})).json()
    assert [t["symbol"] for t in tickers] == ["BTCUSDT", "ETHUSDT"]
    t = tickers[0]
    assert float(t["openPrice"]) == btc[0]["open"] and float(t["lastPrice"]) == btc[-1]["close"]
    expected = (btc[-1]["close"] / btc[0]["open"] - 1) * 100
    assert abs(float(t["priceChangePercent"]) - expected) < 1e-9
    assert t["closeTime"] == btc[-1]["open_time"] + MINUTE_MS - 1
    assert t["count"] == sum(int(r["trades"]) for r in btc)
    assert set(t) == {
        "symbol",
        "priceChange",
        "priceChangePercent",
        "weightedAvgPrice",
        "lastPrice",
        "openPrice",
        "highPrice",
        "lowPrice",
        "volume",
        "quoteVolume",
        "openTime",
        "closeTime",
        "count",
    }
    everything = await (await gw.get("/api/tickers")).json()
    assert [t["symbol"] for t in everything] == ["BTCUSDT", "ETHUSDT"]


async def test_any_list_of_tickers_costs_one_aggregate_per_cache_period(
    gw: Client, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with pool.acquire() as conn:
        for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
            await insert_candles(conn, symbol, BASE_MINUTE, 5)
    calls: list[list[str]] = []
    aggregate = candles.tickers

    async def counted(conn: asyncpg.Connection, symbols: list[str]) -> list[dict[str, Any]]:
        calls.append(symbols)
        return await aggregate(conn, symbols)

    monkeypatch.setattr(candles, "tickers", counted)
    # Before, each choice and order of symbols was a cache entry of its own, so a 24 h aggregate each.
    lists = ["BTCUSDT,ETHUSDT", "ETHUSDT,BTCUSDT", "SOLUSDT", "SOLUSDT,BTCUSDT,NOPEUSDT", ""]
    answers = [await (await gw.get("/api/tickers", params={"symbols": q})).json() for q in lists]
    assert len(calls) == 1
    assert [[t["symbol"] for t in answer] for answer in answers] == [
        ["BTCUSDT", "ETHUSDT"],
        ["BTCUSDT", "ETHUSDT"],
        ["SOLUSDT"],
        ["BTCUSDT", "SOLUSDT"],
        ["BTCUSDT", "ETHUSDT", "SOLUSDT"],
    ]


async def test_symbols_have_first_last_minute_and_coverage(gw: Client, pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await insert_candles(conn, "BTCUSDT", BASE_MINUTE, 10)
        await insert_candles(conn, "BTCUSDT", BASE_MINUTE + 20 * MINUTE_MS, 10)
    body = await (await gw.get("/api/symbols")).json()
    assert body[0]["symbol"] == "BTCUSDT"
    assert body[0]["first_minute"] == BASE_MINUTE and body[0]["last_minute"] == BASE_MINUTE + 29 * MINUTE_MS
    assert body[0]["coverage"] == 20 / 30


async def test_settings_need_a_token_and_round_trip(gw: Client) -> None:
    assert (await gw.get("/settings")).status == 401
    assert (await gw.get("/api/settings")).status == 401
    posted = await gw.post(
        "/api/settings",
        json={"rules": {"futures_whale_detector": True}, "preferences": {"theme": "dark"}},
        headers=auth("user-9"),
    )
    assert posted.status == 200, await posted.text()
    body = await (await gw.get("/settings", headers=auth("user-9"))).json()
    assert body["rules"]["futures_whale_detector"] is True
    assert "futures_whale_detector" in body["enabled_rules"]
    assert body["preferences"] == {"theme": "dark"} and body["webhooks"] == []
    bad = await gw.post("/settings", json={"rules": {"nope": True}}, headers=auth("user-9"))
    assert bad.status == 400 and "'rules'" in (await bad.json())["message"]


async def test_webhooks_crud_test_delivery_and_log(gw: Client, pool: asyncpg.Pool) -> None:
    received: list[dict[str, object]] = []

    async def receiver(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=204)

    hook_app = web.Application()
    hook_app.router.add_post("/hook", receiver)
    hook_server = TestClient(__import__("aiohttp.test_utils").test_utils.TestServer(hook_app))
    await hook_server.start_server()
    try:
        url = str(hook_server.make_url("/hook"))
        created = await gw.post(
            "/api/webhooks",
            json={"name": "signed", "webhook_type": "http", "webhook_url": url, "secret": "s3"},
            headers=auth(),
        )
        hook = await created.json()
        assert created.status == 201, hook
        assert hook["has_secret"] is True and "secret" not in hook
        listed = await (await gw.get("/api/webhooks", headers=auth())).json()
        assert [h["id"] for h in listed["webhooks"]] == [hook["id"]]
        assert (await (await gw.get("/api/webhooks", headers=auth("user-2"))).json())["count"] == 0
        tested = await (await gw.post(f"/api/webhooks/{hook['id']}/test", headers=auth())).json()
        assert tested["status"] == "sent" and tested["http_status"] == 204
        assert len(received) == 1
        updated = await gw.put(f"/api/webhooks/{hook['id']}", json={"is_enabled": False}, headers=auth())
        assert (await updated.json())["is_enabled"] is False
        alert_id = uuid.uuid4()
        async with pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO webhook_deliveries (webhook_id, alert_id, status, attempts, http_status) "
                "VALUES ($1::uuid, $2, 'sent', 1, 200)",
                hook["id"],
                alert_id,
            )
        log = await (await gw.get(f"/api/alerts/{alert_id}/deliveries", headers=auth())).json()
        assert log["deliveries"][0]["status"] == "sent" and log["deliveries"][0]["webhook_id"] == hook["id"]
        per_hook = await (await gw.get(f"/api/webhooks/{hook['id']}/deliveries", headers=auth())).json()
        assert per_hook["deliveries"][0]["alert_id"] == str(alert_id)
        assert (await gw.delete(f"/api/webhooks/{hook['id']}", headers=auth("user-2"))).status == 404
        assert (await gw.delete(f"/api/webhooks/{hook['id']}", headers=auth())).status == 200
    finally:
        await hook_server.close()


async def test_webhook_validation_names_the_field(gw: Client) -> None:
    ok = {"name": "n", "webhook_type": "http", "webhook_url": "https://x.example/h"}
    for body, name in (
        ({**ok, "webhook_type": "json"}, "webhook_type"),
        ({**ok, "webhook_url": "ftp://x.example/h"}, "webhook_url"),
        ({**ok, "webhook_url": "https://x.example:70000/h"}, "webhook_url"),
        ({**ok, "webhook_url": "https://x.example:0/h"}, "webhook_url"),
        ({**ok, "webhook_url": "https://x.example/h\r\nX-Evil: 1"}, "webhook_url"),
        ({**ok, "webhook_url": "https://user:pw@x.example/h"}, "webhook_url"),
        ({**ok, "webhook_type": "telegram", "webhook_url": "https://api.telegram.org/botX/sendMessage"}, "webhook_url"),
        ({**ok, "symbols": ["BTC USDT"]}, "symbols"),
        ({**ok, "scope": "friends"}, "scope"),
        ({**ok, "name": ""}, "name"),
        ({**ok, "config": [1]}, "config"),
        ({**ok, "kind": "http"}, "kind"),
    ):
        response = await gw.post("/api/webhooks", json=body, headers=auth())
        answer = await response.json()
        assert response.status == 400, body
        assert repr(name) in answer["message"] and isinstance(answer["error"], str), answer
    assert (await gw.put("/api/webhooks/not-a-uuid", json={"is_enabled": True}, headers=auth())).status == 400


async def test_market_reads_are_cached_briefly_and_computed_once() -> None:
    from gateway.cache import ResponseCache

    now = [0.0]
    calls = 0
    cache = ResponseCache(2.0, clock=lambda: now[0])

    async def render() -> bytes:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return b"[1]"

    first, second = await asyncio.gather(cache.get("k", render), cache.get("k", render))
    assert first.body == second.body == b"[1]" and calls == 1
    now[0] = 1.9
    await cache.get("k", render)
    assert calls == 1
    now[0] = 2.1
    await cache.get("k", render)
    assert calls == 2
