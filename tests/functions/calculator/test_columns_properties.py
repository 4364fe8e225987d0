"""Properties of the whole-column maths where it cannot share the streaming code's operations.

Window sums come from differences of running sums (the stream sums each window's minutes), and
RSI/MACD run as whole-row linear recursions. So: a window sum is the exact sum of its values
correctly rounded (``math.fsum``) unless the block's running total is over 2**40 times the window's;
the recursions agree with TA-Lib's bar-by-bar order to far below the metrics' 1e-9; and the
carried state kept with the rings, advanced one bar at a time in Lua and its Python twin
(``carried.advance_bar``), holds the very bits of the whole-row recursion.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from functions.calculator import carried
from functions.calculator.columns import RunningSum

volumes = st.lists(
    st.one_of(
        st.just(0.0),
        st.floats(min_value=1e-8, max_value=1e12, allow_nan=False, allow_infinity=False),
        st.integers(min_value=0, max_value=10**9).map(lambda n: n / 1000),  # decimal volumes, as Binance's
    ),
    min_size=1,
    max_size=400,
)


@settings(max_examples=300, deadline=None)
@given(values=volumes, n=st.integers(min_value=1, max_value=60))
def test_a_window_sum_is_the_exact_sum_correctly_rounded(values: list[float], n: int) -> None:
    width = len(values)
    if n > width:
        return
    got = RunningSum(np.array([values])).trailing(n, slice(n - 1, width))  # every window inside the row
    for k, t in enumerate(range(n - 1, width)):
        exact = math.fsum(values[t - n + 1 : t + 1])
        total = math.fsum(values[: t + 1])
        if exact == 0.0 or total <= 2.0**40 * exact:
            assert got[0, k] == exact, (t, n)
        else:  # a window 2**40 times smaller than everything before it: off by far less than its rounding
            assert abs(got[0, k] - exact) <= 2.0**-95 * total, (t, n)


prices = st.lists(
    st.floats(min_value=0.5, max_value=2.0, allow_nan=False), min_size=carried.STEADY_BARS + 1, max_size=300
)


def bar_by_bar(step: Callable[[list[float], float], object], closes: list[float]) -> list[list[float]]:
    """Return the carried state after each close, advanced one bar at a time by ``step`` from empty."""
    row = [0.0] * len(carried.FIELDS)
    states = []
    for close in closes:
        step(row, close)
        states.append(list(row))
    return states


@settings(max_examples=150, deadline=None)
@given(relative=prices, scale=st.sampled_from([1e-7, 1e-3, 1.0, 1e3, 1e5]), split=st.integers(min_value=0))
def test_whole_row_recursions_agree_with_the_bar_by_bar_loop(relative: list[float], scale: float, split: int) -> None:
    closes = [p * scale for p in relative]
    expected = bar_by_bar(carried.advance_one, closes)  # Python floats, TA-Lib's order, all the way
    # The same series in two pieces (any split once steady): seeds bar by bar, then lfilter rows.
    cut = carried.STEADY_BARS + split % (len(closes) - carried.STEADY_BARS + 1)
    state = carried.CarriedState.empty(1)
    first = carried.advance(state, np.array([closes[:cut]]), np.array([cut]))
    state = carried.CarriedState(first[:, :, -1])
    rest = carried.advance(state, np.array([closes[cut:]]), np.array([len(closes) - cut]))
    got = np.concatenate((first[:, 0, 1:], rest[:, 0, 1:]), axis=1).T
    for i, (ours, theirs) in enumerate(zip(got, expected, strict=True)):
        for field, a, b in zip(carried.FIELDS, ours, theirs, strict=True):
            tolerance = 1e-12 * scale if field in ("slow", "fast", "signal", "close") else 1e-12 * max(abs(b), 1e-300)
            if field in ("gain", "loss"):
                tolerance = 1e-12 * scale  # averages of price changes: relative to the price level
            assert abs(a - b) <= tolerance, (i, field, a, b)


@settings(max_examples=150, deadline=None)
@given(
    relative=st.lists(
        st.one_of(st.floats(min_value=0.5, max_value=2.0, allow_nan=False), st.just(1.0)),  # flat runs too
        min_size=1,
        max_size=200,
    ),
    scale=st.sampled_from([1e-7, 1e-3, 1.0, 1e3, 1e5]),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=4),
)
def test_the_rings_bar_by_bar_step_gives_the_bits_of_whole_rows_in_any_pieces(
    relative: list[float], scale: float, cuts: list[int]
) -> None:
    # The carried state kept with the rings advances one bar at a time (``advance_bar``, repeated in
    # state/write_candles.lua); the backtest advances whole rows (``advance``), cut into blocks
    # anywhere and the calculator steps a few bars at a time: every way must give the same bytes.
    closes = [p * scale for p in relative]
    expected = bar_by_bar(carried.advance_bar, closes)
    state = carried.CarriedState.empty(1)
    got = []
    bounds = sorted({0, len(closes), *(c % (len(closes) + 1) for c in cuts)})
    for start, stop in itertools.pairwise(bounds):
        out = carried.advance(state, np.array([closes[start:stop]]), np.array([stop - start]))
        got += out[:, 0, 1:].T.tolist()
        state = carried.CarriedState(out[:, :, -1])
    assert np.array(got).tobytes() == np.array(expected).tobytes()


@settings(max_examples=100, deadline=None)
@given(relative=prices, scale=st.sampled_from([1e-7, 1.0, 1e5]), rows=st.integers(min_value=1, max_value=5))
def test_seeding_many_rows_at_once_is_the_bar_by_bar_loop_bit_for_bit(
    relative: list[float], scale: float, rows: int
) -> None:
    # Rows at different ages (each starts a few bars later): numpy's steps equal Python's exactly.
    closes = [p * scale for p in relative]
    states = [[0.0] * len(carried.FIELDS) for _ in range(rows)]
    for r in range(rows):
        for close in closes[: 7 * r]:
            carried.advance_one(states[r], close)
    many = np.array(states).T
    for close in closes[: carried.STEADY_BARS + 2]:
        for row in states:
            carried.advance_one(row, close)
        many = carried.advance_many(many, np.full(rows, close))
        assert many.T.tolist() == states
