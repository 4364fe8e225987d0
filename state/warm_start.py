"""Rebuild the rings of symbols that have none in Redis from PostgreSQL, so metrics are complete at once.

After a first start or a flush, each symbol's last two laps of minutes come from ``candles_1m`` (the
1-minute ring and its previous lap) and its older bars from ``bars`` (seeded from Binance or the replay's
warm-up, then rolled up by the recorder as minutes are stored: ``screener.db.bars``). The
seeds are merged first and the minutes after, oldest first, through the same write script as live
candles: a bar that both sources know gets the seed's values, updated by the stored minutes.

The carried RSI and MACD state (docs/state.md, "Carried indicators") is computed from everything
stored: every minute of ``candles_1m`` and every bar of ``bars`` up to the state's bar, merged by
the rings' rules, run through ``carried.advance`` from the first bar (the backtest's recursion, so
the same bits as a Redis that saw every minute, when it saw the same history). It is set in the
same script call as the rings, before their minutes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import asyncpg
import numpy as np
import numpy.typing as npt
import redis.asyncio as aioredis

from functions.calculator import carried
from screener.events.models import MINUTE_MS, Candle
from state import layout
from state.candles import CandleStore, SeedBar

FloatArray = npt.NDArray[np.float64]

log = logging.getLogger(__name__)

_LAPS_OF_MINUTES = 2
SYMBOLS_PER_ROUND_TRIP = 32

_NEWEST = "SELECT symbol, max(open_time) AS newest FROM candles_1m WHERE symbol = ANY($1::text[]) GROUP BY symbol"
_CANDLES = """
SELECT symbol, open_time, open, high, low, close, volume, quote_volume, trades
FROM candles_1m WHERE symbol = $1 AND open_time > $2 AND open_time <= $3 ORDER BY open_time
"""
# Whole histories, as two arrays each: one row per symbol, however many minutes (the wire format
# of float8[] is a fraction of a row per minute's).
_HISTORY = """
SELECT coalesce(array_agg(floor(extract(epoch FROM open_time) / 60)::float8 ORDER BY open_time), '{}'),
       coalesce(array_agg(close ORDER BY open_time), '{}')
FROM candles_1m WHERE symbol = $1 AND open_time <= $2
"""
_BAR_HISTORY = """
SELECT coalesce(array_agg(floor(extract(epoch FROM open_time) / 60)::float8 ORDER BY open_time), '{}'),
       coalesce(array_agg(close ORDER BY open_time), '{}')
FROM bars WHERE symbol = $1 AND interval = $2 AND open_time <= $3
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
        carries: dict[str, bytes] = {}
        for symbol in chunk:
            rows = []
            if (last := newest.get(symbol)) is not None:
                rows = await conn.fetch(
                    _CANDLES, symbol, _instant(last - _LAPS_OF_MINUTES * layout.CAPACITY * MINUTE_MS), _instant(last)
                )
            candles += [_candle(symbol, row) for row in rows]
            written[symbol] = len(rows)
            seeds += [(symbol, bar) for bar in await _seed_bars(conn, symbol, as_of[symbol])]
            # With no minute stored yet, the state is that of the seeds, just before the first minute.
            carry_newest = last if last is not None else as_of[symbol] - MINUTE_MS
            carries[symbol] = (await _carry(conn, symbol, carry_newest)).astype("<f8").tobytes()
        await store.write(candles, read_back=False, seeds=seeds, carries=carries)
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


async def _carry(conn: asyncpg.Connection, symbol: str, newest_ms: int) -> FloatArray:
    """Return the carried state (``layout.CARRY_WIDTH``) of ``symbol`` with ``newest_ms`` the newest minute written.

    Each timeframe's state takes in every bar the system holds up to ``layout.carry_bar``: the bars
    of ``candles_1m``'s minutes (the latest stored minute closes a bar) and the seeded ``bars``.
    """
    newest = newest_ms // MINUTE_MS
    row = await conn.fetchrow(_HISTORY, symbol, _instant(newest_ms))
    minutes = np.asarray(row[0], dtype=np.float64)
    closes = np.asarray(row[1], dtype=np.float64)
    record = np.zeros(layout.CARRY_WIDTH)
    record[layout.CARRY_NEWEST] = newest
    for i, (timeframe, span) in enumerate(layout.CARRY_TIMEFRAMES):
        upto = layout.carry_bar(newest, span)
        seeded = (np.empty(0), np.empty(0))
        if timeframe in layout.BAR_RING_BY_TIMEFRAME:
            bars = await conn.fetchrow(_BAR_HISTORY, symbol, timeframe, _instant(int(upto) * MINUTE_MS))
            seeded = (np.asarray(bars[0], dtype=np.float64), np.asarray(bars[1], dtype=np.float64))
        opens, bar_closes = merged_bar_closes(minutes, closes, span, *seeded)
        taken = bar_closes[opens <= upto]
        state = carried.advance(carried.CarriedState.empty(1), taken[None, :], np.array([len(taken)], dtype=np.int64))[
            :, 0, -1
        ]
        o = layout.carry_offset(i)
        record[o] = upto
        record[o + 1 : o + 1 + layout.CARRY_STATE_FIELDS] = state
    return record


def merged_bar_closes(
    minutes: FloatArray, closes: FloatArray, span: int, seed_opens: FloatArray, seed_closes: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Return the open minute and close of every bar of ``span`` minutes, oldest first, by the rings' rules.

    ``minutes`` (sorted) and ``closes`` are stored minutes; ``seed_opens``/``seed_closes`` seeded bars.
    A bar's latest minute closes it; a seed counts as its bar's last minute (state/write_candles.lua),
    so only a stored last minute overrides a seed's close.
    """
    ids = np.floor(minutes / span)
    last = np.ones(len(ids), dtype=bool)
    last[:-1] = ids[1:] != ids[:-1]  # the latest stored minute of each bar
    opens, bar_closes = ids[last] * span, closes[last]
    if not len(seed_opens):
        return opens, bar_closes
    complete = minutes[last] == opens + span - 1
    all_opens = np.union1d(opens, seed_opens)
    out = np.empty(len(all_opens))
    out[np.searchsorted(all_opens, seed_opens)] = seed_closes
    from_minutes = np.searchsorted(all_opens, opens)
    unseeded = ~np.isin(opens, seed_opens)
    wins = complete | unseeded
    out[from_minutes[wins]] = bar_closes[wins]
    return all_opens, out


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
