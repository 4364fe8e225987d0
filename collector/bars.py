"""Higher-timeframe bars for the indicators (metrics.md, "Clock-aligned bars"), stored in ``bars``.

Only closed bars are stored: the forming bar of each timeframe is the calculator's to build from
the 1-minute candles. The live source seeds them from Binance's native intervals; the replay
aggregates them from the recorded minutes it writes before streaming; the recorder rolls up the
later ones as their minutes are stored (``screener.db.bars``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import asyncpg
import numpy as np

from marketdata.klines import FloatArray, IntArray
from screener.db.bars import INTERVAL_MINUTES
from screener.events.models import MINUTE_MS

# Timeframes seeded at start (1m bars are the candles themselves) and how many closed bars each
# keeps: at least 250 for exact indicators, 1h more because change_14d looks 336 hours back.
SEED_BARS: dict[str, int] = {"5m": 300, "15m": 300, "1h": 400, "4h": 300, "8h": 300, "1d": 300}


class Bar(NamedTuple):
    """One closed bar of a timeframe (a row of the ``bars`` table)."""

    symbol: str
    interval: str
    open_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float


def aggregate_bars(symbol: str, interval: str, open_times: IntArray, values: FloatArray, end_ms: int) -> list[Bar]:
    """Aggregate 1-minute rows into the closed, UTC-aligned bars of ``interval`` that end by ``end_ms``.

    ``values`` has ``KlineSeries.VALUE_COLUMNS`` (open, high, low, close, volume, quote_volume, ...).
    A bucket that starts before the first minute is left out: it would be a bar missing its start.
    """
    if open_times.size == 0:
        return []
    span = INTERVAL_MINUTES[interval] * MINUTE_MS
    buckets = open_times - open_times % span
    first_full = open_times[0] if open_times[0] % span == 0 else open_times[0] - open_times[0] % span + span
    keep = (buckets >= first_full) & (buckets + span <= end_ms)
    buckets, rows = buckets[keep], values[keep]
    if buckets.size == 0:
        return []
    starts = np.flatnonzero(np.concatenate(([True], np.diff(buckets) != 0)))
    ends = np.concatenate((starts[1:], [buckets.size])) - 1
    highs = np.maximum.reduceat(rows[:, 1], starts)
    lows = np.minimum.reduceat(rows[:, 2], starts)
    volumes = np.add.reduceat(rows[:, 4], starts)
    quotes = np.add.reduceat(rows[:, 5], starts)
    return [
        Bar(
            symbol,
            interval,
            int(buckets[s]),
            float(rows[s, 0]),
            float(h),
            float(lo),
            float(rows[e, 3]),
            float(v),
            float(q),
        )
        for s, e, h, lo, v, q in zip(starts, ends, highs, lows, volumes, quotes, strict=True)
    ]


_STAGE = "bars_stage"
_CREATE_STAGE = f"""
CREATE TEMP TABLE IF NOT EXISTS {_STAGE} (
    symbol text, interval text, open_time bigint, open double precision, high double precision,
    low double precision, close double precision, volume double precision, quote_volume double precision
) ON COMMIT DELETE ROWS
"""
# DISTINCT ON: one row per key even if a batch repeats a bar (ON CONFLICT DO UPDATE refuses duplicates).
_UPSERT = f"""
INSERT INTO bars (symbol, interval, open_time, open, high, low, close, volume, quote_volume)
SELECT DISTINCT ON (symbol, interval, open_time)
       symbol, interval, to_timestamp(open_time / 1000.0), open, high, low, close, volume, quote_volume
FROM {_STAGE}
ON CONFLICT (symbol, interval, open_time) DO UPDATE SET
    open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close,
    volume = EXCLUDED.volume, quote_volume = EXCLUDED.quote_volume
"""


async def upsert_bars(conn: asyncpg.Connection, bars: Sequence[Bar]) -> int:
    """Insert or replace ``bars`` (one COPY and one statement); return how many were written."""
    if not bars:
        return 0
    async with conn.transaction():
        await conn.execute(_CREATE_STAGE)
        await conn.copy_records_to_table(_STAGE, records=list(bars), columns=Bar._fields)
        await conn.execute(_UPSERT)
    return len(bars)
