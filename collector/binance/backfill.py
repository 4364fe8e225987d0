"""Fill missing closed minutes from ``GET /fapi/v1/klines``, and seed higher-timeframe bars.

Missing minutes are found by open time in the ``MinuteLedger`` (what was emitted or stored), never
by counting messages: a closed message is not guaranteed for every minute (events.md).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Never

from tqdm import tqdm

from collector.bars import SEED_BARS, Bar
from collector.binance.ledger import MinuteLedger
from collector.binance.models import BinanceKline, MalformedFrame, to_candle
from collector.binance.rest import KLINES_MAX_LIMIT, BinanceRest
from screener.db.bars import INTERVAL_MINUTES
from screener.events.models import MINUTE_MS, Candle

log = logging.getLogger(__name__)

EmitCandles = Callable[[Sequence[Candle]], Awaitable[None]]


def _progress(total: int, desc: str, unit: str) -> tqdm[Never]:
    # A progress bar on a terminal; elsewhere (containers, CI) plain log lines from the caller.
    return tqdm(total=total, desc=desc, unit=unit, disable=not sys.stderr.isatty(), leave=False)


class Backfiller:
    """Find and fill the gaps of every tracked symbol up to the last closed minute."""

    def __init__(self, rest: BinanceRest, ledger: MinuteLedger, emit: EmitCandles, *, concurrency: int = 4) -> None:
        self._rest = rest
        self._ledger = ledger
        self._emit = emit
        self._concurrency = concurrency
        self.filled = 0

    async def fill(
        self, symbols: Sequence[str], up_to: int, *, on_symbol_done: Callable[[str], None] | None = None
    ) -> int:
        """Emit every missing closed minute of ``symbols`` with open time <= ``up_to``; return how many.

        ``on_symbol_done`` is called with each symbol as soon as its gaps are filled.
        """
        work = {s: m for s in symbols if (m := self._ledger.missing(s, up_to))}
        if not work:
            return 0
        total = sum(len(m) for m in work.values())
        log.info("backfill: %d missing minutes of %d symbols up to %d", total, len(work), up_to)
        semaphore = asyncio.Semaphore(self._concurrency)
        done = 0
        step = max(1, len(work) // 10)
        with _progress(total, "backfill", "min") as bar:

            async def one(symbol: str, minutes: list[int]) -> int:
                nonlocal done
                async with semaphore:
                    count = await self._fill_symbol(symbol, minutes, up_to)
                if on_symbol_done is not None:
                    on_symbol_done(symbol)
                bar.update(len(minutes))
                done += 1
                if done % step == 0 or done == len(work):
                    log.info("backfill: %d/%d symbols, %d minutes emitted", done, len(work), self.filled)
                return count

            counts = await asyncio.gather(*(one(s, m) for s, m in work.items()))
        return sum(counts)

    async def _fill_symbol(self, symbol: str, minutes: list[int], up_to: int) -> int:
        emitted = 0
        start = minutes[0]
        while start <= minutes[-1]:
            span = min(KLINES_MAX_LIMIT, (minutes[-1] - start) // MINUTE_MS + 1)
            end = start + (span - 1) * MINUTE_MS
            rows = await self._rest.klines(symbol, "1m", start_ms=start, end_ms=end, limit=span)
            candles = []
            for row in rows:
                try:
                    kline = BinanceKline.from_rest_row(symbol, "1m", row)
                except MalformedFrame as exc:
                    log.warning("backfill %s: %s", symbol, exc.reason)
                    continue
                # The last row may be the forming minute; only closed minutes are emitted.
                if start <= kline.t <= min(end, up_to) and self._ledger.claim(symbol, kline.t):
                    candles.append(to_candle(kline, closed=True))
            if candles:
                try:
                    await self._emit(candles)
                except BaseException:
                    self._ledger.release(symbol, [c.open_time for c in candles])
                    raise
                emitted += len(candles)
            # Minutes the exchange has no row for, before its newest row, will never exist (a
            # listing's first day, a trading halt): they are settled rather than asked for forever.
            newest = max((int(r[0]) for r in rows), default=None)
            if newest is None and end < up_to:
                newest = end  # a span of closed minutes with no row at all: before the listing
            if newest is not None:
                settled = [m for m in minutes if start <= m <= min(newest, end, up_to)]
                self._ledger.done(symbol, settled)
            start = end + MINUTE_MS
        self.filled += emitted
        return emitted


async def seed_bars(rest: BinanceRest, symbols: Sequence[str], now_ms: int, *, concurrency: int = 2) -> list[Bar]:
    """Fetch the closed higher-timeframe bars of ``symbols`` from Binance's native intervals.

    One request per symbol and timeframe (``SEED_BARS`` bars, weight 2 each), in the background
    half of the weight budget so gap fills of live minutes are never delayed by it. The live
    collector seeds each symbol just before its first backfilled minutes (the backfill's progress
    covers it).
    """
    semaphore = asyncio.Semaphore(concurrency)
    bars: list[Bar] = []

    async def one(symbol: str, interval: str) -> None:
        async with semaphore:
            rows = await rest.klines(symbol, interval, limit=SEED_BARS[interval] + 1, background=True)
        span = INTERVAL_MINUTES[interval] * MINUTE_MS
        for row in rows:
            if int(row[0]) + span <= now_ms:  # closed bars only
                bars.append(
                    Bar(symbol, interval, int(row[0]), float(row[1]), float(row[2]), float(row[3]),
                        float(row[4]), float(row[5]), float(row[7]))
                )  # fmt: skip

    await asyncio.gather(*(one(s, i) for s in symbols for i in SEED_BARS))
    log.debug("seeded %d bars of %d symbols", len(bars), len(symbols))
    return bars
