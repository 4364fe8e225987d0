"""The backtest's in-memory rings hold the same bytes as the calculator's mirror of the Redis script."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from functions.rules.replay_state import MemoryCandleState
from marketdata.klines import read_folder
from state import layout
from state.candles import SymbolState, apply_candles, pack_candles


def empty_state(symbol: str) -> SymbolState:
    bars = {r.timeframe: np.zeros((r.capacity, r.width)) for r in layout.BAR_RINGS}
    return SymbolState(
        symbol, np.zeros((layout.CAPACITY, len(layout.CANDLE_FIELDS))), np.full(layout.CAPACITY, np.nan), bars
    )


def test_memory_rings_equal_the_write_script_mirror(klines_dir: Path) -> None:
    series = read_folder(klines_dir / "binance-um-2026-02", ["ALGOUSDT"])["ALGOUSDT"]
    candles = [series.candle(i) for i in range(3 * 1440 + 77)]  # more than a ring lap, bars of every size
    candles = [c for i, c in enumerate(candles) if i % 97 != 5]  # with gaps
    memory = MemoryCandleState()
    mirror = empty_state("ALGOUSDT")
    for candle in candles:
        memory.write(candle)
    apply_candles(mirror, pack_candles(candles))
    ours = memory.state("ALGOUSDT")
    assert ours.candles.tobytes() == mirror.candles.tobytes()
    assert ours.previous_quote_volume.tobytes() == mirror.previous_quote_volume.tobytes()
    for ring in layout.BAR_RINGS:
        assert ours.bars[ring.timeframe].tobytes() == mirror.bars[ring.timeframe].tobytes(), ring.timeframe
