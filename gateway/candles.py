"""Klines, 24h tickers and the symbol catalogue, computed from our own ``candles_1m`` and ``bars``.

``candles_1m`` keeps the retention's 48 hours; the closed 5m..1d bars the replay's warm-up and the
live collector's seeding store in ``bars`` reach 14 days and more back, so klines of 5m and up come
from the bars wherever the candles do not cover a whole bucket. Numbers are spelled with the
symbol's tick and step size (``gateway.precision``).

Every query is bounded by (symbol, open_time) ranges so PostgreSQL uses the primary key of each day
partition and prunes the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from gateway.precision import Formatter, percent
from screener.db.bars import INTERVAL_MINUTES
from screener.events.models import MINUTE_MS

# Binance's kline intervals from 1m to 1d, in minutes.
INTERVALS: dict[str, int] = {
    "1m": 1,
    "3m": 3,
    "5m": 5,
    "15m": 15,
    "30m": 30,
    "1h": 60,
    "2h": 120,
    "4h": 240,
    "6h": 360,
    "8h": 480,
    "12h": 720,
    "1d": 1440,
}
DAY_MINUTES = 1440

# The stored bars (collector/bars.py, table ``bars``) each interval is built from: itself where it is
# stored, else the longest stored interval that divides it. 1m and 3m come from the candles alone.
BAR_SOURCES: dict[str, str] = {
    "5m": "5m",
    "15m": "15m",
    "30m": "15m",
    "1h": "1h",
    "2h": "1h",
    "4h": "4h",
    "6h": "1h",
    "8h": "8h",
    "12h": "4h",
    "1d": "1d",
}

# Both queries are bounded by a span of at most 1,500 buckets of the interval.
_BUCKETS = """
SELECT floor(extract(epoch FROM open_time) / $2)::bigint * $2 AS bucket,
       (array_agg(open ORDER BY open_time))[1] AS open, max(high) AS high, min(low) AS low,
       (array_agg(close ORDER BY open_time DESC))[1] AS close,
       sum(volume) AS volume, sum(quote_volume) AS quote_volume, sum(trades)::bigint AS trades,
       sum(taker_buy_volume) AS taker_buy_volume, sum(taker_buy_quote_volume) AS taker_buy_quote_volume,
       count(*) AS minutes
FROM candles_1m
WHERE symbol = $1 AND open_time >= $3 AND open_time < $4
GROUP BY bucket
"""
# Stored bars carry no trade count or taker volumes: those are 0 in the klines built from them.
_BAR_BUCKETS = """
SELECT floor(extract(epoch FROM open_time) / $3)::bigint * $3 AS bucket,
       (array_agg(open ORDER BY open_time))[1] AS open, max(high) AS high, min(low) AS low,
       (array_agg(close ORDER BY open_time DESC))[1] AS close,
       sum(volume) AS volume, sum(quote_volume) AS quote_volume, 0::bigint AS trades,
       0::float8 AS taker_buy_volume, 0::float8 AS taker_buy_quote_volume, count(*) AS parts
