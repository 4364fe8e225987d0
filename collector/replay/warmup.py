"""Warm-up: write the history that precedes the replay's first emitted minute straight into the database.

A new user should see real alerts within a minute, and the calculator needs 1440 minutes of history
for the 1d window (2880 for the 1d volume ratio) plus bars for the indicators. So before a replay
emits anything, the first ``Settings.warmup_minutes`` of the recording are written directly:

* the last ``WARMUP_CANDLE_MINUTES`` (two days) of them into ``candles_1m`` (the recorder's own
  COPY path, idempotent), which is also what the retention keeps;
* all of them, aggregated to closed UTC-aligned 5m/15m/1h/4h/8h/1d bars, into ``bars``, the newest
  ``SEED_BARS`` of each (14 days by default: 300 5m and 15m bars, all 336 1h bars).

The calculator's warm start (``state/``) rebuilds its Redis state from exactly these two tables, and
the replay then streams from the minute after the warm-up, so the first streamed minute already has
full windows.
"""

from __future__ import annotations

import logging

import asyncpg

from collector.bars import SEED_BARS, aggregate_bars, upsert_bars
from collector.replay.market import ReplayMarket
from functions.recorder.store import insert_records
from screener.db.bars import INTERVAL_MINUTES
from screener.db.partitions import PartitionCache
from screener.events.models import MINUTE_MS

log = logging.getLogger(__name__)

WARMUP_CANDLE_MINUTES = 2 * 1440
# A warm-up of at least this many symbols logs a progress line every tenth of them.
PROGRESS_SYMBOLS = 20


def warmup_end(market: ReplayMarket, warmup_minutes: int) -> int:
    """Return the first streamed minute after a warm-up of ``warmup_minutes`` (at most 3/4 of the recording)."""
    # A quarter of the recording is always left to stream (a week of the shipped month).
    return market.start_ms + min(warmup_minutes, market.minutes * 3 // 4) * MINUTE_MS


async def warm_up(conn: asyncpg.Connection, market: ReplayMarket, warmup_minutes: int) -> int:
    """Write the warm-up history of every symbol; return the open time of the first minute to stream."""
    end = warmup_end(market, warmup_minutes)
    candles_from = max(market.start_ms, end - WARMUP_CANDLE_MINUTES * MINUTE_MS)
    partitions = PartitionCache()
    written = bars_written = 0
    for done, track in enumerate(market.tracks, 1):
        written += await insert_records(conn, market.records_between(track, candles_from, end), partitions)
        times, values = market.track_arrays(track, market.start_ms, end)
        bars = [
            bar
            for interval in INTERVAL_MINUTES
            for bar in aggregate_bars(track.name, interval, times, values, end)[-SEED_BARS[interval] :]
        ]
        bars_written += await upsert_bars(conn, bars)
        if len(market.tracks) >= PROGRESS_SYMBOLS and done % (len(market.tracks) // 10) == 0:
            log.info("replay warm-up: %d of %d symbols written", done, len(market.tracks))
    log.info(
        "replay warm-up: %d candles and %d bars of %d symbols written before %s",
        written, bars_written, len(market.tracks), end,
    )  # fmt: skip
    return end
