"""What the fan-out spends per event: one serialisation per alert, no reading of unwanted metrics."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient
from nats.aio.client import Client as NATS

from gateway.context import GATEWAY
from gateway.fanout import Hub
from screener.events.envelope import make_event, nats_subject
from screener.events.models import MINUTE_MS, MetricsSnapshot
from screener.events.nats_binding import to_binary
from screener.names import EVENT_SOURCE_CALCULATOR, TYPE_METRICS_COMPUTED
from tests.gateway.helpers import BASE_MINUTE, make_alert, publish_alert

Client = TestClient[web.Request, web.Application]
TIMEOUT = 5.0


async def wait_for(condition: Any, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def publish_metrics(nc: NATS, symbol: str, price: float = 1.0, minute: int = BASE_MINUTE) -> None:
    snapshot = MetricsSnapshot(
        symbol=symbol, minute=minute, timestamp="2026-02-02T00:01:00Z", last_price=price, timeframes={}
    )
    event = make_event(
        event_type=TYPE_METRICS_COMPUTED,
        source=EVENT_SOURCE_CALCULATOR,
        event_id=f"metrics:{symbol}:{minute}",
        subject=symbol,
        data=snapshot,
    )
    headers, body = to_binary(event)
    await nc.publish(nats_subject(event), body, headers=headers)


async def test_each_alert_is_serialised_once_whatever_the_number_of_sockets(
    gw: Client, nats_client: NATS, monkeypatch: Any
) -> None:
    calls: list[str] = []
    original = Hub.alert_frames

    def counting(self: Hub, alert: Any) -> tuple[bytes, bytes]:
        calls.append(alert.id)
        return original(self, alert)

    monkeypatch.setattr(Hub, "alert_frames", counting)
    raw = [await gw.ws_connect("/ws/alerts") for _ in range(6)]
    v2 = [await gw.ws_connect("/ws/alerts?protocol=2") for _ in range(6)]
    hub = gw.app[GATEWAY].hub
    await wait_for(lambda: len(hub.clients) == 12, "12 clients")
    for ws in v2:
        assert json.loads((await ws.receive(timeout=TIMEOUT)).data)["type"] == "hello"
    alerts = [make_alert("BTCUSDT"), make_alert("ETHUSDT")]
    for alert in alerts:
        await publish_alert(nats_client, alert)
    for ws in raw:
        assert [json.loads((await ws.receive(timeout=TIMEOUT)).data)["id"] for _ in alerts] == [a.id for a in alerts]
    for ws in v2:
        got = [json.loads((await ws.receive(timeout=TIMEOUT)).data)["data"]["id"] for _ in alerts]
        assert got == [a.id for a in alerts]
    assert sorted(calls) == sorted(a.id for a in alerts)
    for ws in (*raw, *v2):
        await ws.close()


async def test_metrics_are_read_only_while_a_socket_asks_for_them(
    gw: Client, nats_client: NATS, monkeypatch: Any
) -> None:
    decoded: list[str] = []
    original = Hub._decode_metrics

    def counting(self: Hub, msg: Any) -> MetricsSnapshot | None:
        decoded.append(msg.subject)
        return original(self, msg)

    monkeypatch.setattr(Hub, "_decode_metrics", counting)
    registry = gw.app[GATEWAY].registry
    raw = await gw.ws_connect("/ws/alerts")
    hub = gw.app[GATEWAY].hub
    await wait_for(lambda: len(hub.clients) == 1, "1 client")
    before = registry.metrics_received.values.get((), 0)
    await publish_metrics(nats_client, "BTCUSDT")
    await nats_client.flush()
    await asyncio.sleep(0.1)
    # Nobody wants metrics: the gateway is not even subscribed, so the event never reaches it.
    assert not hub.reads_metrics
    assert registry.metrics_received.values.get((), 0) == before
    watcher = await gw.ws_connect("/ws/alerts?protocol=2")
    assert json.loads((await watcher.receive(timeout=TIMEOUT)).data)["type"] == "hello"
    await watcher.send_str(json.dumps({"type": "subscribe", "metrics": True}))
    assert json.loads((await watcher.receive(timeout=TIMEOUT)).data)["type"] == "subscribed"
    assert hub.reads_metrics
    await publish_metrics(nats_client, "BTCUSDT")
    message = await watcher.receive(timeout=TIMEOUT)
    assert message.type == aiohttp.WSMsgType.TEXT
    assert json.loads(message.data)["type"] == "metrics"
    assert decoded == ["metrics.1m.BTCUSDT"]
    await watcher.send_str(json.dumps({"type": "unsubscribe", "metrics": True}))
    assert json.loads((await watcher.receive(timeout=TIMEOUT)).data)["type"] == "subscribed"
    assert not hub.reads_metrics  # the last watcher stopped asking
    await watcher.send_str(json.dumps({"type": "subscribe", "metrics": True}))
    assert json.loads((await watcher.receive(timeout=TIMEOUT)).data)["type"] == "subscribed"
    assert hub.reads_metrics
    await watcher.close()
    await wait_for(lambda: not hub.reads_metrics, "the metrics subscription dropped with its last watcher")
    await raw.close()


async def test_two_snapshots_of_a_symbol_in_one_flush_each_reach_the_socket(gw: Client, nats_client: NATS) -> None:
    watcher = await gw.ws_connect("/ws/alerts?protocol=2")
    assert json.loads((await watcher.receive(timeout=TIMEOUT)).data)["type"] == "hello"
    await watcher.send_str(json.dumps({"type": "subscribe", "metrics": True}))
    assert json.loads((await watcher.receive(timeout=TIMEOUT)).data)["type"] == "subscribed"
    # Back to back, so they usually share a flush (the case that once sent the first one twice).
    await publish_metrics(nats_client, "BTCUSDT", price=1.0, minute=BASE_MINUTE)
    await publish_metrics(nats_client, "BTCUSDT", price=2.0, minute=BASE_MINUTE + MINUTE_MS)
    prices = [json.loads((await watcher.receive(timeout=TIMEOUT)).data)["data"]["last_price"] for _ in range(2)]
    assert prices == [1.0, 2.0]
    await watcher.close()


async def test_the_metrics_subscription_stays_while_another_socket_still_asks(gw: Client) -> None:
    hub = gw.app[GATEWAY].hub
    watchers = [await gw.ws_connect("/ws/alerts?protocol=2") for _ in range(2)]
    for ws in watchers:
        assert json.loads((await ws.receive(timeout=TIMEOUT)).data)["type"] == "hello"
        await ws.send_str(json.dumps({"type": "subscribe", "metrics": True}))
        assert json.loads((await ws.receive(timeout=TIMEOUT)).data)["type"] == "subscribed"
    await watchers[0].close()
    await wait_for(lambda: len(hub.clients) == 1, "the first watcher gone")
    assert hub.reads_metrics  # the second one still asks
    await watchers[1].send_str(json.dumps({"type": "unsubscribe"}))  # a bare unsubscribe stops everything
    assert json.loads((await watchers[1].receive(timeout=TIMEOUT)).data)["type"] == "subscribed"
    assert not hub.reads_metrics
    await watchers[1].close()
