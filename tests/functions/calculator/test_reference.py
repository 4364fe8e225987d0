"""Every rolling-window value, pivot, bar and indicator against a plain reference on the real klines.

The reference below is written the obvious way, one minute at a time, straight from metrics.md; the
calculator's vectorised results (through real Redis, with gaps, for coins priced ~1 and ~0.00001) must
match it. Indicators are compared with TA-Lib itself on the reference's bar series.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import redis.asyncio as aioredis
import talib

from functions.calculator.compute import bar_series, compute_arrays, gather_minutes, left_align
from screener.events.models import BAR_TIMEFRAMES, MINUTE_MS, WINDOWS, Candle
from state.candles import CandleStore
from tests.functions.calculator.klines import SET_2025, SET_2026, bar_closes, csv_path, read_candles, with_gaps

REL = 1e-12  # windows: only the summation order differs from the reference
INDICATOR_REL = 1e-9  # metrics.md


def ref_window(by_minute: dict[int, Candle], t: int, n: int) -> dict[str, float | None]:
    """Return metrics.md's window values for the n minutes ending at t, the plain way."""
    rows = [by_minute[m] for m in range(t - (n - 1) * MINUTE_MS, t + MINUTE_MS, MINUTE_MS) if m in by_minute]
    close = by_minute[t].close
    open_ = rows[0].open
    high = max(r.high for r in rows)
    low = min(r.low for r in rows)
    volume = sum(r.quote_volume for r in rows)
    base = sum(r.volume for r in rows)
    before = [by_minute.get(m) for m in range(t - (2 * n - 1) * MINUTE_MS, t - (n - 1) * MINUTE_MS, MINUTE_MS)]
    before_volume = sum(r.quote_volume for r in before if r is not None)
    ratio = volume / before_volume if all(r is not None for r in before) and before_volume > 0 else None
    vwap = volume / base if base > 0 else None
    vcp = None
    if vwap is not None and high != low:
        vcp = (close / vwap) * ((close - low) - (high - close)) / (high - low)
    return {
        "open": open_,
        "high": high,
        "low": low,
        "close": close,
        "volume": volume,
        "base_volume": base,
        "price_change": (close / open_ - 1) * 100,
        "volume_ratio": ratio,
        "vwap": vwap,
        "vcp": vcp,
        "coverage": len(rows) / n,
    }


def ref_fibonacci(day: dict[str, float | None]) -> dict[str, float]:
    """Return the Fibonacci levels of a 1d window."""
    high, low, close = (float(day[k] or 0) for k in ("high", "low", "close"))
    p, r = (high + low + close) / 3, high - low
    return {
        "r1": p + r,
        "r618": p + 0.618 * r,
        "r382": p + 0.382 * r,
        "pivot": p,
        "s382": p - 0.382 * r,
        "s618": p - 0.618 * r,
        "s1": p - r,
    }


def ref_bar_closes(by_minute: dict[int, Candle], t: int, minutes: int, count: int = 250) -> list[float]:
    """Return the closes of the last ``count`` clock-aligned bars up to t that have any minute."""
    span = minutes * MINUTE_MS
    forming = t - t % span
    closes = []
    for k in range(count - 1, -1, -1):
        start = forming - k * span
        inside = [by_minute[m] for m in range(start, min(start + span, t + MINUTE_MS), MINUTE_MS) if m in by_minute]
        if inside:
            closes.append(inside[-1].close)
    return closes


def ref_change_14d(by_minute: dict[int, Candle], t: int) -> float | None:
    """Return change_14d: close at t over the open of the 1h bar 335 bars before t's."""
    hour = 60 * MINUTE_MS
    start = t - t % hour - 335 * hour
    inside = [by_minute[m] for m in range(start, start + hour, MINUTE_MS) if m in by_minute]
    return (by_minute[t].close / inside[0].open - 1) * 100 if inside else None


def assert_close(ours: float, expected: float | None, rel: float, what: str) -> None:
    """Assert ``ours`` (NaN for null) equals ``expected`` to ``rel``."""
    if expected is None:
        assert math.isnan(ours), f"{what}: expected null, got {ours}"
        return
    assert not math.isnan(ours), f"{what}: expected {expected}, got null"
    assert math.isclose(ours, expected, rel_tol=rel, abs_tol=0.0) or ours == expected, (
        f"{what}: {ours} != {expected} (rel {abs(ours / expected - 1) if expected else 'inf'})"
    )


