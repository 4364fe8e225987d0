"""The calculator's per-symbol rings in memory, for the backtest: no Redis, same bytes, same compute.

``MemoryCandleState.write_row`` mirrors ``state/write_candles.lua`` for candles written in time
order (the backtest's case), so ``functions.calculator.compute.compute_snapshots`` sees exactly the
``SymbolState`` it would read back from Redis in the live pipeline. Each timeframe's forming bar is
kept in Python floats and written into its ring when the bar is complete or a state is read, which
makes the warm-up over weeks of candles cheap.
"""

from __future__ import annotations

import math

import numpy as np

from screener.events.models import MINUTE_MS, Candle
from state import layout
from state.candles import SymbolState


class _FormingBar:
    """The newest bar of one ring: open minute, first and last minute offsets, open, close."""

    __slots__ = ("close", "first", "last", "open", "open_minute")

    def __init__(self) -> None:
        self.open_minute = -1
        self.first = self.last = 0
        self.open = self.close = 0.0


class _Rings:
    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.candles = np.zeros((layout.CAPACITY, len(layout.CANDLE_FIELDS)))
        self.previous = np.full(layout.CAPACITY, np.nan)
        self.bars = {r.timeframe: np.zeros((r.capacity, r.width)) for r in layout.BAR_RINGS}
        self.forming = {r.timeframe: _FormingBar() for r in layout.BAR_RINGS}

    def flush(self, ring: layout.BarRing) -> None:
        bar = self.forming[ring.timeframe]
        if bar.open_minute >= 0:
            at = (bar.open_minute // ring.minutes) % ring.capacity
            tag = bar.open_minute * layout.TAG_MINUTE + bar.first * layout.TAG_OFFSET + bar.last
            # As the script: the open only where the ring keeps it (the tag's offsets are kept anyway).
            self.bars[ring.timeframe][at] = (tag, bar.open, bar.close) if ring.keeps_open else (tag, bar.close)

    def state(self) -> SymbolState:
        for ring in layout.BAR_RINGS:
            self.flush(ring)
        return SymbolState(self.symbol, self.candles, self.previous, self.bars)


class MemoryCandleState:
    """Every symbol's 1-minute ring, previous-lap volumes and bar rings, as numpy arrays."""

    def __init__(self) -> None:
        self._rings: dict[str, _Rings] = {}

    def write(self, candle: Candle) -> None:
        """Store ``candle`` (newer than every stored minute of its symbol)."""
        row = (
            candle.open_time, candle.open, candle.high, candle.low, candle.close,
            candle.volume, candle.quote_volume, candle.trades,
        )  # fmt: skip
        self.write_row(candle.symbol, row)

    def write_row(self, symbol: str, row: list[float] | tuple[float, ...]) -> None:
        """Store one candle given as a ring row (``layout.CANDLE_FIELDS`` order), in time order."""
        rings = self._rings.get(symbol)
        if rings is None:
            rings = self._rings[symbol] = _Rings(symbol)
        open_time = int(row[layout.OPEN_TIME])
        minute = open_time // MINUTE_MS
        slot = minute % layout.CAPACITY
        held = rings.candles[slot, layout.OPEN_TIME]
        if held < open_time:
            # Evict the slot's minute; keep its quote volume only if it is exactly one lap older.
            lap_older = held == open_time - layout.CAPACITY * MINUTE_MS
            rings.previous[slot] = rings.candles[slot, layout.QUOTE_VOLUME] if lap_older else math.nan
        if held <= open_time:
            rings.candles[slot] = row
        open_, close = row[layout.OPEN], row[layout.CLOSE]
        for ring in layout.BAR_RINGS:
            bar = rings.forming[ring.timeframe]
            open_minute = minute - minute % ring.minutes
            k = minute - open_minute
            if open_minute == bar.open_minute:
                # The earliest minute seen gives the open, the latest the close (as the Lua script).
                if k <= bar.first:
                    bar.open, bar.first = open_, k
                if k >= bar.last:
                    bar.close, bar.last = close, k
            elif open_minute > bar.open_minute:
                rings.flush(ring)
                bar.open_minute, bar.first, bar.last, bar.open, bar.close = open_minute, k, k, open_, close

    def state(self, symbol: str) -> SymbolState:
        """Return ``symbol``'s state (raise ``KeyError`` if nothing was written for it)."""
        return self._rings[symbol].state()
