"""Klines, 24h tickers and the symbol catalogue, computed from our own ``candles_1m``.

Every query is bounded by (symbol, open_time) ranges so PostgreSQL uses the primary key of each day
partition and prunes the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from gateway.views import decimal_text
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

_BUCKETS = """
SELECT floor(extract(epoch FROM open_time) / $2)::bigint * $2 AS bucket,
       (array_agg(open ORDER BY open_time))[1] AS open, max(high) AS high, min(low) AS low,
       (array_agg(close ORDER BY open_time DESC))[1] AS close,
       sum(volume) AS volume, sum(quote_volume) AS quote_volume, sum(trades)::bigint AS trades,
       sum(taker_buy_volume) AS taker_buy_volume, sum(taker_buy_quote_volume) AS taker_buy_quote_volume
FROM candles_1m
WHERE symbol = $1 AND open_time >= $3 AND open_time < $4
GROUP BY bucket ORDER BY bucket {order} LIMIT $5
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

    Without ``start_ms`` the newest ``limit`` bars up to ``end_ms`` (or the latest candle) are
    returned, like Binance's REST API; the last bar may still be forming.
    """
    step_ms = INTERVALS[interval] * MINUTE_MS
    if start_ms is not None:
        first = -(-start_ms // step_ms) * step_ms
        stop = first + limit * step_ms if end_ms is None else min(end_ms + 1, first + limit * step_ms)
        order = "ASC"
    else:
        latest = await conn.fetchval("SELECT max(open_time) FROM candles_1m WHERE symbol = $1", symbol)
        if latest is None:
            return []
        stop = _ms(latest) + MINUTE_MS if end_ms is None else min(end_ms + 1, _ms(latest) + MINUTE_MS)
        last_bucket = (stop - 1) // step_ms * step_ms
        first = last_bucket - (limit - 1) * step_ms
        order = "DESC"
    if stop <= first:
        return []
    rows = await conn.fetch(_BUCKETS.format(order=order), symbol, step_ms // 1000, _ts(first), _ts(stop), limit)
    if order == "DESC":
        rows = list(reversed(rows))
    return [_kline(r, step_ms) for r in rows]


def _kline(row: asyncpg.Record, step_ms: int) -> list[Any]:
    open_ms = int(row["bucket"]) * 1000
    return [
        open_ms,
        decimal_text(row["open"]),
        decimal_text(row["high"]),
        decimal_text(row["low"]),
        decimal_text(row["close"]),
        decimal_text(row["volume"]),
        open_ms + step_ms - 1,
        decimal_text(row["quote_volume"]),
        int(row["trades"]),
        decimal_text(row["taker_buy_volume"]),
        decimal_text(row["taker_buy_quote_volume"]),
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
    return {
        "symbol": row["symbol"],
        "priceChange": decimal_text(close - open_price),
        "priceChangePercent": decimal_text((close / open_price - 1) * 100),
        "weightedAvgPrice": decimal_text(quote_volume / volume if volume else close),
        "lastPrice": decimal_text(close),
        "openPrice": decimal_text(open_price),
        "highPrice": decimal_text(row["high"]),
        "lowPrice": decimal_text(row["low"]),
        "volume": decimal_text(volume),
        "quoteVolume": decimal_text(quote_volume),
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
