"""Real klines for the calculator tests, read straight from the recorded CSV files, row by row.

The 2025-05 set has no quote volume: it is derived as volume * (high + low + close) / 3 (the typical
price), and marked ``quote_volume_derived``.
"""

from __future__ import annotations

import csv
import gzip
import random
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from screener.db.partitions import PartitionCache
from screener.events.models import MINUTE_MS, Candle

SET_2026 = "binance-um-2026-02"
SET_2025 = "binance-um-2025-05"


def csv_path(klines_dir: Path, data_set: str, base: str) -> Path:
    """Return the CSV file of ``base`` (e.g. "DOTUSDT") in ``data_set``."""
    pattern = f"{base}-1m-*.csv.gz"
    matches = sorted((klines_dir / data_set).glob(pattern))
    assert matches, f"no {pattern} in {klines_dir / data_set}"
    return matches[0]


def read_candles(
    path: Path, *, symbol: str | None = None, limit: int | None = None, skip: int = 0, scale: float = 1.0
) -> list[Candle]:
    """Return the CSV's rows as candles; prices times ``scale``, base volume divided by it.

    Scaling keeps the quote (USDT) volume of the real series, so a coin priced 1e-5 trades as much.
    """
    name = symbol or path.name.split("-")[0]
    candles: list[Candle] = []
    with gzip.open(path, "rt") as handle:
        for i, row in enumerate(csv.DictReader(handle)):
            if i < skip:
                continue
            if limit is not None and len(candles) >= limit:
                break
            o, h, lo, c = (float(row[k]) * scale for k in ("open", "high", "low", "close"))
            volume = float(row["volume"]) / scale
            derived = "quote_volume" not in row
            quote = volume * (h + lo + c) / 3 if derived else float(row["quote_volume"])
            candles.append(
                Candle(
                    symbol=name,
                    open_time=int(row["open_time"]),
                    open=o,
                    high=h,
                    low=lo,
                    close=c,
                    volume=volume,
                    quote_volume=quote,
                    trades=int(row.get("count") or 0),
                    quote_volume_derived=derived,
                )
            )
    return candles


def with_gaps(
    candles: list[Candle], seed: int, rate: float = 0.03, holes: Iterable[tuple[int, int]] = ()
) -> list[Candle]:
    """Drop about ``rate`` of the minutes at random, and every index in the ``holes`` ranges."""
    rng = random.Random(seed)
    dropped = {i for start, stop in holes for i in range(start, stop)}
    return [c for i, c in enumerate(candles) if i not in dropped and rng.random() >= rate]


def bar_closes(candles: Sequence[Candle], minutes: int, upto: int) -> list[float]:
    """Return the closes of every clock-aligned bar of ``minutes`` up to minute ``upto`` (the forming bar last)."""
    closes: dict[int, float] = {}
    for c in candles:
        if c.open_time > upto:
            break
        closes[c.open_time // (minutes * MINUTE_MS)] = c.close  # the latest minute closes its bar
    return list(closes.values())


async def store_minutes(pg: asyncpg.Connection, candles: Sequence[Candle]) -> None:
    """Store ``candles`` in ``candles_1m`` with one COPY (the recorder's rows, no roll-up of bars)."""
    await PartitionCache().ensure(pg, "candles_1m", [c.open_time for c in candles])
    await pg.copy_records_to_table(
        "candles_1m",
        records=[
            (c.symbol, _instant(c.open_time), c.open, c.high, c.low, c.close, c.volume, c.quote_volume, c.trades)
            for c in candles
        ],
        columns=["symbol", "open_time", "open", "high", "low", "close", "volume", "quote_volume", "trades"],
    )


def _instant(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)
