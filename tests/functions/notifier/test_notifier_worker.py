"""The notifier as `screener run notifier` runs it: a JetStream worker on real NATS and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
from nats.js import JetStreamContext

from functions.notifier.function import create
from screener.config import load_settings
from screener.events.envelope import make_event
from screener.names import CONSUMER_NOTIFIER, EVENT_SOURCE_RULES, TYPE_ALERT_TRIGGERED
from screener.runtime.publisher import Publisher
from screener.runtime.worker import Worker
from screener.streams import ensure_consumer, ensure_streams
from tests.fakes.webhook_receivers import RECEIVER_ALLOW, Hang, WebhookReceiver
from tests.functions.notifier.helpers import add_webhook, deliveries, make_alert
from tests.runtime.helpers import running


async def _consumer_drained(js: JetStreamContext) -> None:
    spec = CONSUMER_NOTIFIER
    async with asyncio.timeout(20):
        while True:
            with contextlib.suppress(Exception):
                info = await js.consumer_info(spec.stream.name, spec.durable)
                if info.num_pending == 0 and info.num_ack_pending == 0 and info.delivered.stream_seq >= 1:
                    return
            await asyncio.sleep(0.05)


async def test_alerts_from_the_stream_reach_webhooks_and_a_hanging_one_does_not_hold_the_ack(
    jetstream: JetStreamContext, postgres_dsn: str, pg: asyncpg.Connection, receiver: WebhookReceiver
) -> None:
    receiver.script("/slow", Hang())
    fast = await add_webhook(pg, receiver.url("/fast"), user_id="alice", kind="discord")
    slow = await add_webhook(pg, receiver.url("/slow"), user_id="bob")
    settings = load_settings(
        {}, postgres_dsn=postgres_dsn, ack_wait_seconds=5.0, batch_size=50, outbound_allow=RECEIVER_ALLOW
    )
    alert = make_alert()
    event = make_event(
        event_type=TYPE_ALERT_TRIGGERED, source=EVENT_SOURCE_RULES, event_id=alert.id, subject=alert.symbol, data=alert
    )
    await ensure_streams(jetstream, settings)
    await ensure_consumer(jetstream, CONSUMER_NOTIFIER, settings)
    worker = Worker(create(settings), jetstream, settings, fetch_timeout=0.2)

    async with running(worker):
        await Publisher(jetstream).publish([event])
        await receiver.wait_count("/fast", 1)
        await receiver.wait_count("/slow", 1)
        # The alert is acknowledged while the slow endpoint still holds its request open.
        await _consumer_drained(jetstream)
        log = await deliveries(pg)
        assert log[(slow, alert.id)]["status"] == "pending"
        receiver.release("/slow")

    log = await deliveries(pg)
    assert log[(fast, alert.id)]["status"] == "sent"
    assert log[(slow, alert.id)]["status"] == "sent"
    assert receiver.received("/fast")[0].json()["embeds"][0]["timestamp"] == alert.timestamp
