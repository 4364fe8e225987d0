"""The live collector against the local Binance server: limits, rotation, symbol changes, bad frames."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

import aiohttp
import asyncpg
import pytest
from nats.js import JetStreamContext

from collector.bars import SEED_BARS
from collector.binance.connection import KlineConnection
from collector.binance.live import LiveCollector, LiveTuning
from collector.binance.models import BinanceKlineEvent
from collector.clock import SimulatedClock, last_closed_minute
from collector.emitter import CandleEmitter
from collector.replay.market import ReplayMarket
from functions.recorder.store import insert_candles
from marketdata.klines import KlineSeries
from screener.config import Settings, load_settings
from screener.db.partitions import PartitionCache
from screener.events import nats_binding
from screener.events.models import MINUTE_MS, Candle
from screener.names import STREAM_CANDLES, STREAM_DEAD_LETTERS
from screener.runtime.publisher import REASON_HEADER, Publisher
from screener.streams import ensure_streams
from tests.collector.conftest import FakeFactory, market_clock, until
from tests.fakes.binance_server import FakeBinance

FAST = LiveTuning(grace_ms=2_000, sweep_seconds=0.1, backoff_base_seconds=0.05)


@dataclass
class Running:
    collector: LiveCollector
    emitter: CandleEmitter
    server: FakeBinance
    clock: SimulatedClock
    settings: Settings


Starter = Callable[..., Awaitable[Running]]


@pytest.fixture
async def run_collector(
    fake_binance: FakeFactory, jetstream: JetStreamContext, nats_url: str
) -> AsyncIterator[Starter]:
    """Yield a starter of a live collector against a fresh local Binance server; it is stopped after."""
    tasks: list[asyncio.Task[None]] = []
    sessions: list[aiohttp.ClientSession] = []

    async def start(
        market: ReplayMarket,
        *,
        tuning: LiveTuning = FAST,
        server_options: dict[str, object] | None = None,
        **env: object,
    ) -> Running:
        clock = market_clock(market)
        server = await fake_binance(market, clock, **(server_options or {}))
        settings = load_settings(
            {},
            nats_url=nats_url,
            binance_rest_url=server.rest_url,
            binance_ws_url=server.ws_url,
            **{"backfill_minutes": 3, "stale_connection_seconds": 2.0, **env},
        )
        await ensure_streams(jetstream, settings)
        emitter = CandleEmitter(Publisher(jetstream))
        session = aiohttp.ClientSession()
        sessions.append(session)
        collector = LiveCollector(settings, emitter, session, clock, tuning=tuning, rng=random.Random(1))
        tasks.append(asyncio.create_task(collector.run()))
        async with asyncio.timeout(60):
            await collector.ready.wait()
        return Running(collector, emitter, server, clock, settings)

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for session in sessions:
        await session.close()


async def closed_events(js: JetStreamContext) -> list[Candle]:
    """Return every candle stored in the CANDLES stream, in stream order."""
    info = await js.stream_info(STREAM_CANDLES.name)
    out = []
    for seq in range(1, info.state.last_seq + 1):
        msg = await js.get_msg(STREAM_CANDLES.name, seq)
        event = nats_binding.from_message(dict(msg.headers or {}), msg.data or b"")
        out.append(Candle.model_validate(event.get_data()))
    return out


@pytest.mark.timeout(120)
async def test_no_connection_carries_more_than_200_streams(
    series_2026: dict[str, KlineSeries], run_collector: Starter
) -> None:
    market = ReplayMarket(series_2026, virtual_symbols=450)
    running: Running = await run_collector(market, backfill_minutes=1)
    server = running.server
    await until(lambda: sum(len(c.streams) for c in server.live_clients()) == 450)
    assert sorted(c.max_streams for c in server.live_clients()) == [50, 200, 200]
    await server.advance()
    minute = last_closed_minute(running.clock.now_ms())
    await until(lambda: all(running.collector.ledger.is_done(s, minute) for s in market.symbols))
    assert server.violations == []


async def test_control_messages_and_pongs_stay_under_ten_per_second(
    market_50: ReplayMarket, fake_binance: FakeFactory
) -> None:
    clock = market_clock(market_50)
    server = await fake_binance(market_50, clock)
    streams = [f"{s.lower()}@kline_1m" for s in market_50.symbols]
    async with aiohttp.ClientSession() as session:

        def connection(rate: float) -> KlineConnection:
            return KlineConnection(
                session, server.ws_url, clock, on_kline=lambda _: None, on_malformed=lambda _: None,
                stale_seconds=5.0, messages_per_second=rate,
            )  # fmt: skip

        paced = connection(9.0)
        await paced.open(streams[:1])
        # 12 subscriptions at once, and 8 pings to answer meanwhile: 20 messages to send.
        pings = asyncio.gather(*(server.ping_all() for _ in range(8)))
        await asyncio.gather(*(paced.subscribe([s]) for s in streams[1:13]), pings)
        await until(lambda: server.clients[0].pongs == 8)
        assert server.clients[0].max_streams == 13
        assert server.clients[0].max_rate <= 10
        assert server.violations == []
        await paced.close()

        # The server really enforces the limit: an unpaced client is cut off.
        unpaced = connection(1000.0)
        await unpaced.open(streams[:1])
        with pytest.raises(Exception, match=r"closed|no answer|failed"):
            await asyncio.gather(*(unpaced.subscribe([s]) for s in streams[1:20]))
        assert any("messages within 1s" in v for v in server.violations)
        await unpaced.close()


@pytest.mark.timeout(120)
async def test_rotation_before_the_lifetime_loses_no_minute(
    market_50: ReplayMarket, run_collector: Starter, jetstream: JetStreamContext
) -> None:
    running: Running = await run_collector(market_50, connection_lifetime_seconds=0.7)
    server, collector = running.server, running.collector
    # The minute that closed before the collector connected comes from REST; from then on, streams only.
    await server.advance()
    settled = last_closed_minute(running.clock.now_ms()) - MINUTE_MS
    await until(lambda: all(collector.ledger.is_done(s, settled) for s in market_50.symbols))
    klines_before = sum(1 for c in server.rest_calls if c.path == "/fapi/v1/klines")
    for _ in range(12):
        await server.advance()
        await asyncio.sleep(0.25)
    minute = last_closed_minute(running.clock.now_ms())
    await until(lambda: all(collector.ledger.is_done(s, minute) for s in market_50.symbols))
    assert collector.stats.rotations >= 3
    assert collector.stats.disconnects == 0
    # Nothing was missed, so nothing had to be fetched again.
    assert sum(1 for c in server.rest_calls if c.path == "/fapi/v1/klines") == klines_before
    candles = await closed_events(jetstream)
    assert len(candles) == len({(c.symbol, c.open_time) for c in candles}) == 50 * (3 + 13)


@pytest.mark.timeout(120)
async def test_symbol_list_changes_are_followed_without_restart(
    series_2026: dict[str, KlineSeries], run_collector: Starter, jetstream: JetStreamContext
) -> None:
    market = ReplayMarket(series_2026, virtual_symbols=12)
    symbols = sorted(market.symbols)
    initial, later = symbols[:10], symbols[2:12]
    running: Running = await run_collector(market, symbols_refresh_seconds=0.2)
    server, collector = running.server, running.collector
    server.trading = list(initial)
    await until(lambda: collector.symbols == set(initial))
    server.trading = list(later)  # two delisted, two listed
    await until(lambda: collector.symbols == set(later))
    await until(lambda: {s.split("@")[0].upper() for c in server.live_clients() for s in c.streams} == set(later))
    await server.advance()
    minute = last_closed_minute(running.clock.now_ms())
    await until(lambda: all(collector.ledger.is_done(s, minute) for s in later))
    candles = await closed_events(jetstream)
    last_minute = {(c.symbol) for c in candles if c.open_time == minute}
    assert last_minute == set(later)
    assert collector.stats.symbols_added >= 2 and collector.stats.symbols_removed >= 2


@pytest.mark.timeout(120)
async def test_missing_closed_messages_malformed_frames_and_stale_connections_are_survived(
    market_50: ReplayMarket, run_collector: Starter, jetstream: JetStreamContext
) -> None:
    running: Running = await run_collector(market_50, stale_connection_seconds=0.5)
    server, collector = running.server, running.collector
    symbol = sorted(market_50.symbols)[0]
    next_minute = running.clock.now_ms() // MINUTE_MS * MINUTE_MS
    server.never_closed.add((symbol, next_minute))
    await server.send_malformed()
    server.stall(1)
    for _ in range(3):
        await server.advance()
        await asyncio.sleep(0.2)
    running.clock.set(running.clock.now_ms() + 3_000)
    minute = last_closed_minute(running.clock.now_ms())
    await until(lambda: all(collector.ledger.is_done(s, minute) for s in market_50.symbols))
    assert collector.stats.malformed == server.malformed_sent >= 6
    assert collector.stats.disconnects >= 1  # the stalled connection was declared dead
    candles = {(c.symbol, c.open_time): c for c in await closed_events(jetstream)}
    assert candles[(symbol, next_minute)] == server.candle(symbol, next_minute)  # filled from REST


async def test_an_invalid_candle_goes_to_the_dead_letters_with_its_reason(
    market_50: ReplayMarket, run_collector: Starter, jetstream: JetStreamContext
) -> None:
    running: Running = await run_collector(market_50)
    server = running.server
    symbol = sorted(market_50.symbols)[3]
    minute = running.clock.now_ms() // MINUTE_MS * MINUTE_MS
    good = server.candle(symbol, minute)
    assert good is not None
    server.overrides[(symbol, minute)] = good.model_copy(update={"low": good.high * 2})
    await server.advance()
    await until(lambda: running.emitter.stats.invalid == 1)
    msg = await jetstream.get_last_msg(STREAM_DEAD_LETTERS.name, "deadletter.collector")
    assert "low" in (msg.headers or {})[REASON_HEADER]
    assert symbol in (msg.headers or {})["ce-id"]


async def test_forming_updates_are_emitted_throttled_when_asked(
    market_50: ReplayMarket, run_collector: Starter, jetstream: JetStreamContext
) -> None:
    running: Running = await run_collector(market_50, emit_forming=True, forming_throttle_seconds=60.0)
    for _ in range(3):
        await running.server.advance()
    await until(lambda: running.emitter.stats.forming >= 50)
    await asyncio.sleep(0.2)
    assert running.emitter.stats.forming == 50  # one per symbol: the others fell inside the throttle
    msg = await jetstream.get_last_msg(STREAM_CANDLES.name, f"candles.forming.{sorted(market_50.symbols)[0]}")
    assert msg.data is not None and b'"closed":false' in msg.data.replace(b" ", b"")


def test_kline_event_model_keeps_binance_names() -> None:
    assert set(BinanceKlineEvent.model_fields) == {"e", "E", "s", "k"}


@contextlib.asynccontextmanager
async def collector_ready(
    settings: Settings, emitter: CandleEmitter, clock: SimulatedClock, pool: asyncpg.Pool
) -> AsyncIterator[LiveCollector]:
    """Run a live collector until its first backfill is done, yield it, then stop it and close ``pool``."""
    async with aiohttp.ClientSession() as session:
        collector = LiveCollector(settings, emitter, session, clock, pool=pool, tuning=FAST)
        task = asyncio.create_task(collector.run())
        try:
            async with asyncio.timeout(30):
                await collector.ready.wait()
            yield collector
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await pool.close()


async def bar_series(pg: asyncpg.Connection, expected: int) -> bool:
    return bool(await pg.fetchval("SELECT count(DISTINCT (symbol, interval)) FROM bars") == expected)


async def test_start_fetches_only_the_minutes_not_already_stored(
    series_2026: dict[str, KlineSeries],
    fake_binance: FakeFactory,
    jetstream: JetStreamContext,
    nats_url: str,
    postgres_dsn: str,
    pg: asyncpg.Connection,
) -> None:
    market = ReplayMarket(series_2026, virtual_symbols=5)
    symbols = sorted(market.symbols)
    clock = market_clock(market)
    server = await fake_binance(market, clock)
    last = last_closed_minute(clock.now_ms())
    first = last - 9 * MINUTE_MS  # backfill_minutes=10
    stored = [
        c
        for s in symbols
        for c in market.series_candles(s, first, first + 7 * MINUTE_MS)
        if not (s == symbols[0] and c.open_time == first + 3 * MINUTE_MS)  # a hole in the stored history
    ]
    await insert_candles(pg, stored, PartitionCache())
    settings = load_settings(
        {}, nats_url=nats_url, postgres_dsn=postgres_dsn, binance_rest_url=server.rest_url,
        binance_ws_url=server.ws_url, backfill_minutes=10,
    )  # fmt: skip
    await ensure_streams(jetstream, settings)
    emitter = CandleEmitter(Publisher(jetstream))
    pool = await asyncpg.create_pool(postgres_dsn, min_size=1, max_size=2)
    assert pool is not None
    async with collector_ready(settings, emitter, clock, pool):
        await until(lambda: bar_series(pg, 5 * 6))  # seeded with the backfill
    emitted = {(c.symbol, c.open_time) for c in await closed_events(jetstream)}
    # The sweep stops at the last minute that closed more than the grace period ago.
    missing_tail = {first + 7 * MINUTE_MS, first + 8 * MINUTE_MS}
    expected = {(s, t) for s in symbols for t in missing_tail} | {(symbols[0], first + 3 * MINUTE_MS)}
    assert emitted == expected


class SeedCheckingEmitter(CandleEmitter):
    """The collector's emitter, noting per symbol whether its bars were stored before its first candle."""

    def __init__(self, publisher: Publisher, pool: asyncpg.Pool) -> None:
        super().__init__(publisher)
        self._pool = pool
        self.seeded_first: dict[str, bool] = {}

    async def emit_closed(self, candles: Sequence[Candle], event_times: Sequence[int | None] | None = None) -> int:
        for symbol in sorted({c.symbol for c in candles} - self.seeded_first.keys()):
            intervals = await self._pool.fetchval("SELECT count(DISTINCT interval) FROM bars WHERE symbol = $1", symbol)
            self.seeded_first[symbol] = intervals == len(SEED_BARS)
        return await super().emit_closed(candles, event_times)


