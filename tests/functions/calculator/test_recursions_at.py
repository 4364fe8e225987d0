"""The calculator's read-out of RSI and MACD equals the full recursions, number for number."""

from __future__ import annotations

import numpy as np

from functions.calculator import indicators
from functions.calculator.indicators import FloatArray, IntArray


def assert_read_out_equals_full_recursions(closes: FloatArray, lengths: IntArray) -> None:
    """Assert ``recursions_at`` gives the full series' values at each row's last and last-closed bar."""
    found = indicators.recursions_at(closes, lengths)
    rsi, gains, losses = indicators.rsi_with_state(closes)
    line, signal, hist, slows, fasts = indicators.macd_with_state(closes)
    np.testing.assert_array_equal(found.rsi, indicators.last_values(rsi, lengths))
    np.testing.assert_array_equal(found.macd, indicators.last_values(line, lengths))
    np.testing.assert_array_equal(found.macd_signal, indicators.last_values(signal, lengths))
    np.testing.assert_array_equal(found.macd_hist, indicators.last_values(hist, lengths))
    closed = np.maximum(lengths - 2, 0)[:, None]
    expected_state = np.stack(
        [np.take_along_axis(a, closed, axis=1)[:, 0] for a in (gains, losses, closes, slows, fasts, signal)], axis=1
    )
    np.testing.assert_array_equal(found.closed_state, expected_state)


def test_recursions_at_equals_the_last_values_of_the_full_series() -> None:
    rng = np.random.default_rng(7)
    closes = np.cumprod(1 + rng.normal(0, 0.01, size=(40, 250)), axis=1) * 30_000
    lengths = rng.integers(0, 251, size=40).astype(np.int64)
    lengths[:3] = (0, 1, 250)
    assert_read_out_equals_full_recursions(closes, lengths)


def test_recursions_at_reads_out_every_length_exactly_in_any_row_order() -> None:
    rng = np.random.default_rng(8)
    closes = np.cumprod(1 + rng.normal(0, 0.01, size=(2 * 251, 250)), axis=1) * 0.00003
    lengths = np.concatenate((np.arange(251), rng.permutation(251))).astype(np.int64)
    assert_read_out_equals_full_recursions(closes, lengths)
