"""Recorded klines as day blocks: the same candles as the whole file, read file by file, dropped behind."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from marketdata.blocks import DAY_MS, MarketBlocks
from marketdata.klines import read_klines
from screener.events.models import MINUTE_MS

CONTEXT = 2880


def test_blocks_hold_the_files_candles_read_by_span_from_the_cache(klines_dir: Path, tmp_path: Path) -> None:
    source = next((klines_dir / "binance-um-2026-02").glob("DOTUSDT-*.csv.gz"))
    lines = gzip.decompress(source.read_bytes()).decode().splitlines()
    header, rows = lines[0], lines[1:]
    days = 7 * 1440
    folder = tmp_path / "klines"
    folder.mkdir()
    for k in range(4):  # four files of a week each
        part = rows[k * days : (k + 1) * days]
        (folder / f"DOTUSDT-1m-2026-02-w{k}.csv.gz").write_bytes(gzip.compress("\n".join([header, *part]).encode()))
    whole = read_klines(source)
    market = MarketBlocks(folder, cache=tmp_path / "cache")
    assert market.first == whole.first_open_time
    assert market.last() == whole.last_open_time
    assert len(list((tmp_path / "cache").glob("DOTUSDT-*.npy"))) == 4, "each file parsed once into the cache"
    block = market.first
    while block <= market.last():
        grid = market.grid(["DOTUSDT"], block - CONTEXT * MINUTE_MS, block + DAY_MS)
        minutes = grid.first + MINUTE_MS * np.flatnonzero(grid.present[0])
        lo, hi = np.searchsorted(whole.open_time, [grid.first, block + DAY_MS])
        np.testing.assert_array_equal(minutes, whole.open_time[lo:hi])
        np.testing.assert_array_equal(grid.values[3, 0, grid.present[0]], whole.values[lo:hi, 3])  # closes
        block += DAY_MS


def test_spans_off_midnight_overlapping_files_and_a_broken_entry(klines_dir: Path, tmp_path: Path) -> None:
    source = next((klines_dir / "binance-um-2026-02").glob("DOTUSDT-*.csv.gz"))
    lines = gzip.decompress(source.read_bytes()).decode().splitlines()
    header, rows = lines[0], lines[1:]
    folder = tmp_path / "klines"
    folder.mkdir()
    # Two files overlapping by a day, the second with other closes there (its lows, so the candles
    # stay valid): the first file's minutes win.
    first, second = rows[: 3 * 1440], rows[2 * 1440 : 5 * 1440]
    changed = [",".join([*r.split(",")[:4], r.split(",")[3], *r.split(",")[5:]]) for r in second]
    (folder / "DOTUSDT-1m-a.csv").write_text("\n".join([header, *first]))
    (folder / "DOTUSDT-1m-b.csv").write_text("\n".join([header, *changed]))
    whole = read_klines(source)
    cache = tmp_path / "cache"
    market = MarketBlocks(folder, cache=cache)
    start = whole.first_open_time + 100 * MINUTE_MS
    end = whole.first_open_time + (4 * 1440 + 7) * MINUTE_MS
    open_time, values = market.rows("DOTUSDT", start, end)
    lo, hi = np.searchsorted(whole.open_time, [start, end])
    np.testing.assert_array_equal(open_time, whole.open_time[lo:hi])
    in_first = open_time < whole.first_open_time + 3 * 1440 * MINUTE_MS
    np.testing.assert_array_equal(values[3][in_first], whole.values[lo:hi, 3][in_first])
    np.testing.assert_array_equal(values[3][~in_first], whole.values[lo:hi, 2][~in_first])
    # A cut entry is parsed again rather than read short.
    entry = next(cache.glob("DOTUSDT-1m-a.csv.*.npy"))
    entry.write_bytes(entry.read_bytes()[:-100])
    again = MarketBlocks(folder, cache=cache)
    np.testing.assert_array_equal(again.rows("DOTUSDT", start, end)[1], values)


def test_files_of_one_name_in_two_folders_keep_their_own_rows(klines_dir: Path, tmp_path: Path) -> None:
    """Months filed as ``2026-01/DOTUSDT-1m.csv``, ``2026-02/DOTUSDT-1m.csv``: same name, size and time."""
    source = next((klines_dir / "binance-um-2026-02").glob("DOTUSDT-*.csv.gz"))
    lines = gzip.decompress(source.read_bytes()).decode().splitlines()
    header, rows = lines[0], lines[1:]
    folder = tmp_path / "klines"
    for month, part in (("a", rows[:1440]), ("b", rows[1440:2880])):
        (folder / month).mkdir(parents=True)
        (folder / month / "DOTUSDT-1m.csv").write_text("\n".join([header, *part]))
    first, second = (folder / "a" / "DOTUSDT-1m.csv"), (folder / "b" / "DOTUSDT-1m.csv")
    second.write_bytes(second.read_bytes()[: first.stat().st_size].ljust(first.stat().st_size, b"\n"))
    stamp = first.stat().st_mtime_ns
    for path in (first, second):
        os.utime(path, ns=(stamp, stamp))
    whole = read_klines(source)
    open_time, _ = MarketBlocks(folder, cache=tmp_path / "cache").rows("DOTUSDT", whole.first_open_time, 2**62)
    second_rows = read_klines(second)
    np.testing.assert_array_equal(open_time, np.concatenate([whole.open_time[:1440], second_rows.open_time]))


def test_a_grid_built_on_the_previous_ones_tail_is_the_grid_read_whole(klines_dir: Path, tmp_path: Path) -> None:
    folder = klines_dir / "binance-um-2025-05"
    market = MarketBlocks(folder, ["BTCUSDT", "ETHUSDT", "XMRUSDT"], cache=tmp_path / "cache")
    symbols = market.symbols
    block = market.first - market.first % DAY_MS
    previous = None
    while block <= market.last():
        end = block + 2 * DAY_MS
        whole = market.grid(symbols, block - CONTEXT * MINUTE_MS, end)
        reused = market.grid(symbols, block - CONTEXT * MINUTE_MS, end, previous)
        np.testing.assert_array_equal(reused.present, whole.present)
        np.testing.assert_array_equal(reused.values, whole.values)
        previous = reused.tail(CONTEXT)
        block = end
