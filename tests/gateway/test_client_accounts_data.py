"""Watchlist, TV username and webhooks exactly as the web client calls them (client.md, sections 2, 3 and 5).

Each user's data is theirs alone: another user's token never reads, changes or deletes it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.fakes.webhook_receivers import WebhookReceiver, running_receiver, status
from tests.gateway.helpers import auth

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    """Yield a running local webhook receiver."""
    async with running_receiver() as running:
        yield running


async def test_watchlist_add_is_idempotent_verbatim_and_per_user(gw: Client) -> None:
    empty = await gw.get("/api/watchlist", headers=auth("alice"))
    assert empty.status == 200 and await empty.json() == {"symbols": [], "count": 0, "limit": 50}
    for symbol in ("BTC", "1000PEPE", "eth", "BTC"):
        response = await gw.post("/api/watchlist", json={"symbol": symbol}, headers=auth("alice"))
        assert 200 <= response.status < 300, await response.text()
    body = await (await gw.get("/api/watchlist", headers=auth("alice"))).json()
    assert body["symbols"] == ["BTC", "1000PEPE", "eth"] and body["count"] == 3  # verbatim, in order, once
    # bob sees nothing of alice's and cannot remove her entries.
    assert (await (await gw.get("/api/watchlist", headers=auth("bob"))).json())["symbols"] == []
    assert (await gw.delete("/api/watchlist", json={"symbol": "BTC"}, headers=auth("bob"))).status == 200
    assert "BTC" in (await (await gw.get("/api/watchlist", headers=auth("alice"))).json())["symbols"]
    # DELETE carries a JSON body; removing an absent entry is a success too (the client's list can be stale).
    for _ in range(2):
        assert (await gw.delete("/api/watchlist", json={"symbol": "BTC"}, headers=auth("alice"))).status == 200
    assert (await (await gw.get("/api/watchlist", headers=auth("alice"))).json())["symbols"] == ["1000PEPE", "eth"]
    replaced = await gw.put("/api/watchlist", json={"symbols": ["SOL", "SOL", "XRP"]}, headers=auth("alice"))
    assert (await replaced.json())["symbols"] == ["SOL", "XRP"]


async def test_watchlist_holds_at_most_fifty_and_says_so_in_the_clients_words(gw: Client) -> None:
    for i in range(50):
        assert (await gw.post("/api/watchlist", json={"symbol": f"C{i}"}, headers=auth("carol"))).status == 201
    refused = await gw.post("/api/watchlist", json={"symbol": "ONE_MORE"}, headers=auth("carol"))
    assert refused.status == 400
    assert (await refused.json())["error"] == "Watchlist limit of 50 symbols exceeded"
    again = await gw.post("/api/watchlist", json={"symbol": "C7"}, headers=auth("carol"))
    assert again.status == 200  # already there: idempotent even at the limit


async def test_watchlist_refuses_bad_entries_and_anonymous_callers(gw: Client) -> None:
    for body in ({"symbol": ""}, {"symbol": "BT C"}, {"symbol": "X" * 41}, {"symbol": 5}, {"sym": "BTC"}):
        response = await gw.post("/api/watchlist", json=body, headers=auth())
        assert response.status == 400, body
    for call in (gw.get("/api/watchlist"), gw.post("/api/watchlist", json={"symbol": "BTC"})):
        assert (await call).status == 401


async def test_tv_username_is_saved_trimmed_and_per_user(gw: Client) -> None:
    saved = await gw.put("/api/settings/tv-username", json={"tv_username": "  trader_joe  "}, headers=auth("alice"))
    assert saved.status == 200
    assert (await (await gw.get("/api/settings", headers=auth("alice"))).json())["tv_username"] == "trader_joe"
    assert (await (await gw.get("/api/settings", headers=auth("bob"))).json())["tv_username"] is None
    for value in ("", "   ", "has space", 7):
        bad = await gw.put("/api/settings/tv-username", json={"tv_username": value}, headers=auth("alice"))
        assert bad.status == 400 and "tv_username" in (await bad.json())["message"], value
    assert (await gw.put("/api/settings/tv-username", json={"tv_username": "x"})).status == 401


def client_webhook(url: str, **changes: object) -> dict[str, object]:
    """Return the body the client's webhook manager posts."""
    body: dict[str, object] = {
        "name": "My Discord",
        "webhook_type": "discord",
        "webhook_url": url,
        "scope": "all",
        "is_enabled": True,
        "config": {},
    }
    body.update(changes)
    return body