def check_indicators(ours: dict[str, float], closes: list[float], what: str) -> int:
    """Compare one timeframe's indicators with TA-Lib on the same bar closes; return how many compared."""
    x = np.asarray(closes, dtype=np.float64)
    compared = 0
    expected: dict[str, float] = {}
    if len(x) > 14:
        expected["rsi_14"] = float(talib.RSI(x, 14)[-1])
    if len(x) >= 34:
        m, s, h = talib.MACD(x, 12, 26, 9)
        expected.update(macd=float(m[-1]), macd_signal=float(s[-1]), macd_hist=float(h[-1]))
    if len(x) >= 20:
        u, mid, lo = talib.BBANDS(x, 20, 2.0, 2.0, 0)  # type: ignore[arg-type]  # 0 = SMA
        expected.update(bb_upper=float(u[-1]), bb_middle=float(mid[-1]), bb_lower=float(lo[-1]))
    for name in ("rsi_14", "macd", "macd_signal", "macd_hist", "bb_upper", "bb_middle", "bb_lower"):
        if name not in expected:
            assert math.isnan(ours[name]), f"{what} {name}: too few bars ({len(x)}) but got {ours[name]}"
            continue
        if name == "rsi_14" and expected[name] == 0.0 and math.isnan(ours[name]):
            continue  # a flat series: TA-Lib prints 0, metrics.md says null
        # MACD lines cross zero, where a relative error measures nothing: there the tolerance is
        # 1e-12 of the price level, far below any tick.
        floor = 1e-12 * float(np.abs(x).max()) if name.startswith("macd") else 0.0
        assert abs(ours[name] - expected[name]) <= INDICATOR_REL * abs(expected[name]) + floor, (
            f"{what} {name}: {ours[name]} != talib {expected[name]}"
        )
        compared += 1
    return compared


class Case(NamedTuple):
    """A real series written as ``symbol``: prices scaled, some minutes dropped."""

    data_set: str
    base: str
    symbol: str
    scale: float
    minutes: int
    rate: float  # share of minutes dropped at random
    holes: list[tuple[int, int]]  # index ranges dropped


CASES = [
    Case(SET_2026, "DOTUSDT", "DOTUSDT", 1.0, 21_000, 0.03, [(3000, 3090), (15_000, 15_500)]),
    Case(SET_2026, "NEARUSDT", "TINYUSDT", 1e-5, 6_000, 0.01, [(2000, 2100)]),
    Case(SET_2025, "BTCUSDT", "BTCUSDT", 1.0, 5_000, 0.0, [(1200, 1300)]),
    Case(SET_2025, "ENAUSDT", "ENATINYUSDT", 3e-5, 5_000, 0.0, []),
]


@pytest.mark.parametrize("case", CASES, ids=[c.symbol for c in CASES])
async def test_windows_pivots_bars_and_indicators_match_the_reference(
    redis_client: aioredis.Redis, klines_dir: Path, case: Case
) -> None:
    data_set, base, symbol, scale, minutes, rate, holes = case
    raw = read_candles(csv_path(klines_dir, data_set, base), symbol=symbol, limit=minutes, scale=scale)
    candles = with_gaps(raw, seed=len(symbol), rate=rate, holes=holes)
    by_minute = {c.open_time: c for c in candles}
    store = CandleStore(redis_client)
    chunk = 1500
    compared = 0
    ratios = 0
    for start in range(0, len(candles), chunk):
        part = candles[start : start + chunk]
        await store.write(part, read_back=False)
        # The chunk's last minute, and one 40 minutes earlier: later minutes are stored by then
        # and must not count (determinism).
        for t in (part[-1].open_time, part[max(0, len(part) - 40)].open_time):
            state = (await store.read([symbol]))[symbol]
            arrays = compute_arrays(t, [state])
            for name, n in WINDOWS.items():
                expected = ref_window(by_minute, t, n)
                ratios += expected["volume_ratio"] is not None
                for key, value in expected.items():
                    assert_close(float(arrays.windows[name][key][0]), value, REL, f"{symbol}@{t} {name}.{key}")
            for key, value in ref_fibonacci(ref_window(by_minute, t, 1440)).items():
                assert_close(float(arrays.fibonacci[key][0]), value, REL, f"{symbol}@{t} fibonacci.{key}")
            assert_close(float(arrays.change_14d[0]), ref_change_14d(by_minute, t), REL, f"{symbol}@{t} change_14d")
            series = bar_series(gather_minutes(t, [state]), [state])
            for tf, tf_minutes in BAR_TIMEFRAMES.items():
                packed, lengths = left_align(series[tf].closes, series[tf].present)
                reference = ref_bar_closes(by_minute, t, tf_minutes)
                assert packed[0, : lengths[0]].tolist() == reference, f"{symbol}@{t} {tf} bars differ"
                ours = {k: float(v[0]) for k, v in arrays.indicators[tf].items()}
                # RSI and MACD are carried from the first bar: TA-Lib over every bar since (metrics.md).
                history = bar_closes(candles, tf_minutes, t)
                assert history[-len(reference) :] == reference
                compared += check_indicators(ours, history, f"{symbol}@{t} {tf}")
    assert compared > 100
    assert ratios > 0
    if rate == 0.0:
        assert not math.isnan(float(arrays.windows["1d"]["volume_ratio"][0])), "the 1d ratio needs the previous lap"
    if minutes > 20_200:
        assert not math.isnan(float(arrays.change_14d[0])), "change_14d should exist after 14 days"
