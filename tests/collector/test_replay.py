"""Replay of recorded klines: readers, the merged timeline, virtual symbols, loops, speed and warm-up."""

from __future__ import annotations

import gzip
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from nats.js import JetStreamContext

from collector.cli import collect
from collector.clock import SystemClock
from collector.emitter import CandleEmitter
from collector.replay.market import ReplayMarket, virtual_name
from collector.replay.runner import DEFAULT_REPLAY_DATA, load_market, prepare_replay
from collector.replay.source import ReplaySource, ReplaySpeedError, parse_speed
from collector.replay.warmup import WARMUP_CANDLE_MINUTES
from functions.recorder.store import insert_candles
from marketdata.klines import KlineFileError, KlineSeries, read_folder, read_klines
from screener.config import load_settings
from screener.db.partitions import PartitionCache
from screener.events import nats_binding
from screener.events.models import MINUTE_MS, Candle
from screener.names import STREAM_CANDLES
from screener.runtime.publisher import Publisher
from screener.streams import ensure_streams

ALGO = "binance-um-2026-02/ALGOUSDT-1m-2026-02.csv.gz"


def test_binance_csv_is_read_with_all_twelve_columns(klines_dir: Path) -> None:
    series = read_klines(klines_dir / ALGO)
    first = gzip.decompress((klines_dir / ALGO).read_bytes()).decode().splitlines()[1].split(",")
    assert series.symbol == "ALGOUSDT" and len(series) == 40320 and not series.quote_volume_derived
    assert series.candle(0) == Candle(
        symbol="ALGOUSDT", open_time=int(first[0]), open=float(first[1]), high=float(first[2]), low=float(first[3]),
        close=float(first[4]), volume=float(first[5]), quote_volume=float(first[7]), trades=int(first[8]),
        taker_buy_volume=float(first[9]), taker_buy_quote_volume=float(first[10]),
    )  # fmt: skip


def test_ohlcv_csv_gets_a_derived_quote_volume_labelled_as_such(klines_dir: Path) -> None:
    series = read_klines(klines_dir / "binance-um-2025-05" / "BTCUSDT-1m-futures.csv.gz")
    candle = series.candle(0)
    assert series.quote_volume_derived and candle.quote_volume_derived
    assert candle.quote_volume == pytest.approx(candle.volume * (candle.high + candle.low + candle.close) / 3)
    assert candle.trades == 0 and candle.taker_buy_volume == 0.0


def test_plain_csv_without_header_and_unsorted_rows_is_read_in_time_order(tmp_path: Path) -> None:
    path = tmp_path / "XRPUSDT-1m-2026-03.csv"
    rows = [
        "1772323260000,2.0,2.1,1.9,2.05,10,1772323319999,20.5,3,5,10.2,0",
        "1772323200000,2.0,2.2,1.8,2.0,11,1772323259999,22.0,4,6,12.0,0",
        "1772323260000,9,9,9,9,9,1772323319999,9,9,9,9,0",  # a repeated minute: the first copy wins
    ]
    path.write_text("\n".join(rows) + "\n")
    series = read_klines(path)
    assert [c.open_time for c in series.candles()] == [1772323200000, 1772323260000]
    assert series.candle(1).close == 2.05 and series.candle(1).trades == 3


