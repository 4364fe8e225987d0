"""In-memory rings written candle by candle hold the same bytes as one batched write by the script's rules."""

from __future__ import annotations

from pathlib import Path

from functions.rules.replay_state import MemoryCandleState
from marketdata.klines import read_folder
from state import layout
from state.candles import apply_candles, empty_state, pack_candles


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
