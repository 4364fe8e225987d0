"""Recorded klines as day blocks: the same candles as the whole file, read file by file, dropped behind."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from marketdata.blocks import DAY_MS, MarketBlocks
from marketdata.klines import read_klines
from screener.events.models import MINUTE_MS

CONTEXT = 2880


def test_blocks_hold_the_files_candles_and_only_a_few_files_at_once(klines_dir: Path, tmp_path: Path) -> None:
    source = next((klines_dir / "binance-um-2026-02").glob("DOTUSDT-*.csv.gz"))
    lines = gzip.decompress(source.read_bytes()).decode().splitlines()
    header, rows = lines[0], lines[1:]
    days = 7 * 1440
    for k in range(4):  # four files of a week each
        part = rows[k * days : (k + 1) * days]
        (tmp_path / f"DOTUSDT-1m-2026-02-w{k}.csv.gz").write_bytes(gzip.compress("\n".join([header, *part]).encode()))
    whole = read_klines(source)
    market = MarketBlocks(tmp_path)
    assert market.first == whole.first_open_time
    assert market.last() == whole.last_open_time
    block = market.first
    most = 0
    while block <= market.last():
        grid = market.grid(["DOTUSDT"], block - CONTEXT * MINUTE_MS, block + DAY_MS)
        minutes = grid.first + MINUTE_MS * np.flatnonzero(grid.present[0])
        lo, hi = np.searchsorted(whole.open_time, [grid.first, block + DAY_MS])
        np.testing.assert_array_equal(minutes, whole.open_time[lo:hi])
        np.testing.assert_array_equal(grid.values[3, 0, grid.present[0]], whole.values[lo:hi, 3])  # closes
        market.drop_before(block + DAY_MS - CONTEXT * MINUTE_MS)
        most = max(most, market.rows_held())
        block += DAY_MS
    assert most <= days + CONTEXT + 1440, "at most one file beyond the context is held"