FROM bars
WHERE symbol = $1 AND interval = $2 AND open_time >= $4 AND open_time < $5
GROUP BY bucket
"""


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _ms(instant: datetime) -> int:
    return int(instant.timestamp() * 1000)


async def klines(
    conn: asyncpg.Connection,
    symbol: str,
    interval: str,
    *,
    start_ms: int | None,
    end_ms: int | None,
    limit: int,
) -> list[list[Any]]:
    """Return bars in Binance's kline array format, oldest first.

    Without ``start_ms`` the newest ``limit`` bars up to ``end_ms`` (or the latest data) are
    returned, like Binance's REST API; the last bar may still be forming. Each bar comes from the
    1-minute candles when they cover its whole span (or nothing else has it: the forming bar), else
    from the stored closed bars (``BAR_SOURCES``), which reach back 14 days past the candles' 48 hours.
    """
    step_ms = INTERVALS[interval] * MINUTE_MS
    source = BAR_SOURCES.get(interval)
    if start_ms is not None:
        first = -(-start_ms // step_ms) * step_ms
        stop = first + limit * step_ms if end_ms is None else min(end_ms + 1, first + limit * step_ms)
    else:
        latest = await _latest_open_ms(conn, symbol, source)
        if latest is None:
            return []
        stop = latest + MINUTE_MS if end_ms is None else min(end_ms + 1, latest + MINUTE_MS)
        last_bucket = (stop - 1) // step_ms * step_ms
        first = last_bucket - (limit - 1) * step_ms
    if stop <= first:
        return []
    span = (_ts(first), _ts(stop))
    minute_rows = await conn.fetch(_BUCKETS, symbol, step_ms // 1000, *span)
    by_bucket = {int(r["bucket"]) * 1000: r for r in minute_rows}
    if source is not None:
        parts = INTERVALS[interval] // INTERVAL_MINUTES[source]
        for row in await conn.fetch(_BAR_BUCKETS, symbol, source, step_ms // 1000, *span):
            open_ms = int(row["bucket"]) * 1000
            minutes = by_bucket.get(open_ms)
            if int(row["parts"]) == parts and (minutes is None or int(minutes["minutes"]) < INTERVALS[interval]):
                by_bucket[open_ms] = row
    chosen = sorted(by_bucket)
    chosen = chosen[:limit] if start_ms is not None else chosen[-limit:]
    spell = Formatter(symbol)
    return [_kline(open_ms, by_bucket[open_ms], step_ms, spell) for open_ms in chosen]


async def _latest_open_ms(conn: asyncpg.Connection, symbol: str, source: str | None) -> int | None:
    """Return the open time of the newest stored minute of ``symbol`` (candles, else the end of its bars)."""
    latest = await conn.fetchval("SELECT max(open_time) FROM candles_1m WHERE symbol = $1", symbol)
    if latest is not None or source is None:
        return None if latest is None else _ms(latest)
    newest_bar = await conn.fetchval(
        "SELECT max(open_time) FROM bars WHERE symbol = $1 AND interval = $2", symbol, source
    )
    if newest_bar is None:
        return None
    return _ms(newest_bar) + (INTERVAL_MINUTES[source] - 1) * MINUTE_MS


async def is_known(conn: asyncpg.Connection, symbol: str) -> bool:
    """Return whether anything of ``symbol`` is stored (candles or bars)."""
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM candles_1m WHERE symbol = $1) "
            "OR EXISTS (SELECT 1 FROM bars WHERE symbol = $1)",
            symbol,
        )
    )


def _kline(open_ms: int, row: asyncpg.Record, step_ms: int, spell: Formatter) -> list[Any]:
    return [
        open_ms,
        spell.price(row["open"]),
        spell.price(row["high"]),
        spell.price(row["low"]),
        spell.price(row["close"]),
        spell.quantity(row["volume"]),
        open_ms + step_ms - 1,
        spell.quote(row["quote_volume"]),
        int(row["trades"]),
        spell.quantity(row["taker_buy_volume"]),
        spell.quote(row["taker_buy_quote_volume"]),
        "0",
    ]


async def candle_symbols(conn: asyncpg.Connection) -> list[str]:
    """Return every symbol with candles (a skip scan over the primary key, not a full DISTINCT)."""
    rows = await conn.fetch(
        """WITH RECURSIVE s AS (
               (SELECT symbol FROM candles_1m ORDER BY symbol LIMIT 1)
               UNION ALL
               SELECT (SELECT c.symbol FROM candles_1m c WHERE c.symbol > s.symbol ORDER BY c.symbol LIMIT 1)
               FROM s WHERE s.symbol IS NOT NULL)
           SELECT symbol FROM s WHERE symbol IS NOT NULL"""
    )
    return [r["symbol"] for r in rows]


async def tickers(conn: asyncpg.Connection, symbols: list[str]) -> list[dict[str, Any]]:
    """Return Binance-style 24h tickers over the 1440 minutes ending at each symbol's latest candle."""
    rows = await conn.fetch(
        """WITH last AS (
               SELECT s.symbol, (SELECT max(open_time) FROM candles_1m c WHERE c.symbol = s.symbol) AS t
               FROM unnest($1::text[]) AS s(symbol))
           SELECT last.symbol, last.t, agg.*
           FROM last, LATERAL (
               SELECT (array_agg(open ORDER BY open_time))[1] AS open,
                      (array_agg(close ORDER BY open_time DESC))[1] AS close,
                      max(high) AS high, min(low) AS low, sum(volume) AS volume,
                      sum(quote_volume) AS quote_volume, sum(trades)::bigint AS trades
               FROM candles_1m c
               WHERE c.symbol = last.symbol AND c.open_time > last.t - interval '1440 minutes'
                 AND c.open_time <= last.t) agg
           WHERE last.t IS NOT NULL
           ORDER BY last.symbol""",
        symbols,
    )
    return [_ticker(r) for r in rows]


def _ticker(row: asyncpg.Record) -> dict[str, Any]:
    last_ms = _ms(row["t"])
    open_price, close = row["open"], row["close"]
    volume, quote_volume = row["volume"], row["quote_volume"]
    spell = Formatter(row["symbol"])
    return {
        "symbol": row["symbol"],
        "priceChange": spell.price(close - open_price),
        "priceChangePercent": percent((close / open_price - 1) * 100),
        "weightedAvgPrice": spell.price(quote_volume / volume if volume else close),
        "lastPrice": spell.price(close),
        "openPrice": spell.price(open_price),
        "highPrice": spell.price(row["high"]),
        "lowPrice": spell.price(row["low"]),
        "volume": spell.quantity(volume),
        "quoteVolume": spell.quote(quote_volume),
        "openTime": last_ms - (DAY_MINUTES - 1) * MINUTE_MS,
        "closeTime": last_ms + MINUTE_MS - 1,
        "count": int(row["trades"]),
    }


@dataclass(frozen=True)
class SymbolCoverage:
    """One tracked symbol's stored span."""

    symbol: str
    first_minute: int
    last_minute: int
    candles: int

    @property
    def coverage(self) -> float:
        """Return the share of minutes between first and last that have a candle."""
        span = (self.last_minute - self.first_minute) // MINUTE_MS + 1
        return self.candles / span if span > 0 else 0.0


async def symbol_coverage(conn: asyncpg.Connection) -> list[SymbolCoverage]:
    """Return each symbol's first and last stored minute and candle count."""
    rows = await conn.fetch(
        "SELECT symbol, min(open_time) AS first, max(open_time) AS last, count(*) AS n "
        "FROM candles_1m GROUP BY symbol ORDER BY symbol"
    )
    return [SymbolCoverage(r["symbol"], _ms(r["first"]), _ms(r["last"]), int(r["n"])) for r in rows]
