"""Compute cost of the calculator per symbol-minute, next to TA-Lib and to a per-symbol loop.

Builds the rings of N symbols (copies of the 7 real 2026-02 series) in memory through the write
script's own rules, laid out as the calculator's mirror holds them, then times, at one minute:
- the vectorised compute of every metric (``compute_arrays``) and the payloads built from it (RSI and
  MACD step from the carried state kept with the rings, whatever minute came before);
- the indicators alone (RSI, MACD, BBANDS on all 7 timeframes' bar series) with our code, full
  series, over the last 250 bars as the calculator's fallback reads them out (last bar only), and
  as the calculator computes them (from the carried state), and with TA-Lib on the same arrays,
  series by series (TA-Lib computes full series in C);
- the same compute called one symbol at a time (a plain per-symbol loop).

    .venv/bin/python bench/calculator_compute.py --symbols 650 --repeat 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import talib

from functions.calculator import indicators
from functions.calculator.compute import (
    bar_indicators,
    bar_series,
    compute_arrays,
    gather_minutes,
    left_align,
    to_payloads,
)
from functions.calculator.indicators import FloatArray, IntArray
from state import layout
from state.candles import SymbolState, apply_candles, empty_state, pack_candles, writable_copy
from tests.functions.calculator.klines import SET_2026, read_candles

DATA = Path(__file__).resolve().parents[1] / "data" / "klines" / SET_2026


def build_states(count: int, minutes: int) -> tuple[int, list[SymbolState]]:
    """Return the minute to compute at and ``count`` symbols' rings holding ``minutes`` minutes each.

    The 7 real series are written once (by the write script's rules, ``apply_candles``) and copied;
    the cost of the compute does not depend on the values.
    """
    files = sorted(DATA.glob("*.csv.gz"))
    sources = []
    for path in files:
        rows = read_candles(path)[-minutes:]
        state = empty_state(rows[0].symbol)
        apply_candles(state, pack_candles(rows))
        sources.append(state)
    minute = int(sources[0].candles[:, layout.OPEN_TIME].max())
    states = [
        writable_copy(SymbolState(f"S{i}USDT", source.candles, source.previous_quote_volume, source.bars, source.carry))
        for i, source in ((i, sources[i % len(sources)]) for i in range(count))
    ]
    return minute, states


def timed(repeat: int, call: object, prepare: object = None) -> float:
    """Return the median wall time of ``call()`` over ``repeat`` runs, each after an untimed ``prepare()``."""
    assert callable(call)
    samples = []
    for _ in range(repeat):
        if callable(prepare):
            prepare()
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def least_cpu(repeat: int, call: object) -> float:
    """Return the least CPU time of ``call()`` over ``repeat`` runs (steadier than wall time on a shared machine)."""
    assert callable(call)
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        call()
        best = min(best, time.process_time() - start)
    return best


def packed_series(minute: int, states: list[SymbolState]) -> list[tuple[FloatArray, IntArray]]:
    """Return every timeframe's bar closes, left-aligned, as the indicators receive them."""
    series = bar_series(gather_minutes(minute, states), states)
    return [left_align(bars.closes, bars.present) for bars in series.values()]


def talib_indicators(packed: list[tuple[FloatArray, IntArray]]) -> None:
    """Compute RSI, MACD and BBANDS with TA-Lib on every bar series, one series at a time."""
    for closes, lengths in packed:
        for row, n in zip(closes, lengths, strict=True):
            x = np.ascontiguousarray(row[:n])
            talib.RSI(x, 14)
            talib.MACD(x, 12, 26, 9)
            talib.BBANDS(x, 20, 2.0, 2.0, 0)  # type: ignore[arg-type]  # 0 = SMA


def our_indicators(packed: list[tuple[FloatArray, IntArray]]) -> None:
    """Compute the same full series with our code, all rows of all timeframes at once."""
    closes = np.concatenate([c for c, _ in packed])
    lengths = np.concatenate([n for _, n in packed])
    indicators.last_values(indicators.rsi(closes), lengths)
    for line in indicators.macd(closes):
        indicators.last_values(line, lengths)
    indicators.bbands_last(closes, lengths)


def calculator_indicators(packed: list[tuple[FloatArray, IntArray]]) -> None:
    """Compute what the calculator reads out (values at the last bar, state at the last closed one), no cache."""
    closes = np.concatenate([c for c, _ in packed])
    lengths = np.concatenate([n for _, n in packed])
    indicators.recursions_at(closes, lengths)
    indicators.bbands_last(closes, lengths)


def carried_indicators(minute: int, states: list[SymbolState]) -> None:
    """Compute the indicators as the calculator does: RSI and MACD from the carried state, bands on 20 bars."""
    series = bar_series(gather_minutes(minute, states), states)
    bar_indicators(series, minute, np.stack([s.carry for s in states]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", type=int, default=650)
    parser.add_argument("--minutes", type=int, default=3000, help="history per symbol (>= 2 laps of the ring)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--loop-symbols", type=int, default=50, help="symbols timed in the per-symbol loop")
    args = parser.parse_args()

    minute, states = build_states(args.symbols, args.minutes)
    count = len(states)
    vectorised = timed(args.repeat, lambda: compute_arrays(minute, states))
    cpu = least_cpu(5 * args.repeat, lambda: compute_arrays(minute, states))
    arrays = compute_arrays(minute, states)
    payloads = timed(args.repeat, lambda: to_payloads(arrays))
    packed = packed_series(minute, states)
    ours = timed(args.repeat, lambda: our_indicators(packed))
    read_out = timed(args.repeat, lambda: calculator_indicators(packed))
    from_carry = timed(args.repeat, lambda: carried_indicators(minute, states))
    theirs = timed(max(1, args.repeat // 2), lambda: talib_indicators(packed))
    loop_states = states[: args.loop_symbols]
    per_symbol = timed(max(1, args.repeat // 2), lambda: [compute_arrays(minute, [s]) for s in loop_states])

    us = 1e6
    vec = vectorised / count * us
    rows = sum(len(c) for c, _ in packed)
    print(f"symbols: {count}, history: {args.minutes} minutes, at minute {minute}")
    print(f"vectorised compute, all metrics:  {vectorised * 1e3:8.1f} ms = {vec:7.1f} us per symbol-minute")
    print(
        f"the same, least CPU time of {5 * args.repeat}: {cpu * 1e3:8.1f} ms = "
        f"{cpu / count * us:7.1f} us per symbol-minute"
    )
    print(f"payload dicts (JSON-ready):       {payloads * 1e3:8.1f} ms = {payloads / count * us:7.1f} us per symbol")
    print(
        f"indicators only, {rows} series of {layout.INDICATOR_BARS} bars: ours {ours * 1e3:.1f} ms, "
        f"TA-Lib {theirs * 1e3:.1f} ms on the same arrays (ours/TA-Lib = {ours / theirs:.2f})"
    )
    print(
        f"  over the last 250 bars, last bar only (the fallback): {read_out * 1e3:.1f} ms "
        f"(read-out/TA-Lib = {read_out / theirs:.2f})"
    )
    print(
        f"  as the calculator computes them (carried state, bars gathered): {from_carry * 1e3:.1f} ms "
        f"(carried/TA-Lib = {from_carry / theirs:.2f})"
    )
    loop = per_symbol / len(loop_states) * us
    print(f"per-symbol loop (same code, 1 row): {loop:7.1f} us per symbol-minute (loop/vectorised = {loop / vec:.1f}x)")


if __name__ == "__main__":
    main()