def test_unreadable_files_are_named_in_the_error(tmp_path: Path) -> None:
    bad = tmp_path / "BADUSDT-1m.csv"
    bad.write_text("open_time,open,high,low,close,volume\n1772323200000,1,1,1,oops,1\n")
    with pytest.raises(KlineFileError, match=r"BADUSDT-1m\.csv"):
        read_klines(bad)
    odd = tmp_path / "ODDUSDT-1m.csv"
    odd.write_text("1772323200001,1,1,1,1,1\n")
    with pytest.raises(KlineFileError, match="not a whole minute"):
        read_klines(odd)
    broken = tmp_path / "GZUSDT-1m.csv.gz"
    broken.write_bytes(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03not deflate")
    with pytest.raises(KlineFileError, match=r"GZUSDT-1m\.csv\.gz"):
        read_klines(broken)
    with pytest.raises(KlineFileError, match="no kline files"):
        read_folder(tmp_path, ["NOPEUSDT"])


def test_folder_reader_filters_symbols(klines_dir: Path) -> None:
    market = read_folder(klines_dir / "binance-um-2025-05", ["btcusdt", "ETHUSDT"])
    assert sorted(market) == ["BTCUSDT", "ETHUSDT"]


def test_market_merges_symbols_minute_by_minute_over_their_whole_span(klines_dir: Path) -> None:
    series = read_folder(klines_dir / "binance-um-2025-05")
    market = ReplayMarket(series)
    assert len(market.symbols) == 16
    assert market.start_ms == min(s.first_open_time for s in series.values())
    assert market.last_ms == series["ETHUSDT"].last_open_time  # ETHUSDT runs to 06-15, the others to 06-03
    ada = series["ADAUSDT"].first_open_time  # ADAUSDT starts on 05-09, five days in
    for t in (market.start_ms, ada - MINUTE_MS, ada, ada + 1000 * MINUTE_MS, market.last_ms):
        candles = market.candles_at(t)
        assert {c.symbol for c in candles} == {s for s, x in series.items() if x.index_of(t) is not None}
        assert {c.open_time for c in candles} == {t}
    assert len(market.candles_at(ada + 1000 * MINUTE_MS)) == 16


def test_symbols_listed_and_delisted_mid_range_keep_every_minute_of_the_others(
    series_2026: dict[str, KlineSeries],
) -> None:
    def part(name: str, first: int, last: int) -> KlineSeries:
        s = series_2026[name]
        return KlineSeries(name, s.open_time[first:last], s.values[first:last], s.quote_volume_derived)

    algo = series_2026["ALGOUSDT"]
    listed = part("AVAXUSDT", 20 * 1440 + 333, len(algo))  # listed on day 20
    delisted = part("LINKUSDT", 0, 6 * 1440 + 77)  # delisted on day 6
    market = ReplayMarket({"ALGOUSDT": algo, "AVAXUSDT": listed, "LINKUSDT": delisted})
    assert (market.start_ms, market.last_ms) == (algo.first_open_time, algo.last_open_time)
    emitted = [c for t in range(market.start_ms, market.last_ms + MINUTE_MS, MINUTE_MS) for c in market.candles_at(t)]
    for series in (algo, listed, delisted):
        mine = [c for c in emitted if c.symbol == series.symbol]
        assert mine == list(series.candles())
    # Two files that share no minute (one ends before the other starts) make one timeline too.
    apart = ReplayMarket({"LINKUSDT": delisted, "AVAXUSDT": listed})
    assert apart.start_ms == delisted.first_open_time and apart.last_ms == listed.last_open_time
    assert [c.symbol for c in apart.candles_at(listed.first_open_time)] == ["AVAXUSDT"]


def test_loops_shift_time_forward(series_2026: dict[str, KlineSeries]) -> None:
    market = ReplayMarket(series_2026)
    first = market.candles_at(market.start_ms)
    again = market.candles_at(market.start_ms + 2 * market.period_ms)
    assert [c.open_time for c in again] == [market.start_ms + 2 * market.period_ms] * 7
    assert [c.model_copy(update={"open_time": 0}) for c in again] == [
        c.model_copy(update={"open_time": 0}) for c in first
    ]
    assert market.loop_of(market.start_ms + 2 * market.period_ms) == 2


def test_virtual_symbols_are_time_shifted_copies_of_real_series(series_2026: dict[str, KlineSeries]) -> None:
    market = ReplayMarket(series_2026, virtual_symbols=1000)
    assert len(market.symbols) == len(set(market.symbols)) == 1000
    assert market.symbols[0] == virtual_name(0, "ALGOUSDT") == "V0001ALGOUSDT"
    candles = market.candles_at(market.start_ms + 500 * MINUTE_MS)
    assert len(candles) == 1000
    copies = [c for c in candles if c.symbol.endswith("ALGOUSDT")]
    assert len({c.close for c in copies}) > 50  # copies move differently
    real = {c.open_time: c for c in series_2026["ALGOUSDT"].candles()}
    shifted = market.tracks[0].shift_minutes * MINUTE_MS
    assert copies[0].close == real[market.start_ms + 500 * MINUTE_MS + shifted].close


def test_speed_setting_is_parsed() -> None:
    assert parse_speed("60") == 60.0
    assert parse_speed("60x") == 60.0
    assert parse_speed("realtime") == 1.0
    assert parse_speed("max") is None
    with pytest.raises(ReplaySpeedError, match="fast"):
        parse_speed("fast")


async def stream_candles(js: JetStreamContext) -> list[Candle]:
    info = await js.stream_info(STREAM_CANDLES.name)
    out = []
    for seq in range(1, info.state.last_seq + 1):
        msg = await js.get_msg(STREAM_CANDLES.name, seq)
        out.append(
            Candle.model_validate(nats_binding.from_message(dict(msg.headers or {}), msg.data or b"").get_data())
        )
    return out


@pytest.fixture
async def emitter(jetstream: JetStreamContext) -> CandleEmitter:
    await ensure_streams(jetstream, load_settings({}))
    return CandleEmitter(Publisher(jetstream))


async def test_replay_emits_each_minute_of_every_symbol_together_at_the_asked_speed(
    series_2026: dict[str, KlineSeries], emitter: CandleEmitter, jetstream: JetStreamContext
) -> None:
    market = ReplayMarket(series_2026)
    source = ReplaySource(market, emitter, SystemClock(), speed=600.0, start_ms=market.start_ms)
    started = time.monotonic()
    stats = await source.run(max_minutes=6)
    elapsed = time.monotonic() - started
    assert elapsed >= 0.5  # 600x: a minute every 0.1 s
    assert stats.minutes == 6 and stats.candles == 42
    candles = await stream_candles(jetstream)
    assert [c.open_time for c in candles] == sorted(c.open_time for c in candles)
    assert candles == [c for t in range(6) for c in market.candles_at(market.start_ms + t * MINUTE_MS)]


async def test_a_looping_replay_keeps_time_monotonic_across_the_end(
    series_2026: dict[str, KlineSeries], emitter: CandleEmitter, jetstream: JetStreamContext
) -> None:
    market = ReplayMarket(series_2026)
    source = ReplaySource(market, emitter, SystemClock(), speed=None, start_ms=market.last_ms - MINUTE_MS)
    await source.run(max_minutes=4)
    times = [c.open_time for c in await stream_candles(jetstream)]
    assert times == sorted(times) and len(set(times)) == 4
    assert times[-1] == market.last_ms + 2 * MINUTE_MS
    ended = ReplaySource(market, emitter, SystemClock(), speed=None, loop=False, start_ms=market.last_ms)
    assert (await ended.run()).minutes == 1


@pytest.fixture
async def pool(postgres_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(postgres_dsn, min_size=1, max_size=2)
    assert pool is not None
    yield pool
    await pool.close()


async def test_warm_up_writes_history_and_bars_and_a_restart_resumes_after_what_is_stored(
    emitter: CandleEmitter, pool: asyncpg.Pool, pg: asyncpg.Connection, klines_dir: Path
) -> None:
    settings = load_settings(
        {}, replay_data=klines_dir / "binance-um-2026-02", replay_speed="max", replay_warmup_minutes=14 * 1440
    )
    market = load_market(settings)
    source = await prepare_replay(market, emitter, SystemClock(), settings, pool)
    assert source.next_minute == market.start_ms + 14 * 1440 * MINUTE_MS
    assert await pg.fetchval("SELECT count(*) FROM candles_1m") == 7 * WARMUP_CANDLE_MINUTES
    newest = await pg.fetchval("SELECT (extract(epoch FROM max(open_time)) * 1000)::bigint FROM candles_1m")
    assert newest == source.next_minute - MINUTE_MS
    bars = dict(await pg.fetch("SELECT interval, count(*) FROM bars WHERE symbol = 'ALGOUSDT' GROUP BY interval"))
    assert bars == {"5m": 300, "15m": 300, "1h": 336, "4h": 84, "8h": 42, "1d": 14}  # at most SEED_BARS
    # A 1h bar equals the aggregate of its recorded minutes.
    row = await pg.fetchrow(
        "SELECT (extract(epoch FROM open_time) * 1000)::bigint AS t, open, high, low, close, quote_volume FROM bars "
        "WHERE symbol = 'ALGOUSDT' AND interval = '1h' ORDER BY open_time DESC LIMIT 1"
    )
    minutes = list(market.series_candles("ALGOUSDT", row["t"], row["t"] + 60 * MINUTE_MS))
    assert (row["open"], row["close"]) == (minutes[0].open, minutes[-1].close)
    assert row["high"] == max(c.high for c in minutes) and row["low"] == min(c.low for c in minutes)
    assert row["quote_volume"] == pytest.approx(sum(c.quote_volume for c in minutes), rel=1e-12)

    await source.run(max_minutes=3)
    # What a restart does: no second warm-up, resume after the newest stored minute.
    emitted = [c for t in range(3) for c in market.candles_at(market.start_ms + (14 * 1440 + t) * MINUTE_MS)]
    await insert_candles(pg, emitted, PartitionCache())  # what the recorder did with them
    again = await prepare_replay(market, emitter, SystemClock(), settings, pool)
    assert again.next_minute == source.next_minute


async def test_collect_runs_the_default_replay_from_the_settings(
    nats_url: str, postgres_dsn: str, pg: asyncpg.Connection, jetstream: JetStreamContext
) -> None:
    settings = load_settings({}, nats_url=nats_url, postgres_dsn=postgres_dsn, replay_speed="max")
    assert settings.replay_data is None and DEFAULT_REPLAY_DATA.name == "binance-um-2025-05"
    await collect(settings, max_minutes=2)
    assert (await jetstream.stream_info(STREAM_CANDLES.name)).state.messages == 2 * 16  # 16 symbols, BTCUSDT too
    assert await pg.fetchval("SELECT count(*) FROM candles_1m") == 16 * WARMUP_CANDLE_MINUTES


class SteppingClock(SystemClock):
    """Monotonic time that moves only by sleeping (so pacing is measured exactly)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(round(max(0.0, seconds), 6))
        self.now += max(0.0, seconds)


async def test_speed_sixty_emits_a_minute_per_second_of_the_clock(
    series_2026: dict[str, KlineSeries], emitter: CandleEmitter
) -> None:
    clock = SteppingClock()
    source = ReplaySource(ReplayMarket(series_2026), emitter, clock, speed=60.0)
    await source.run(max_minutes=5)
    assert clock.slept == [0.0, 1.0, 1.0, 1.0, 1.0]
    assert clock.now == 1004.0
