"""The calculator's per-symbol rings in memory, for in-process replays: no Redis, same bytes, same compute.

Every write goes through ``state.candles.apply_candles``, the numpy half of ``state/write_candles.lua``
that the calculator's mirror uses too, so ``functions.calculator.compute.compute_snapshots`` sees
exactly the ``SymbolState`` it would read back from Redis in the live pipeline. There is one copy of
the ring-write rules.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from screener.events.models import Candle
from state.candles import SymbolState, apply_candles, empty_state, pack_candles


class MemoryCandleState:
    """Every symbol's 1-minute ring, previous-lap volumes and bar rings, as numpy arrays."""

    def __init__(self) -> None:
        self._states: dict[str, SymbolState] = {}

    def write(self, candle: Candle) -> None:
        """Store ``candle`` by the write script's rules."""
        apply_candles(self._state(candle.symbol), pack_candles([candle]))

    def write_row(self, symbol: str, row: Sequence[float]) -> None:
        """Store one candle given as a ring row (``layout.CANDLE_FIELDS`` order)."""
        apply_candles(self._state(symbol), np.asarray(row, dtype="<f8").tobytes())

    def state(self, symbol: str) -> SymbolState:
        """Return ``symbol``'s state (raise ``KeyError`` if nothing was written for it)."""
        return self._states[symbol]

    def _state(self, symbol: str) -> SymbolState:
        state = self._states.get(symbol)
        if state is None:
            state = self._states[symbol] = empty_state(symbol)
        return state
