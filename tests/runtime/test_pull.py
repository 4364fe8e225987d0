"""PullFetcher against a real NATS server: batches are handed over as soon as messages are there."""

from __future__ import annotations

import asyncio
import contextlib
import time

import nats
import pytest
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from screener.runtime.publisher import Publisher
from screener.runtime.pull import ConsumerError, PullFetcher
from screener.runtime.worker import Worker
from tests.fakes.echo import Echo, input_event
from tests.runtime.helpers import fast_settings, running

STREAM = "PULLTEST"


@pytest.fixture
async def consumer(nats_client: nats.NATS, jetstream: JetStreamContext) -> PullFetcher:
    """Return a started fetcher on a fresh stream and durable consumer (one waiting request at most)."""
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await jetstream.delete_stream(STREAM)
    await jetstream.add_stream(name=STREAM, subjects=["pulltest.>"])
    config = ConsumerConfig(durable_name="d", ack_policy=AckPolicy.EXPLICIT, max_waiting=1)
    await jetstream.add_consumer(STREAM, config)
    fetcher = PullFetcher(nats_client, STREAM, "d")
    await fetcher.start()
    return fetcher


async def publish(js: JetStreamContext, count: int, delay: float = 0.0) -> None:
    await asyncio.sleep(delay)
    for n in range(count):
        await js.publish("pulltest.x", str(n).encode())


async def test_a_waiting_fetch_returns_what_arrived_without_waiting_for_the_batch_to_fill(
    consumer: PullFetcher, jetstream: JetStreamContext
) -> None:
    later = asyncio.create_task(publish(jetstream, 5, delay=0.3))
    started = time.monotonic()
    messages = await consumer.fetch(1000, 10.0)
    waited = time.monotonic() - started
    await later
    # A lingering pull for 1,000 would have held the messages for the whole 10 s.
    assert 1 <= len(messages) <= 5 and waited < 5.0
    rest = messages + await consumer.fetch(1000, 10.0)
    while len(rest) < 5:
        rest += await consumer.fetch(1000, 1.0)
    assert [m.data for m in rest] == [str(n).encode() for n in range(5)]


async def test_available_messages_come_in_batches_and_an_idle_fetch_returns_empty(
    consumer: PullFetcher, jetstream: JetStreamContext
) -> None:
    await publish(jetstream, 120)
    sizes = [len(await consumer.fetch(50, 5.0)) for _ in range(3)]
    assert sizes == [50, 50, 20]
    started = time.monotonic()
    assert await consumer.fetch(50, 0.3) == []
    assert time.monotonic() - started >= 0.25  # waited for the first message, as asked


async def test_a_refused_request_raises_with_the_reason(consumer: PullFetcher, nats_client: nats.NATS) -> None:
    waiting = asyncio.create_task(consumer.fetch(10, 1.0))
    await asyncio.sleep(0.1)
    second = PullFetcher(nats_client, STREAM, "d")
    await second.start()
    with pytest.raises(ConsumerError, match="409 Exceeded MaxWaiting"):
        await second.fetch(10, 1.0)
    assert await waiting == []


async def test_an_idle_worker_handles_a_burst_at_once_not_after_its_fetch_timeout(
    prepared: JetStreamContext, redis_url: str
) -> None:
    worker = Worker(Echo(redis_url), prepared, fast_settings(batch_size=1000), fetch_timeout=30.0)
    async with running(worker):
        await asyncio.sleep(0.5)  # both loops are now waiting on pull requests of 1,000
        await Publisher(prepared).publish([input_event(n) for n in range(200)])
        async with asyncio.timeout(10):  # far below the 30 s a lingering pull would hold them
            while worker.stats.processed < 200:  # noqa: ASYNC110  (polling the worker's counter)
                await asyncio.sleep(0.02)
