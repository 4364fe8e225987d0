"""A cache of parsed kline files: the numbers of a CSV once parsed, reloaded as binary arrays.

Parsing text is most of what reading a recording costs (about 200 ns a number); a backtest that
runs again over the same files loads their arrays instead. An entry is named after the file's name,
size and modification time, so a changed file is parsed again; entries are plain ``.npz`` files
that can be deleted at any time.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from marketdata.klines import KlineSeries, read_klines, symbol_of


def entry_path(cache: Path, path: Path) -> Path:
    """Return where the parsed arrays of ``path`` are kept in ``cache``."""
    stat = path.stat()
    return cache / f"{path.name}.{stat.st_size}.{stat.st_mtime_ns}.npz"


def read_cached(path: Path, cache: Path | None) -> KlineSeries:
    """Return ``read_klines(path)``, from ``cache`` when it holds the file's arrays (stored there otherwise)."""
    if cache is None:
        return read_klines(path)
    entry = entry_path(cache, path)
    try:
        with np.load(entry) as stored:
            return KlineSeries(
                symbol_of(path), stored["open_time"], stored["values"], bool(stored["quote_volume_derived"])
            )
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        pass  # not cached yet, or a broken entry: parse the file
    series = read_klines(path)
    cache.mkdir(parents=True, exist_ok=True)
    # Written aside and renamed: a concurrent or killed run never leaves half an entry.
    handle, temporary = tempfile.mkstemp(dir=cache, suffix=".npz.tmp")
    with os.fdopen(handle, "wb") as out:
        np.savez(
            out,
            open_time=series.open_time,
            values=series.values,
            quote_volume_derived=np.array(series.quote_volume_derived),
        )
    os.replace(temporary, entry)
    return series