async def test_webhook_lifecycle_in_the_clients_shape(gw: Client) -> None:
    async with running_receiver() as receiver:
        created = await gw.post("/api/webhooks", json=client_webhook(receiver.url("/d")), headers=auth("alice"))
        hook = await created.json()
        assert 200 <= created.status < 300
        read = {"id", "name", "webhook_type", "webhook_url", "scope", "is_enabled", "config"}
        typed = {"user_id", "max_alerts_per_minute", "created_at", "updated_at"}
        assert read | typed <= set(hook)
        assert (hook["name"], hook["webhook_type"], hook["scope"], hook["is_enabled"]) == (
            "My Discord",
            "discord",
            "all",
            True,
        )
        listed = await (await gw.get("/api/webhooks", headers=auth("alice"))).json()
        assert [h["id"] for h in listed["webhooks"]] == [hook["id"]] and listed["limit"] == 10
        assert await (await gw.get(f"/api/webhooks/{hook['id']}", headers=auth("alice"))).json() == hook
        # PUT sends the same fields, is_enabled always true, and gets the full webhook back.
        put = await gw.put(
            f"/api/webhooks/{hook['id']}",
            json=client_webhook(receiver.url("/d2"), name="Renamed", scope="watchlist"),
            headers=auth("alice"),
        )
        updated = await put.json()
        assert put.status == 200 and updated["name"] == "Renamed" and updated["scope"] == "watchlist"
        assert updated["webhook_url"] == receiver.url("/d2") and updated["id"] == hook["id"]
        off = await gw.patch(f"/api/webhooks/{hook['id']}/toggle", json={"enabled": False}, headers=auth("alice"))
        assert off.status == 200 and (await off.json())["is_enabled"] is False
        on = await gw.patch(f"/api/webhooks/{hook['id']}/toggle", json={"enabled": True}, headers=auth("alice"))
        assert (await on.json())["is_enabled"] is True
        tested = await gw.post(f"/api/webhooks/{hook['id']}/test", json={}, headers=auth("alice"))
        assert tested.status == 200 and (await tested.json())["status"] == "sent"
        (sample,) = receiver.received("/d2")
        assert sample.json()["embeds"][0]["title"].startswith("BTCUSDT")
        assert (await gw.delete(f"/api/webhooks/{hook['id']}", headers=auth("alice"))).status == 200
        assert (await gw.get(f"/api/webhooks/{hook['id']}", headers=auth("alice"))).status == 404


async def test_a_failed_test_reports_the_status_code_and_never_the_answer_body(gw: Client) -> None:
    async with running_receiver() as receiver:
        receiver.script("/secret", status(403, b"internal token abc123 leaked"))
        hook = await (
            await gw.post("/api/webhooks", json=client_webhook(receiver.url("/secret")), headers=auth())
        ).json()
        failed = await gw.post(f"/api/webhooks/{hook['id']}/test", json={}, headers=auth())
        text = await failed.text()
        assert failed.status == 502 and "403" in text and "abc123" not in text
        body = await failed.json()
        assert body["code"] == "webhook_test_failed" and isinstance(body["error"], str)


async def test_webhooks_are_capped_at_ten_and_invisible_to_other_users(gw: Client, pool: asyncpg.Pool) -> None:
    ids = []
    for i in range(10):
        created = await gw.post(
            "/api/webhooks", json=client_webhook(f"https://hooks.example/{i}"), headers=auth("dave")
        )
        assert created.status == 201
        ids.append((await created.json())["id"])
    refused = await gw.post("/api/webhooks", json=client_webhook("https://hooks.example/x"), headers=auth("dave"))
    assert refused.status == 400 and "10" in (await refused.json())["error"]
    target = ids[0]
    erin = auth("erin")
    assert (await (await gw.get("/api/webhooks", headers=erin)).json())["count"] == 0
    for response in (
        await gw.get(f"/api/webhooks/{target}", headers=erin),
        await gw.put(f"/api/webhooks/{target}", json={"name": "mine now"}, headers=erin),
        await gw.patch(f"/api/webhooks/{target}/toggle", json={"enabled": False}, headers=erin),
        await gw.post(f"/api/webhooks/{target}/test", json={}, headers=erin),
        await gw.delete(f"/api/webhooks/{target}", headers=erin),
        await gw.get(f"/api/webhooks/{target}/deliveries", headers=erin),
    ):
        assert response.status == 404
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT name, enabled FROM webhooks WHERE id = $1::uuid", target)
    assert (row["name"], row["enabled"]) == ("My Discord", True)
    for call in (gw.get("/api/webhooks"), gw.patch(f"/api/webhooks/{target}/toggle", json={"enabled": False})):
        assert (await call).status == 401


async def test_telegram_takes_the_chat_from_its_bot_api_url(gw: Client, receiver: WebhookReceiver) -> None:
    url = receiver.url("/bot123:ABC/sendMessage") + "?chat_id=-100777"
    created = await gw.post(
        "/api/webhooks", json=client_webhook(url, webhook_type="telegram", name="TG"), headers=auth()
    )
    assert created.status == 201, await created.text()
    hook = await created.json()
    assert hook["webhook_url"] == url
    tested = await gw.post(f"/api/webhooks/{hook['id']}/test", json={}, headers=auth())
    assert tested.status == 200
    (sent,) = receiver.received("/bot123:ABC/sendMessage")
    assert sent.json()["chat_id"] == "-100777" and sent.json()["parse_mode"] == "HTML"


async def test_webhook_changes_are_refused_where_the_url_turns_invalid(gw: Client) -> None:
    hook = await (await gw.post("/api/webhooks", json=client_webhook("https://a.example/h"), headers=auth())).json()
    bad = await gw.put(f"/api/webhooks/{hook['id']}", json={"webhook_url": "javascript:alert(1)"}, headers=auth())
    assert bad.status == 400 and "webhook_url" in (await bad.json())["message"]
    to_telegram = await gw.put(f"/api/webhooks/{hook['id']}", json={"webhook_type": "telegram"}, headers=auth())
    assert to_telegram.status == 400  # its URL carries no chat