async def test_each_symbols_bars_are_stored_before_its_first_candle_is_published(
    series_2026: dict[str, KlineSeries],
    fake_binance: FakeFactory,
    jetstream: JetStreamContext,
    nats_url: str,
    postgres_dsn: str,
) -> None:
    """The calculator rebuilds a new symbol's rings from ``bars`` when its first minutes arrive: bars
    stored after that never reach the rings, and whether they had depended on timing."""
    market = ReplayMarket(series_2026, virtual_symbols=5)
    clock = market_clock(market)
    server = await fake_binance(market, clock)
    settings = load_settings(
        {}, nats_url=nats_url, postgres_dsn=postgres_dsn, binance_rest_url=server.rest_url,
        binance_ws_url=server.ws_url, backfill_minutes=30,
    )  # fmt: skip
    await ensure_streams(jetstream, settings)
    pool = await asyncpg.create_pool(postgres_dsn, min_size=1, max_size=3)
    assert pool is not None
    emitter = SeedCheckingEmitter(Publisher(jetstream), pool)
    async with collector_ready(settings, emitter, clock, pool):
        pass
    assert emitter.seeded_first == dict.fromkeys(sorted(market.symbols), True)


async def test_a_new_listing_is_backfilled_from_its_first_minute_and_not_asked_for_before_it(
    series_2026: dict[str, KlineSeries], run_collector: Starter, jetstream: JetStreamContext
) -> None:
    market = ReplayMarket(series_2026, virtual_symbols=1)
    listing = sorted(market.symbols)[0]
    clock_probe = market_clock(market)
    listed_at = last_closed_minute(clock_probe.now_ms()) - 4 * MINUTE_MS
    # 1,600 minutes: the first request (1,500 of them) lies wholly before the listing and gets no row.
    running = await run_collector(market, backfill_minutes=1600, server_options={"listed_at": {listing: listed_at}})
    server = running.server

    def requests_for_listing() -> int:
        return sum(1 for c in server.rest_calls if c.path == "/fapi/v1/klines" and c.params["symbol"] == listing)

    asked = requests_for_listing()
    assert asked == 2  # 1,500 minutes with no row, then the 100 up to now: one sweep, not two at once
    await asyncio.sleep(0.6)  # several sweeps (every 0.1 s) pass
    assert requests_for_listing() == asked  # the minutes before the listing were settled, not re-asked
    emitted = sorted(c.open_time for c in await closed_events(jetstream) if c.symbol == listing)
    assert emitted == [listed_at + i * MINUTE_MS for i in range(4)]
