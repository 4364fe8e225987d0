"""Rule evaluation cost per symbol-minute (all 20 rules), next to the calculator's compute cost.

Builds N symbols' rings in memory (copies of the real 2026-02 series, shifted by whole days so they
differ; 2025-05's BTCUSDT is not in that set, so ``BTC.c1h`` reads null and the V2 rules stop at
Surge 60), then for each of M consecutive minutes times, on the same snapshots:

- calculator: ``compute_arrays`` + ``to_payloads`` for all N symbols (what the calculator does);
- rules parse: ``MetricsSnapshot`` validation of the N payloads (what the rules function does first);
- rules evaluate: all 20 rules over the N symbols, vectorised, with firing decisions in Redis
  (an embedded redis-server, EVALSHA) or in memory (``--memory``).

    .venv/bin/python bench/rules_eval.py --symbols 650 --minutes 30
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import redis.asyncio as aioredis

from functions.calculator.compute import compute_arrays, to_payloads
from functions.rules.config import RulesConfig
from functions.rules.engine import RuleEngine
from functions.rules.firing import FiringState, MemoryFiringState
from functions.rules.redis_state import RedisFiringState
from functions.rules.replay_state import MemoryCandleState
from functions.rules.store import seed_file_rules
from marketdata.klines import read_folder
from screener.embedded.servers import start_redis
from screener.events.models import MINUTE_MS, MetricsSnapshot

DATA = Path(__file__).resolve().parents[1] / "data" / "klines" / "binance-um-2026-02"
SHIFT_MINUTES = 397


def build(count: int, history: int, measured: int) -> tuple[list[str], list[list[list[float]]]]:
    """Return symbol names and, per symbol, ring rows for ``history + measured`` minutes on one clock."""
    series = list(read_folder(DATA).values())
    total = history + measured
    names, rows = [], []
    for i in range(count):
        source = series[i % len(series)]
        # each copy reads its own stretch of the month (a prime step of minutes), moved onto one clock
        shift = ((i // len(series)) * SHIFT_MINUTES) % (len(source) - total)
        end = len(source) - shift
        block = np.column_stack((source.open_time[end - total : end], source.values[end - total : end, :7]))
        block[:, 0] += shift * MINUTE_MS
        names.append(f"S{i:04d}USDT")
        rows.append(block.tolist())
    return names, rows


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--symbols", type=int, default=650)
    parser.add_argument("--minutes", type=int, default=30, help="minutes measured")
    parser.add_argument("--history", type=int, default=1600, help="minutes written before measuring")
    parser.add_argument("--memory", action="store_true", help="firing decisions in memory instead of Redis")
    args = parser.parse_args()

    names, rows = build(args.symbols, args.history, args.minutes)
    state = MemoryCandleState()
    began = time.perf_counter()
    for t in range(args.history):
        for name, symbol_rows in zip(names, rows, strict=True):
            state.write_row(name, symbol_rows[t])
    print(f"warm-up: {args.symbols} symbols x {args.history} minutes in {time.perf_counter() - began:.1f}s")

    server = None
    firing: FiringState
    if args.memory:
        firing = MemoryFiringState()
    else:
        server = start_redis(Path(tempfile.mkdtemp()) / "redis")
        firing = RedisFiringState(aioredis.from_url(server.url), retention_ms=48 * 3600 * 1000)
    engine = RuleEngine(RulesConfig.of(list(seed_file_rules())), firing)
    compute_ms, parse_ms, rules_ms = [], [], []
    fired: Counter[str] = Counter()
    try:
        for t in range(args.history, args.history + args.minutes):
            for name, symbol_rows in zip(names, rows, strict=True):
                state.write_row(name, symbol_rows[t])
            minute = int(rows[0][t][0])
            states = [state.state(name) for name in names]
            start = time.perf_counter()
            payloads = to_payloads(compute_arrays(minute, states))
            compute_ms.append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            snapshots = [MetricsSnapshot.model_validate(p) for p in payloads]
            parse_ms.append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            alerts = await engine.evaluate_minute(engine.config, minute, snapshots)
            rules_ms.append((time.perf_counter() - start) * 1000)
            fired.update(a.rule_type for a in alerts)
    finally:
        if server is not None:
            server.stop()

    n = args.symbols
    compute, parse, rules = (statistics.median(x) for x in (compute_ms, parse_ms, rules_ms))
    print(f"{n} symbols, {args.minutes} minutes measured, medians per minute (per symbol-minute):")
    print(f"  calculator compute + payloads : {compute:8.2f} ms  ({compute * 1000 / n:7.1f} us)")
    print(f"  rules: parse snapshots        : {parse:8.2f} ms  ({parse * 1000 / n:7.1f} us)")
    print(f"  rules: evaluate all 20 rules  : {rules:8.2f} ms  ({rules * 1000 / n:7.1f} us)"
          f"  [{'memory' if args.memory else 'Redis'} firing state]")  # fmt: skip
    print(f"  rules evaluate / calculator   : {rules / compute:8.2f}")
    print(f"  alerts fired: {sum(fired.values())} ({dict(fired.most_common(5))})")


if __name__ == "__main__":
    asyncio.run(main())
