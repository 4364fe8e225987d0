"""Rebuild the rings of symbols that have none in Redis from PostgreSQL, so metrics are complete at once.

After a first start or a flush, each symbol's last two laps of minutes come from ``candles_1m`` (the
1-minute ring and its previous lap) and its older bars from ``bars`` (the seeded native klines). The
seeds are merged first and the minutes after, oldest first, through the same write script as live
candles: a bar that both sources know gets the seed's values, updated by the stored minutes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import asyncpg
import redis.asyncio as aioredis

from screener.events.models import MINUTE_MS, Candle
from state import layout
from state.candles import CandleStore, SeedBar

log = logging.getLogger(__name__)

_LAPS_OF_MINUTES = 2
SYMBOLS_PER_ROUND_TRIP = 32

_NEWEST = "SELECT symbol, max(open_time) AS newest FROM candles_1m WHERE symbol = ANY($1::text[]) GROUP BY symbol"
_CANDLES = """
SELECT symbol, open_time, open, high, low, close, volume, quote_volume, trades
FROM candles_1m WHERE symbol = $1 AND open_time > $2 AND open_time <= $3 ORDER BY open_time
"""
_BARS = """
SELECT interval, open_time, open, close FROM bars
WHERE symbol = $1 AND interval = $2 AND open_time >= $3 AND open_time <= $4
"""


def _ms(instant: datetime) -> int:
    return round(instant.timestamp() * 1000)


def _instant(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


async def missing_symbols(redis: aioredis.Redis, symbols: Sequence[str]) -> list[str]:
    """Return the ``symbols`` whose 1-minute ring is not in Redis (one round trip)."""
    async with redis.pipeline(transaction=False) as pipe:
        for symbol in symbols:
            pipe.exists(layout.candles_key(symbol))
        found = await pipe.execute()
    return [s for s, exists in zip(symbols, found, strict=True) if not exists]


async def recent_symbols(conn: asyncpg.Connection, hours: int = 2) -> list[str]:
    """Return the symbols with candles in the last ``hours`` before the newest stored candle."""
    rows = await conn.fetch(
        "SELECT DISTINCT symbol FROM candles_1m WHERE open_time > "
        "(SELECT max(open_time) FROM candles_1m) - make_interval(hours => $1) ORDER BY symbol",
        hours,
    )
    return [r["symbol"] for r in rows]


async def warm_start(
    redis: aioredis.Redis,
    conn: asyncpg.Connection,
    symbols: Sequence[str] | None = None,
    *,
    force: bool = False,
    until: Mapping[str, int] | None = None,
    bars_as_of: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """Rebuild the rings of ``symbols`` (None: those with recent candles) that Redis lacks.

    With ``force``, rebuild even symbols that have rings (writes are idempotent). ``until`` caps a
    symbol's newest minute loaded: the recorder may have stored minutes the calculator has not
    computed yet, and rings pushed past them would change what those minutes read. The stored bars
    loaded are those closed before the bar of the newest minute loaded, or of ``bars_as_of``'s
    minute for the symbols it names. Return the number of minutes written per rebuilt symbol.
    """
    names = list(symbols) if symbols is not None else await recent_symbols(conn)
    todo = names if force else await missing_symbols(redis, names)
    if not todo:
        return {}
    newest = {r["symbol"]: _ms(r["newest"]) for r in await conn.fetch(_NEWEST, todo)}
    if until is not None:
        newest = {s: min(ms, until[s]) if s in until else ms for s, ms in newest.items()}
    as_of = {**newest, **(bars_as_of or {})}
    store = CandleStore(redis)
    written: dict[str, int] = {}
    for start in range(0, len(todo), SYMBOLS_PER_ROUND_TRIP):
        chunk = [s for s in todo[start : start + SYMBOLS_PER_ROUND_TRIP] if s in as_of]
        candles: list[Candle] = []
        seeds: list[tuple[str, SeedBar]] = []
        for symbol in chunk:
            rows = []
            if (last := newest.get(symbol)) is not None:
                rows = await conn.fetch(
                    _CANDLES, symbol, _instant(last - _LAPS_OF_MINUTES * layout.CAPACITY * MINUTE_MS), _instant(last)
                )
            candles += [_candle(symbol, row) for row in rows]
            written[symbol] = len(rows)
            seeds += [(symbol, bar) for bar in await _seed_bars(conn, symbol, as_of[symbol])]
        await store.write(candles, read_back=False, seeds=seeds)
    log.info("warm start: rebuilt %d symbols from PostgreSQL (%d minutes)", len(written), sum(written.values()))
    return written


async def _seed_bars(conn: asyncpg.Connection, symbol: str, newest_ms: int) -> list[SeedBar]:
    bars = []
    for ring in layout.BAR_RINGS:
        forming = newest_ms - newest_ms % ring.span_ms
        oldest = forming - (ring.capacity - 1) * ring.span_ms
        # Only closed bars: the forming one is built from the minutes.
        rows = await conn.fetch(_BARS, symbol, ring.timeframe, _instant(oldest), _instant(forming - ring.span_ms))
        bars += [SeedBar(ring.timeframe, _ms(r["open_time"]), r["open"], r["close"]) for r in rows]
    return bars


def _candle(symbol: str, row: asyncpg.Record) -> Candle:
    return Candle.model_construct(
        symbol=symbol,
        open_time=_ms(row["open_time"]),
        open=row["open"],
        high=row["high"],
        low=row["low"],
        close=row["close"],
        volume=row["volume"],
        quote_volume=row["quote_volume"],
        trades=row["trades"],
    )
