"""The metrics of (symbol, t) are the same bits whatever else the computation holds.

Whatever the batch (one symbol or many, in any order) and the memory layout of the rings (read back
from Redis or kept column-major in the calculator's mirror), each number must be bit for bit the
same: a worker that just started and one that has run for hours must emit identical bytes
(docs/state.md, "Determinism").
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from functions.calculator.compute import MetricsArrays, compute_arrays, left_align
from screener.events.models import MINUTE_MS
from state import layout
from state.candles import SymbolState, apply_candles, empty_state, pack_candles, writable_copy
from tests.functions.calculator.klines import SET_2026, csv_path, read_candles, with_gaps


@pytest.fixture(scope="module")
def states(klines_dir: Path) -> list[SymbolState]:
    """Return the rings of six real series with gaps, priced ~1 to ~1e-5, with 2,500 to 8,000 minutes.

    They end at the same minute; the shorter histories leave the longer bar series partly empty.
    """
    cases = [
        (SET_2026, "DOTUSDT", 1.0, 8000, 0.03, [(7000, 7200)]),
        (SET_2026, "NEARUSDT", 1e-5, 8000, 0.01, [(6900, 6905)]),
        (SET_2026, "FILUSDT", 1.0, 2500, 0.0, []),
        (SET_2026, "LINKUSDT", 1.0, 8000, 0.0, []),
        (SET_2026, "ALGOUSDT", 1.0, 8000, 0.2, []),
        (SET_2026, "AVAXUSDT", 3e-5, 5000, 0.0, [(4990, 4995)]),
    ]
    out = []
    for seed, (data_set, base, scale, minutes, rate, holes) in enumerate(cases):
        raw = read_candles(csv_path(klines_dir, data_set, base), symbol=f"{base}{seed}", limit=8000, scale=scale)
        state = empty_state(raw[0].symbol)
        apply_candles(state, pack_candles(with_gaps(raw[-minutes:], seed=seed, rate=rate, holes=holes)))
        out.append(replace(state, candles=np.ascontiguousarray(state.candles)))  # row-major, as Redis returns it
    return out


def assert_same_bits(a: MetricsArrays, b: MetricsArrays, rows: list[int], what: str) -> None:
    """Assert ``b`` holds exactly ``a``'s numbers for ``a``'s ``rows`` (one row of ``b`` each)."""

    def same(x: np.ndarray, y: np.ndarray, name: str) -> None:
        assert x[rows].tobytes() == y.tobytes(), f"{what}: {name} differs: {x[rows]} vs {y}"

    same(a.last_price, b.last_price, "last_price")
    same(a.change_14d, b.change_14d, "change_14d")
    for window, values in a.windows.items():
        for name, value in values.items():
            same(value, b.windows[window][name], f"{window}.{name}")
    for name, value in a.fibonacci.items():
        same(value, b.fibonacci[name], f"fibonacci.{name}")
    for tf, values in a.indicators.items():
        for name, value in values.items():
            same(value, b.indicators[tf][name], f"{tf}.{name}")


def minutes_to_check(states: list[SymbolState]) -> list[int]:
    """Return the last minute, a bar's first minute of each timeframe, and minutes in between."""
    last = int(max(s.candles[:, layout.OPEN_TIME].max() for s in states))
    day = 1440 * MINUTE_MS
    return [last, last - 7 * MINUTE_MS, last - last % day, last - last % day - MINUTE_MS, last - 59 * MINUTE_MS]


def test_a_symbol_alone_gets_the_bits_it_gets_in_any_batch(states: list[SymbolState]) -> None:
    mirror = [writable_copy(s) for s in states]  # column-major, as the calculator's mirror
    for t in minutes_to_check(states):
        together = compute_arrays(t, mirror)
        for i, state in enumerate(states):  # row-major, as read back from Redis
            assert_same_bits(together, compute_arrays(t, [state]), [i], f"{state.symbol}@{t} alone")
        order = [3, 0, 5, 1, 4, 2]
        assert_same_bits(together, compute_arrays(t, [states[i] for i in order]), order, f"@{t} reordered")


def test_left_align_keeps_the_present_values_in_order_and_pads_with_the_last() -> None:
    rng = np.random.default_rng(11)
    values = rng.normal(size=(64, 30))
    present = rng.random((64, 30)) < 0.7
    present[0] = True  # full
    present[1] = False  # empty
    present[2] = np.arange(30) >= 25  # a young series: its last 5 bars
    present[3] = np.arange(30) == 29  # one bar
    present[4, :] = True
    present[4, 10:12] = False  # a hole
    values[5, 3] = np.nan  # a non-finite value becomes 0
    present[5] = True
    packed, lengths = left_align(values, present)
    for row in range(len(values)):
        kept = [v if np.isfinite(v) else 0.0 for v in values[row][present[row]]]
        assert lengths[row] == len(kept)
        expected = kept + [kept[-1] if kept else 0.0] * (30 - len(kept))
        assert packed[row].tolist() == expected, row
