"""A cache of parsed kline files: the numbers a backtest reads of a CSV, kept as a binary file read by ranges.

Parsing text is most of what reading a recording costs (some 30 ns a number, and decompressing it);
a backtest that runs again over the same files loads their rows instead. An entry is named after the
file's name, folder, size and modification time, so a changed file is parsed again; entries are plain ``.npy`` files
(one row per column, one column per minute) that can be deleted at any time.

A ``CachedFile`` reads only the rows of a span of time (``rows``), found through the row at which
each UTC day begins, so a backtest holds the minutes of its current block, not whole files.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from marketdata.klines import KlineFileError, read_columns
from screener.events.models import MINUTE_MS

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

DAY_MS = 1440 * MINUTE_MS
# The values an entry keeps (of KlineSeries.VALUE_COLUMNS): what the backtest's grids hold.
COLUMNS = ("open", "high", "low", "close", "volume", "quote_volume")
VALUES = len(COLUMNS)
# An entry is one float64 array (ROWS, minutes): the open time (exact: below 2**53), the values of
# COLUMNS, and 1.0 where the quote volume was derived. Each row is contiguous, so a span of one
# column is one read.
OPEN_TIME_ROW, DERIVED_ROW = 0, 1 + VALUES
ROWS = DERIVED_ROW + 1


def entry_path(cache: Path, path: Path) -> Path:
    """Return where the parsed rows of ``path`` are kept in ``cache``.

    Named after the file's name and folder (files of one name in several subfolders, a month each,
    must not share an entry), size and modification time.
    """
    stat = path.stat()
    folder = hashlib.sha256(str(path.resolve().parent).encode()).hexdigest()[:12]
    return cache / f"{path.name}.{folder}.{stat.st_size}.{stat.st_mtime_ns}.npy"


@dataclass(frozen=True)
class CachedFile:
    """One parsed kline file in the cache: where its columns are and at which minute each day begins."""

    path: Path  # the cache entry
    offset: int  # bytes before the array
    length: int  # minutes in the file
    first: int  # open time of the first minute
    last: int  # open time of the last minute
    quote_volume_derived: bool
    day_starts: IntArray  # index of the first minute of day ``first // DAY_MS + k``, then ``length``

    def rows(self, first: int, end: int, columns: Sequence[int]) -> tuple[IntArray, FloatArray]:
        """Return the open times and the values (``columns``, indices into COLUMNS) of ``first <= open_time < end``.

        The values are (len(columns), minutes).
        """
        if end <= self.first or first > self.last:
            return np.empty(0, dtype=np.int64), np.empty((len(columns), 0))
        day0 = self.first // DAY_MS
        top = len(self.day_starts) - 1
        lo = int(self.day_starts[min(max(first // DAY_MS - day0, 0), top)])
        hi = int(self.day_starts[min(max(-(-end // DAY_MS) - day0, 0), top)])
        count = hi - lo
        times = np.empty(count, dtype="<f8")
        values = np.empty((len(columns), count), dtype="<f8")
        with self.path.open("rb", buffering=0) as handle:
            self._read(handle, OPEN_TIME_ROW, lo, times)
            for k, column in enumerate(columns):
                self._read(handle, 1 + column, lo, values[k])
        open_time = times.astype(np.int64)
        keep = (open_time >= first) & (open_time < end)
        if not keep.all():  # a span that does not start or end at midnight
            return open_time[keep], values[:, keep]
        return open_time, values

    def _read(self, handle: io.FileIO, row: int, start: int, into: FloatArray) -> None:
        """Read ``len(into)`` values of ``row`` from minute ``start`` on straight into ``into``."""
        handle.seek(self.offset + (row * self.length + start) * 8)
        if handle.readinto(into.data) != into.nbytes:
            raise KlineFileError(f"{self.path}: cache entry cut short (delete it to parse the file again)")


def cached_file(path: Path, cache: Path) -> CachedFile:
    """Return ``path``'s entry in ``cache``, parsing the file and storing its columns first when missing."""
    entry = entry_path(cache, path)
    try:
        return _open_entry(entry)
    except (OSError, ValueError):
        pass  # not cached yet, or a broken entry: parse the file
    open_time, values, derived = read_columns(path, COLUMNS)
    table = np.empty((ROWS, len(open_time)))
    table[OPEN_TIME_ROW] = open_time
    table[1:DERIVED_ROW] = values
    table[DERIVED_ROW] = 1.0 if derived else 0.0
    cache.mkdir(parents=True, exist_ok=True)
    # Written aside and renamed: a concurrent or killed run never leaves half an entry.
    handle, temporary = tempfile.mkstemp(dir=cache, suffix=".npy.tmp")
    with os.fdopen(handle, "wb") as out:
        np.save(out, table)
    os.replace(temporary, entry)
    return _open_entry(entry)


def _open_entry(entry: Path) -> CachedFile:
    with entry.open("rb") as handle:
        version = np.lib.format.read_magic(handle)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(handle)
        offset = handle.tell()
        if dtype != np.dtype("<f8") or fortran or len(shape) != 2 or shape[0] != ROWS or shape[1] == 0:
            raise ValueError(f"{entry}: not a kline cache entry")
        length = int(shape[1])
        if entry.stat().st_size != offset + ROWS * length * 8:
            raise ValueError(f"{entry}: cut short")
        open_time = np.fromfile(handle, dtype="<f8", count=length).astype(np.int64)
        handle.seek(offset + DERIVED_ROW * length * 8)
        derived = bool(np.fromfile(handle, dtype="<f8", count=1)[0])
    first, last = int(open_time[0]), int(open_time[-1])
    days = np.arange(first // DAY_MS, last // DAY_MS + 1) * DAY_MS
    day_starts = np.append(np.searchsorted(open_time, days), length).astype(np.int64)
    return CachedFile(entry, offset, length, first, last, derived, day_starts)
