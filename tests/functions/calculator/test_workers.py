"""Two calculator workers on one consumer emit exactly the metrics of one, through real NATS and Redis."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest
import redis.asyncio as aioredis
from nats.js import JetStreamContext

from functions.calculator.function import Calculator
from screener.config import Settings, load_settings
from screener.events import nats_binding
from screener.events.models import Candle
from screener.names import CONSUMER_CALCULATOR, STREAM_METRICS, STREAMS
from screener.runtime.publisher import Publisher
from screener.runtime.worker import Worker
from screener.streams import ensure_consumer, ensure_streams
from tests.functions.calculator.klines import SET_2026, csv_path, read_candles
from tests.functions.calculator.test_function import candle_event

SYMBOLS = ("ALGOUSDT", "DOTUSDT", "FILUSDT", "LINKUSDT", "LTCUSDT", "NEARUSDT")
MINUTES = 80


def settings() -> Settings:
    """Return settings for small, interleaving batches."""
    return load_settings({}, batch_size=16, worker_concurrency=2, ack_wait_seconds=5.0, max_crashes=50)


@pytest.fixture(scope="module")
def candles(klines_dir: Path) -> list[Candle]:
    """Return MINUTES minutes of six real symbols, minute by minute as the collector publishes them."""
    series = [read_candles(csv_path(klines_dir, SET_2026, s), limit=MINUTES) for s in SYMBOLS]
    return [series[s][m] for m in range(MINUTES) for s in range(len(SYMBOLS))]


@contextlib.asynccontextmanager
async def workers(count: int, js: JetStreamContext, redis_url: str) -> AsyncIterator[list[Worker]]:
    """Run ``count`` calculator workers on the calculator's consumer."""
    clients = [aioredis.from_url(redis_url) for _ in range(count)]
    running = [Worker(Calculator(c), js, settings(), fetch_timeout=0.2) for c in clients]
    tasks = [asyncio.create_task(w.run()) for w in running]
    try:
        yield running
    finally:
        for worker in running:
            worker.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 20)
        for client in clients:
            await client.aclose()


async def metrics_events(js: JetStreamContext, expected: int) -> dict[str, Any]:
    """Wait for ``expected`` metrics events in the stream; return their data by event id."""
    deadline = asyncio.get_running_loop().time() + 120
    while (await js.stream_info(STREAM_METRICS.name)).state.messages < expected:
        assert asyncio.get_running_loop().time() < deadline, "metrics did not all arrive"
        await asyncio.sleep(0.1)
    subscription = await js.pull_subscribe(">", stream=STREAM_METRICS.name)
    found: dict[str, Any] = {}
    while len(found) < expected:
        for msg in await subscription.fetch(200, timeout=5):
            event = nats_binding.from_message(msg.headers, msg.data)
            found[event.get_id()] = event.get_data()
            await msg.ack()
    await subscription.unsubscribe()
    return found


async def run_once(nats_url: str, redis_url: str, count: int, candles: list[Candle]) -> dict[str, Any]:
    """Start from empty streams and Redis; publish the candles; run ``count`` workers; return the metrics."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    try:
        for stream in STREAMS:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(stream.name)
        redis = aioredis.from_url(redis_url)
        await redis.flushdb()
        await redis.aclose()
        await ensure_streams(js, settings())
        await ensure_consumer(js, CONSUMER_CALCULATOR, settings())
        await Publisher(js).publish([candle_event(c) for c in candles])
        async with workers(count, js, redis_url) as running:
            found = await metrics_events(js, len(candles))
        assert sum(w.stats.processed for w in running) >= len(candles)
        if count > 1:
            assert all(w.stats.processed > 0 for w in running), "one worker did all the work"
        return found
    finally:
        await nc.drain()


async def test_two_workers_emit_exactly_the_metrics_of_one(
    nats_url: str, redis_url: str, candles: list[Candle]
) -> None:
    one = await run_once(nats_url, redis_url, 1, candles)
    two = await run_once(nats_url, redis_url, 2, candles)
    assert len(one) == len(candles)
    assert set(two) == set(one)
    different = [event_id for event_id in one if one[event_id] != two[event_id]]
    assert not different, f"{len(different)} metrics differ, e.g. {different[:3]}"
