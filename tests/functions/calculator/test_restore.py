"""Snapshots lost with Redis come back within seconds, bit for bit, with no event published again."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import nats
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient
from nats.js import JetStreamContext

from functions.calculator.function import RESTORE_CHECK_SECONDS, Calculator
from functions.calculator.restore import published_symbols, restore_snapshots
from gateway.app import create_app
from screener.events.models import MINUTE_MS, Candle
from screener.names import CONSUMER_CALCULATOR, STREAM_METRICS
from screener.runtime.publisher import Publisher
from screener.runtime.worker import Worker
from screener.streams import ensure_consumer, ensure_streams
from state.metrics_store import MetricsStore, history_minutes, snapshots_key
from tests.functions.calculator.klines import SET_2026, csv_path, read_candles
from tests.functions.calculator.test_function import candle_event
from tests.functions.calculator.test_workers import MINUTES, SYMBOLS, metrics_events, settings
from tests.gateway.conftest import GatewayTestServer, gateway_settings

# How soon the table must be back: the watch's period and the restore itself (a fraction of a second).
BACK_WITHIN_SECONDS = RESTORE_CHECK_SECONDS + 2.0


@pytest.fixture(scope="module")
def candles(klines_dir: Path) -> list[Candle]:
    """Return MINUTES minutes of six real symbols, minute by minute; the last symbol stops 10 minutes early."""
    series = [read_candles(csv_path(klines_dir, SET_2026, s), limit=MINUTES) for s in SYMBOLS]
    return [
        series[s][m] for m in range(MINUTES) for s in range(len(SYMBOLS)) if s < len(SYMBOLS) - 1 or m < MINUTES - 10
    ]


@contextlib.asynccontextmanager
async def calculator_worker(js: JetStreamContext, redis_url: str) -> AsyncIterator[Worker]:
    """Run one calculator worker (its own Redis client) until the block ends."""
    client = aioredis.from_url(redis_url)
    worker = Worker(Calculator(client), js, settings(), fetch_timeout=0.2)
    task = asyncio.create_task(worker.run())
    try:
        for _ in range(2000):  # ready once started: bound, start() done (its restore included)
            if worker.ready:
                break
            await asyncio.sleep(0.01)
        assert worker.ready, "the worker did not start"
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 20)
        await client.aclose()


async def saved(redis: aioredis.Redis) -> dict[str, tuple[int, bytes]]:
    """Return each tracked symbol's latest closed minute and the bytes saved for it."""
    found = {}
    for symbol in await MetricsStore(redis).tracked_symbols():
        minute = int(await redis.hget(snapshots_key(symbol), "minute"))
        slot = f"m:{minute // MINUTE_MS % history_minutes(symbol)}"
        found[symbol] = (minute, await redis.hget(snapshots_key(symbol), slot))
    return found


async def until_back(redis: aioredis.Redis, symbols: int) -> float:
    """Wait until the store holds ``symbols`` symbols' snapshots again; return how long it took."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while len(await MetricsStore(redis).latest()) < symbols:
        assert loop.time() - started < 30, "the snapshots did not come back"
        await asyncio.sleep(0.02)
    return loop.time() - started


async def table(client: TestClient[web.Request, web.Application]) -> Any:
    """Return the gateway's ``/api/metrics`` body once its one-second response cache has expired."""
    await asyncio.sleep(1.1)
    response = await client.get("/api/metrics")
    assert response.status == 200
    return await response.json()


async def test_snapshots_lost_with_redis_are_restored_bit_for_bit_within_seconds(
    jetstream: JetStreamContext,
    nats_client: nats.NATS,
    redis_url: str,
    redis_client: aioredis.Redis,
    postgres_dsn: str,
    candles: list[Candle],
) -> None:
    js = jetstream
    await ensure_streams(js, settings())
    await ensure_consumer(js, CONSUMER_CALCULATOR, settings())
    await Publisher(js).publish([candle_event(c) for c in candles])
    pool = await asyncpg.create_pool(postgres_dsn, min_size=1, max_size=2)
    app = create_app(gateway_settings(), pool, redis_client, nats_client, metrics_store=MetricsStore(redis_client))
    gateway: TestClient[web.Request, web.Application] = TestClient(GatewayTestServer(app))
    await gateway.start_server()
    try:
        async with calculator_worker(js, redis_url):
            await metrics_events(js, len(candles))
            original = await saved(redis_client)
            shown = await table(gateway)
            published = (await js.stream_info(STREAM_METRICS.name)).state.messages
            assert sorted(original) == sorted(SYMBOLS) == await published_symbols(js)
            assert original[SYMBOLS[-1]][0] == candles[-1].open_time - 10 * MINUTE_MS  # its own last minute
            assert [m["symbol"] for m in shown] == sorted(SYMBOLS)

            # Redis restarts empty under a running calculator; no candle comes.
            await redis_client.flushdb()
            running_back = await until_back(redis_client, len(SYMBOLS))
            assert running_back < BACK_WITHIN_SECONDS
            assert await saved(redis_client) == original
            assert await table(gateway) == shown

        # Redis empty again, then the calculator (re)starts: back as it starts, before any candle.
        await redis_client.flushdb()
        async with calculator_worker(js, redis_url):
            assert await saved(redis_client) == original
            assert await table(gateway) == shown
        # Nothing was published again: the restore only saves.
        assert (await js.stream_info(STREAM_METRICS.name)).state.messages == published
        print(f"snapshots back {running_back:.3f} s after Redis came back empty")
    finally:
        await gateway.close()
        await pool.close()


async def test_nothing_is_restored_where_no_metrics_were_published(
    jetstream: JetStreamContext, redis_url: str, redis_client: aioredis.Redis
) -> None:
    await ensure_streams(jetstream, settings())
    await ensure_consumer(jetstream, CONSUMER_CALCULATOR, settings())
    async with calculator_worker(jetstream, redis_url):
        await asyncio.sleep(RESTORE_CHECK_SECONDS + 0.5)
        assert await MetricsStore(redis_client).tracked_symbols() == []


async def test_an_unreadable_last_metrics_event_is_skipped_not_fatal(
    jetstream: JetStreamContext, redis_client: aioredis.Redis
) -> None:
    await ensure_streams(jetstream, settings())
    await jetstream.publish("metrics.1m.BADUSDT", b"not a metrics payload")
    assert await restore_snapshots(MetricsStore(redis_client), jetstream) == 0
    assert await MetricsStore(redis_client).tracked_symbols() == []
