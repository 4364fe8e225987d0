"""Recorded klines as blocks of whole UTC days on a dense minute grid, read file by file as time advances.

The backtest computes its metrics a block at a time (``functions.calculator.columns``). A grid covers
a block of whole days and the minutes of context before it; each symbol's files (one per month, say)
are read only when the blocks reach them and dropped once behind, so memory holds a few files per
symbol however long the recording is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from marketdata.klines import KlineFileError, KlineSeries, kline_files, symbol_of
from marketdata.parsed_cache import read_cached
from screener.events.models import MINUTE_MS

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

DAY_MS = 1440 * MINUTE_MS
# The columns of a grid, from KlineSeries.VALUE_COLUMNS.
GRID_COLUMNS = ("open", "high", "low", "close", "volume", "quote_volume")
_VALUE_INDEX = [KlineSeries.VALUE_COLUMNS.index(name) for name in GRID_COLUMNS]


@dataclass(frozen=True)
class Grid:
    """S symbols' candles for the minutes ``first`` .. ``first + (W - 1) minutes``: ``values`` (6, S, W).

    ``values`` holds GRID_COLUMNS; a minute without a candle has high -inf, low +inf, volumes 0 and
    open and close 0.
    """

    first: int
    values: FloatArray
    present: BoolArray


@dataclass
class _SymbolFiles:
    """One symbol's files not read yet, and the rows read and not yet behind the blocks."""

    pending: list[Path]
    cache: Path | None
    open_time: IntArray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    values: FloatArray = field(default_factory=lambda: np.empty((0, len(GRID_COLUMNS))))
    derived: bool = False

    def read_until(self, end: int) -> None:
        """Read files until the rows reach ``end`` (ms) or no file is left."""
        while self.pending and (len(self.open_time) == 0 or self.open_time[-1] < end - MINUTE_MS):
            series = read_cached(self.pending.pop(0), self.cache)
            self.derived |= series.quote_volume_derived
            self.open_time = np.concatenate((self.open_time, series.open_time))
            self.values = np.concatenate((self.values, series.values[:, _VALUE_INDEX]))
            if np.any(np.diff(self.open_time) <= 0):  # files out of order or overlapping: sort, keep the first
                order = np.argsort(self.open_time, kind="stable")
                self.open_time, self.values = self.open_time[order], self.values[order]
                keep = np.concatenate(([True], np.diff(self.open_time) != 0))
                self.open_time, self.values = self.open_time[keep], self.values[keep]

    def drop_before(self, start: int) -> None:
        """Forget the rows before ``start`` (ms)."""
        cut = int(np.searchsorted(self.open_time, start))
        if cut:
            self.open_time, self.values = self.open_time[cut:], self.values[cut:]

    @property
    def exhausted(self) -> bool:
        """Return whether every file was read."""
        return not self.pending


class MarketBlocks:
    """The kline files of a folder (or of some of its symbols), served as grids of whole days."""

    def __init__(self, folder: Path, symbols: Sequence[str] | None = None, cache: Path | None = None) -> None:
        """Index the files of ``folder``; ``cache`` (a folder) keeps their parsed arrays between runs."""
        wanted = {s.upper() for s in symbols} if symbols else None
        files: dict[str, list[Path]] = {}
        for path in kline_files(folder):
            symbol = symbol_of(path)
            if wanted is None or symbol in wanted:
                files.setdefault(symbol, []).append(path)
        if not files:
            raise KlineFileError(f"{folder}: no kline files" + (f" for {sorted(wanted)}" if wanted else ""))
        self.symbols = sorted(files)
        self._cache = cache
        self._files = {s: _SymbolFiles(sorted(files[s]), cache) for s in self.symbols}
        for state in self._files.values():  # the first file of each symbol tells where it begins
            state.read_until(0)
        self.first = min(int(s.open_time[0]) for s in self._files.values() if len(s.open_time))

    def quote_volume_derived(self) -> list[str]:
        """Return the symbols whose quote volume was derived (the files read so far had none)."""
        return [s for s, state in self._files.items() if state.derived]

    def last(self) -> int:
        """Return the newest minute (open time) of every file, reading every symbol's last file once."""
        newest = 0
        for state in self._files.values():
            if state.pending:
                newest = max(newest, read_cached(state.pending[-1], self._cache).last_open_time)
            elif len(state.open_time):
                newest = max(newest, int(state.open_time[-1]))
        return newest

    def rows_held(self) -> int:
        """Return the rows read and kept in memory, every symbol together."""
        return sum(len(state.open_time) for state in self._files.values())

    def drop_before(self, start: int) -> None:
        """Forget every row before ``start`` (ms): the blocks have moved past it."""
        for state in self._files.values():
            state.drop_before(start)

    def grid(self, symbols: Sequence[str], first: int, end: int) -> Grid:
        """Return the grid of ``symbols`` for the minutes ``first <= t < end``."""
        width = (end - first) // MINUTE_MS
        values = np.zeros((len(GRID_COLUMNS), len(symbols), width))
        values[1], values[2] = -np.inf, np.inf
        present = np.zeros((len(symbols), width), dtype=bool)
        for row, symbol in enumerate(symbols):
            state = self._files[symbol]
            state.read_until(end)
            lo, hi = np.searchsorted(state.open_time, [first, end]).tolist()
            if hi == lo:
                continue
            at = (state.open_time[lo:hi] - first) // MINUTE_MS
            begin, last = int(at[0]), int(at[-1])
            # Rows without a gap fill a slice (the usual case); otherwise each lands at its minute.
            where: slice | IntArray = slice(begin, last + 1) if last - begin == hi - lo - 1 else at
            values[:, row, where] = state.values[lo:hi].T
            present[row, where] = True
        return Grid(first, values, present)
