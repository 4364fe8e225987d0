"""A replay that looks live (SCREENER_REPLAY_TIME=live): shifted to the present, anchored, paced by the wall clock."""

from __future__ import annotations

import asyncpg
from nats.js import JetStreamContext

from collector.clock import SystemClock
from collector.emitter import CandleEmitter
from collector.replay.market import ReplayMarket
from collector.replay.runner import DAY_MS, load_market, prepare_replay
from collector.replay.source import ReplaySource
from collector.replay.warmup import warmup_end
from functions.recorder.store import insert_candles
from marketdata.klines import KlineSeries
from screener.config import load_settings
from screener.db.partitions import PartitionCache
from screener.events.models import MINUTE_MS
from screener.runtime.publisher import Publisher
from screener.streams import ensure_streams

NOW_MS = 1_796_000_000_000 + 17_345  # 2026-12-01, mid-minute


class WallClock(SystemClock):
    """Wall time that moves only by sleeping; records the sleeps."""

    def __init__(self, now_ms: int) -> None:
        self.wall_ms = now_ms
        self.slept: list[float] = []

    def now_ms(self) -> int:
        return self.wall_ms

    def monotonic(self) -> float:
        return self.wall_ms / 1000

    async def sleep(self, seconds: float) -> None:
        self.slept.append(round(max(0.0, seconds), 3))
        self.wall_ms += int(max(0.0, seconds) * 1000)


async def _emitter(jetstream: JetStreamContext) -> CandleEmitter:
    await ensure_streams(jetstream, load_settings({}))
    return CandleEmitter(Publisher(jetstream))


async def test_live_time_puts_the_stream_at_the_present_and_a_restart_keeps_the_shift(
    postgres_dsn: str, pg: asyncpg.Connection, jetstream: JetStreamContext
) -> None:
    emitter = await _emitter(jetstream)
    pool = await asyncpg.create_pool(postgres_dsn, min_size=1, max_size=2)
    assert pool is not None
    try:
        settings = load_settings({}, replay_speed="max", replay_time="live")
        market = load_market(settings)
        recorded_first = warmup_end(market, settings.warmup_minutes)
        source = await prepare_replay(market, emitter, WallClock(NOW_MS), settings, pool)
        shift = market.time_shift_ms
        assert shift > 0 and shift % DAY_MS == 0  # whole days: the recording's UTC bars stay whole
        catch_up = NOW_MS - source.next_minute
        assert (
            settings.replay_catch_up_minutes * MINUTE_MS
            <= catch_up
            < settings.replay_catch_up_minutes * MINUTE_MS + DAY_MS
        )
        assert source.next_minute == recorded_first + shift
        # The warm-up rows lie just before the stream, in the past, on the same shifted timeline.
        newest = await pg.fetchval("SELECT (extract(epoch FROM max(open_time)) * 1000)::bigint FROM candles_1m")
        assert newest == source.next_minute - MINUTE_MS
        newest_bar = await pg.fetchval("SELECT (extract(epoch FROM max(open_time)) * 1000)::bigint FROM bars")
        assert newest_bar < source.next_minute
        # A candle of the stream is the recorded one, moved by the shift.
        (candle, *_) = market.candles_at(source.next_minute)
        recorded = next(s for s in market.tracks if s.name == candle.symbol).series
        row = recorded.index_of(source.next_minute - shift)
        assert row is not None and recorded.candle(row).close == candle.close

        # A restart a day later on the same database keeps the shift (the anchor) and resumes.
        await source.run(max_minutes=2)
        emitted = [c for t in range(2) for c in market.candles_at(source.next_minute - (2 - t) * MINUTE_MS)]
        await insert_candles(pg, emitted, PartitionCache())
        again_market = load_market(settings)
        again = await prepare_replay(again_market, emitter, WallClock(NOW_MS + DAY_MS), settings, pool)
        assert again_market.time_shift_ms == shift and again.next_minute == source.next_minute
    finally:
        await pool.close()


async def test_a_database_anchored_under_an_earlier_start_of_the_recording_keeps_its_shift(
    postgres_dsn: str, pg: asyncpg.Connection, jetstream: JetStreamContext
) -> None:
    """The anchor's key names the recording's first minute, which was once the minute all its symbols shared."""
    emitter = await _emitter(jetstream)
    settings = load_settings({}, replay_speed="max", replay_time="live")
    market = load_market(settings)
    shift = 570 * DAY_MS
    earlier = f"{settings.replay_recording}:{market.recorded_start_ms + 7365 * MINUTE_MS}"
    await pg.execute("INSERT INTO replay_anchors (recording, shift_ms) VALUES ($1, $2)", earlier, shift)
    first = warmup_end(market, settings.warmup_minutes)
    stored = [c.model_copy(update={"open_time": c.open_time + shift}) for c in market.candles_at(first - MINUTE_MS)]
    await insert_candles(pg, stored, PartitionCache())
    pool = await asyncpg.create_pool(postgres_dsn, min_size=1, max_size=2)
    assert pool is not None
    try:
        source = await prepare_replay(market, emitter, WallClock(NOW_MS), settings, pool)
    finally:
        await pool.close()
    assert market.time_shift_ms == shift and source.next_minute == first + shift


async def test_recorded_time_keeps_the_recorded_minutes(jetstream: JetStreamContext) -> None:
    emitter = await _emitter(jetstream)
    settings = load_settings({}, replay_speed="max", replay_time="recorded")
    market = load_market(settings)
    source = await prepare_replay(market, emitter, WallClock(NOW_MS), settings, None)
    assert market.time_shift_ms == 0
    assert (
        source.next_minute
        == warmup_end(market, settings.warmup_minutes)
        == market.recorded_start_ms + min(settings.warmup_minutes, market.minutes * 3 // 4) * MINUTE_MS
    )


async def test_a_caught_up_live_replay_waits_for_each_minute_to_close(
    series_2026: dict[str, KlineSeries], jetstream: JetStreamContext
) -> None:
    emitter = await _emitter(jetstream)
    market = ReplayMarket(series_2026)
    minute = NOW_MS - NOW_MS % MINUTE_MS
    market.shift_time(minute - 2 * MINUTE_MS - market.start_ms)  # two closed minutes before the present
    clock = WallClock(NOW_MS)
    source = ReplaySource(market, emitter, clock, speed=60.0, live=True, start_ms=market.start_ms)
    await source.run(max_minutes=4)
    # Two closed minutes at once (at the asked speed), then one per wall-clock minute, each when it closes.
    assert clock.slept[:2] == [0.0, 1.0]
    assert source.stats.last_minute == minute + MINUTE_MS
    assert clock.wall_ms >= minute + 2 * MINUTE_MS
    assert sum(clock.slept) < 2 * 60 + 1
