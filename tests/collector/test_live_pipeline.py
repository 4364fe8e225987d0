"""Across random disconnects, 50 symbols and an hour of simulated time end up in candles_1m exactly once.

collector -> JetStream -> recorder worker -> PostgreSQL, against the local Binance server.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from collector.binance.live import LiveCollector, LiveTuning
from collector.clock import last_closed_minute
from collector.emitter import CandleEmitter
from collector.replay.market import ReplayMarket
from functions.recorder.function import Recorder
from screener.config import load_settings
from screener.events.models import MINUTE_MS, Candle
from screener.names import STREAM_CANDLES
from screener.runtime.publisher import Publisher
from screener.runtime.worker import Worker
from screener.streams import ensure_streams
from tests.collector.conftest import FakeFactory, market_clock, until

COLUMNS = (
    "symbol, (extract(epoch from open_time) * 1000)::bigint AS open_time, open, high, low, close, volume, "
    "quote_volume, trades, taker_buy_volume, taker_buy_quote_volume, quote_volume_derived"
)
BACKFILL_MINUTES = 30
HOUR = 60


@pytest.fixture
async def pool(postgres_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(postgres_dsn, min_size=1, max_size=4)
    assert pool is not None
    yield pool
    await pool.close()


async def open_times_in_stream_order(js: JetStreamContext, count: int) -> dict[str, list[int]]:
    """Return each symbol's candle open times in the order the CANDLES stream holds them."""
    config = ConsumerConfig(ack_policy=AckPolicy.NONE)  # read only: no acks, no max_ack_pending stall
    subscription = await js.pull_subscribe("candles.1m.>", durable="order-check", config=config)
    order: dict[str, list[int]] = {}
    seen = 0
    while seen < count:
        for msg in await subscription.fetch(min(1000, count - seen), timeout=10):
            event_id = (msg.headers or {})["ce-id"]  # candle.1m:<SYMBOL>:<open time>
            _, symbol, open_time = event_id.split(":")
            order.setdefault(symbol, []).append(int(open_time))
            seen += 1
    await subscription.unsubscribe()
    return order


async def bars_seeded(pg: asyncpg.Connection, symbols: int) -> bool:
    return bool(await pg.fetchval("SELECT count(DISTINCT (symbol, interval)) FROM bars") == symbols * 6)


async def rows_reach(pg: asyncpg.Connection, expected: int) -> bool:
    return bool(await pg.fetchval("SELECT count(*) FROM candles_1m") >= expected)


@pytest.mark.timeout(240)
async def test_fifty_symbols_for_an_hour_with_random_disconnects_are_recorded_exactly_once(
    market_50: ReplayMarket,
    fake_binance: FakeFactory,
    jetstream: JetStreamContext,
    nats_url: str,
    postgres_dsn: str,
    pool: asyncpg.Pool,
    pg: asyncpg.Connection,
) -> None:
    rng = random.Random(2026)
    clock = market_clock(market_50)
    server = await fake_binance(market_50, clock, ping_interval=0.3)
    server.drop_closed_probability = 0.03  # closed messages that never come
    settings = load_settings(
        {},
        nats_url=nats_url,
        postgres_dsn=postgres_dsn,
        binance_rest_url=server.rest_url,
        binance_ws_url=server.ws_url,
        backfill_minutes=BACKFILL_MINUTES,
        stale_connection_seconds=1.0,
        connection_lifetime_seconds=2.0,
    )
    await ensure_streams(jetstream, settings)
    emitter = CandleEmitter(Publisher(jetstream))
    worker = Worker(Recorder(settings), jetstream, settings, fetch_timeout=0.2)
    worker_task = asyncio.create_task(worker.run())
    tuning = LiveTuning(grace_ms=2_000, sweep_seconds=0.2, backoff_base_seconds=0.05, max_streams_per_connection=20)
    first = last_closed_minute(clock.now_ms()) - (BACKFILL_MINUTES - 1) * MINUTE_MS
    async with aiohttp.ClientSession() as session:
        collector = LiveCollector(settings, emitter, session, clock, pool=pool, tuning=tuning, rng=rng)
        task = asyncio.create_task(collector.run())
        try:
            async with asyncio.timeout(60):
                await collector.ready.wait()
            for minute in range(HOUR):
                await server.advance()
                if rng.random() < 0.15:
                    await server.disconnect(rng.randint(1, 2))
                if minute == 20:
                    await server.send_malformed()
                if minute == 40:
                    server.stall(1)
                await asyncio.sleep(0.05)  # market pacing (simulated time), not synchronisation
            # Let the last minute's grace pass so the sweeper asks REST for any closed message lost.
            clock.set(clock.now_ms() + 3_000)
            last = last_closed_minute(clock.now_ms())
            expected = len(market_50.symbols) * ((last - first) // MINUTE_MS + 1)
            await until(lambda: rows_reach(pg, expected), seconds=60.0)
            await until(lambda: bars_seeded(pg, len(market_50.symbols)), seconds=60.0)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            worker.stop()
            await worker_task

    rows = await pg.fetch(f"SELECT {COLUMNS} FROM candles_1m ORDER BY symbol, open_time")
    stored = [Candle(**dict(row), closed=True) for row in rows]
    truth = [
        server.candle(symbol, t)
        for symbol in sorted(market_50.symbols)
        for t in range(first, last + MINUTE_MS, MINUTE_MS)
    ]
    assert len(stored) == expected == len(market_50.symbols) * (BACKFILL_MINUTES + HOUR)
    assert stored == truth
    # Exactly once all the way: every minute published once, stored once in the stream.
    assert emitter.stats.closed == expected
    assert (await jetstream.stream_info(STREAM_CANDLES.name)).state.messages == expected
    # Each symbol's minutes reached the stream in time order, gaps filled before newer minutes.
    order = await open_times_in_stream_order(jetstream, expected)
    assert {symbol: sorted(times) for symbol, times in order.items()} == order
    # The run really went through what it claims.
    assert collector.stats.disconnects >= 5
    # Whether a connection also lives past its 2 s lifetime here depends on where the random
    # disconnects fall in wall-clock time; rotation losing nothing has its own test (test_live.py).
    assert collector.stats.malformed == server.malformed_sent > 0
    assert server.violations == []
    assert max(c.max_streams for c in server.clients) <= 20
