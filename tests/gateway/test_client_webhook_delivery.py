"""Webhooks made through the client's API are delivered by the real notifier, in each type's format.

The gateway writes the rows (client bodies), the notifier reads them from the same PostgreSQL and
posts to a real local receiver; a scope ``watchlist`` webhook only gets its user's watchlist.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from functions.notifier.formats import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
from functions.notifier.function import Notifier
from screener.config import load_settings
from screener.events.envelope import make_event
from screener.events.models import Alert
from screener.names import EVENT_SOURCE_RULES, TYPE_ALERT_TRIGGERED
from screener.runtime.function import Delivery
from tests.fakes.webhook_receivers import RECEIVER_ALLOW, WebhookReceiver, running_receiver
from tests.gateway.helpers import auth, make_alert

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    """Yield a running local webhook receiver."""
    async with running_receiver() as running:
        yield running


@pytest.fixture
async def notifier(pool: asyncpg.Pool) -> AsyncIterator[Notifier]:
    """Yield a started notifier on the gateway's database."""
    async with aiohttp.ClientSession() as session:
        started = Notifier(
            load_settings({}, outbound_allow=RECEIVER_ALLOW), pool=pool, session=session, close_grace_seconds=0.0
        )
        await started.start()
        yield started
        await started.close()


async def _deliver(notifier: Notifier, *alerts: Alert) -> None:
    batch = []
    for alert in alerts:
        event = make_event(
            event_type=TYPE_ALERT_TRIGGERED,
            source=EVENT_SOURCE_RULES,
            event_id=alert.id,
            subject=alert.symbol,
            data=alert,
        )
        batch.append(Delivery(event, notifier.parse(event)))
    await notifier.handle(batch)
    await notifier.wait_idle()


async def _create(gw: Client, user: str, **body: object) -> str:
    response = await gw.post(
        "/api/webhooks", json={"scope": "all", "is_enabled": True, "config": {}, **body}, headers=auth(user)
    )
    assert response.status == 201, await response.text()
    return str((await response.json())["id"])


async def test_each_webhook_type_gets_the_alert_in_its_format(
    gw: Client, notifier: Notifier, receiver: WebhookReceiver
) -> None:
    await _create(gw, "alice", name="d", webhook_type="discord", webhook_url=receiver.url("/discord"))
    telegram_url = receiver.url("/bot42:XYZ/sendMessage") + "?chat_id=12345"
    await _create(gw, "alice", name="t", webhook_type="telegram", webhook_url=telegram_url)
    await _create(gw, "alice", name="s", webhook_type="slack", webhook_url=receiver.url("/slack"))
    await _create(gw, "alice", name="h", webhook_type="http", webhook_url=receiver.url("/http"), secret="k3y")
    alert = make_alert("BTCUSDT", "futures_top_hunter")
    await _deliver(notifier, alert)

    (discord,) = receiver.received("/discord")
    assert discord.json()["embeds"][0]["title"] == "BTCUSDT · Top Raid"  # the rule's display name
    (telegram,) = receiver.received("/bot42:XYZ/sendMessage")
    assert telegram.json()["chat_id"] == "12345" and "BTCUSDT" in telegram.json()["text"]
    (slack,) = receiver.received("/slack")
    payload = slack.json()
    assert "BTCUSDT" in payload["text"] and payload["blocks"][0]["type"] == "section"
    assert payload["blocks"][0]["text"]["type"] == "mrkdwn" and alert.id in payload["blocks"][1]["elements"][0]["text"]
    (signed,) = receiver.received("/http")
    assert signed.json()["id"] == alert.id and signed.json()["symbol"] == "BTCUSDT"
    assert verify_signature(
        "k3y", signed.body, signed.headers[SIGNATURE_HEADER], signed.headers[TIMESTAMP_HEADER], now=time.time()
    )


async def test_a_watchlist_webhook_gets_only_its_users_watchlist(
    gw: Client, notifier: Notifier, receiver: WebhookReceiver
) -> None:
    await _create(gw, "alice", name="w", webhook_type="http", webhook_url=receiver.url("/alice-w"), scope="watchlist")
    await _create(gw, "alice", name="a", webhook_type="http", webhook_url=receiver.url("/alice-all"))
    await _create(gw, "bob", name="w", webhook_type="http", webhook_url=receiver.url("/bob-w"), scope="watchlist")
    assert (await gw.post("/api/watchlist", json={"symbol": "BTC"}, headers=auth("alice"))).status == 201
    assert (await gw.post("/api/watchlist", json={"symbol": "sol"}, headers=auth("alice"))).status == 201
    assert (await gw.post("/api/watchlist", json={"symbol": "ETH"}, headers=auth("bob"))).status == 201
    btc, eth, sol = (make_alert(s, "futures_top_hunter") for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT"))
    await _deliver(notifier, btc, eth, sol)

    def symbols(path: str) -> list[str]:
        return sorted(r.json()["symbol"] for r in receiver.received(path))

    assert symbols("/alice-w") == ["BTCUSDT", "SOLUSDT"]  # BTC matches BTCUSDT; entries match case-insensitively
    assert symbols("/alice-all") == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    assert symbols("/bob-w") == ["ETHUSDT"]  # bob's watchlist, not alice's


async def test_a_switched_off_webhook_gets_nothing(gw: Client, notifier: Notifier, receiver: WebhookReceiver) -> None:
    hook = await _create(gw, "alice", name="off", webhook_type="discord", webhook_url=receiver.url("/off"))
    toggled = await gw.patch(f"/api/webhooks/{hook}/toggle", json={"enabled": False}, headers=auth("alice"))
    assert toggled.status == 200
    await _deliver(notifier, make_alert("BTCUSDT", "futures_top_hunter"))
    assert receiver.received("/off") == []
