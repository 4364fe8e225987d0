"""Recorded klines as blocks of whole UTC days on a dense minute grid, read from the parsed files by span.

The backtest computes its metrics a block at a time (``functions.calculator.columns``). A grid covers
a block of whole days and the minutes of context before it; every file is parsed once into a cache
of binary rows (``marketdata.parsed_cache``) and each grid reads only its own minutes from there,
so memory holds one grid however many symbols and months the recording has.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from marketdata.klines import KlineFileError, files_by_symbol, report_overlaps
from marketdata.parsed_cache import COLUMNS, CachedFile, cached_file
from marketdata.parsed_cache import DAY_MS as DAY_MS  # noqa: PLC0414 (re-exported: the unit of blocks)
from screener.events.models import MINUTE_MS

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

# The columns of a grid: those the parsed files keep.
GRID_COLUMNS = COLUMNS
_VALUE_INDEX = list(range(len(GRID_COLUMNS)))
# What a minute without a candle holds in each column (Grid).
_NEUTRAL = (0.0, -np.inf, np.inf, 0.0, 0.0, 0.0)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Grid:
    """S symbols' candles for the minutes ``first`` .. ``first + (W - 1) minutes``: ``values`` (6, S, W).

    ``values`` holds GRID_COLUMNS; a minute without a candle has high -inf, low +inf, volumes 0 and
    open and close 0.
    """

    first: int
    values: FloatArray
    present: BoolArray

    def tail(self, minutes: int) -> Grid:
        """Return the last ``minutes`` as a grid of their own (a copy: the rest of this one can go)."""
        width = self.present.shape[1]
        keep = min(minutes, width)
        return Grid(
            self.first + (width - keep) * MINUTE_MS,
            self.values[:, :, width - keep :].copy(),
            self.present[:, width - keep :].copy(),
        )


class MarketBlocks:
    """The kline files of a folder (or of some of its symbols), served as grids of whole days.

    Every file is parsed once into the cache folder (``marketdata.parsed_cache``; a temporary one
    removed with this object when none is given), and each grid reads only its minutes from there:
    memory holds one grid, however many symbols and months the recording has.
    """

    def __init__(self, folder: Path, symbols: Sequence[str] | None = None, cache: Path | None = None) -> None:
        """Index the files of ``folder``, parsing into ``cache`` (a folder) those it does not hold yet."""
        files = files_by_symbol(folder, symbols)
        self._temporary = tempfile.TemporaryDirectory(prefix="kline-cache-") if cache is None else None
        where = Path(self._temporary.name) if self._temporary is not None else cache
        assert where is not None
        self._files: dict[str, list[CachedFile]] = {}
        spans: dict[str, list[tuple[Path, int, int]]] = {}
        for symbol, paths in files.items():
            for path in paths:
                try:  # as marketdata.klines.read_folder: a file that cannot be read is skipped, and said so
                    entry = cached_file(path, where)
                except KlineFileError as exc:
                    log.warning("%s; file skipped", exc)
                    continue
                self._files.setdefault(symbol, []).append(entry)
                spans.setdefault(symbol, []).append((path, entry.first, entry.last))
        if not self._files:
            raise KlineFileError(f"{folder}: no kline file could be read (see the warnings above)")
        for symbol_spans in spans.values():
            report_overlaps(symbol_spans)
        self.symbols = sorted(self._files)
        self.first = min(f.first for entries in self._files.values() for f in entries)
        self._last = max(f.last for entries in self._files.values() for f in entries)

    def quote_volume_derived(self) -> list[str]:
        """Return the symbols whose quote volume was derived (a file of theirs had none)."""
        return [s for s, entries in self._files.items() if any(f.quote_volume_derived for f in entries)]

    def last(self) -> int:
        """Return the newest minute (open time) of every file."""
        return self._last

    def rows(self, symbol: str, first: int, end: int) -> tuple[IntArray, FloatArray]:
        """Return ``symbol``'s open times and GRID_COLUMNS (6, minutes) for ``first <= open_time < end``, in order."""
        parts = [f.rows(first, end, _VALUE_INDEX) for f in self._files[symbol] if f.first < end and f.last >= first]
        if not parts:
            return np.empty(0, dtype=np.int64), np.empty((len(GRID_COLUMNS), 0))
        if len(parts) == 1:
            return parts[0]
        open_time = np.concatenate([p[0] for p in parts])
        values = np.concatenate([p[1] for p in parts], axis=1)
        if np.any(np.diff(open_time) <= 0):  # files out of order or overlapping: sort, keep the first
            order = np.argsort(open_time, kind="stable")
            open_time, values = open_time[order], values[:, order]
            keep = np.concatenate(([True], np.diff(open_time) != 0))
            open_time, values = open_time[keep], values[:, keep]
        return open_time, values

    def active(self, symbols: Sequence[str], first: int, end: int) -> int:
        """Return how many of ``symbols`` have a file reaching into ``first <= t < end``."""
        return sum(any(f.first < end and f.last >= first for f in self._files[s]) for s in symbols)

    def grid(self, symbols: Sequence[str], first: int, end: int, previous: Grid | None = None) -> Grid:
        """Return the grid of ``symbols`` for the minutes ``first <= t < end``.

        ``previous``, a grid of the same symbols, gives the minutes it shares with this one (the
        context a block shares with the block before it): only the others are read from the files.
        """
        width = (end - first) // MINUTE_MS
        values = np.empty((len(GRID_COLUMNS), len(symbols), width))
        present = np.zeros((len(symbols), width), dtype=bool)
        kept = 0
        if previous is not None and previous.present.shape[0] == len(symbols):
            begin = (first - previous.first) // MINUTE_MS
            kept = max(0, min(previous.present.shape[1] - begin, width)) if begin >= 0 else 0
            values[:, :, :kept] = previous.values[:, :, begin : begin + kept]
            present[:, :kept] = previous.present[:, begin : begin + kept]
        start = first + kept * MINUTE_MS
        for row, symbol in enumerate(symbols):
            open_time, rows = self.rows(symbol, start, end)
            if not len(open_time):
                continue
            at = (open_time - first) // MINUTE_MS
            begin, last = int(at[0]), int(at[-1])
            # Rows without a gap fill a slice (the usual case); otherwise each lands at its minute.
            where: slice | IntArray = slice(begin, last + 1) if last - begin == len(at) - 1 else at
            values[:, row, where] = rows
            present[row, where] = True
        read = present[:, kept:]
        if not read.all():  # the minutes without a candle get each reduction's neutral value
            missing = ~read
            for column, neutral in enumerate(_NEUTRAL):
                np.copyto(values[column, :, kept:], neutral, where=missing)
        return Grid(first, values, present)
