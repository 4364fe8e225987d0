"""Backtest throughput in symbol-minutes per CPU-second: the blockwise backtest next to the old path.

Both run the 20 shipped rules over the same recording and span in this process, one after the
other, and must give the same alerts (rule, symbol, minute, id) in the same order:

- new: ``functions.rules.blockwise.run_backtest``, every metric and rule over whole columns of days,
  writing every alert with its metadata to a JSON-lines file as it goes (what ``screener backtest``
  runs and times), once parsing the CSV files and once with them parsed already (the data directory
  keeps them between runs);
- ``screener backtest`` itself, each run in a fresh process (``--command-runs`` times, 0: skip),
  once parsing the files (an empty data directory each time) and once with them parsed: the figure
  the command prints, first run's costs included (imports aside: its clock starts after them);
- old: ``functions.rules.replay.replay``, the streaming calculator's compute and the rule engine
  minute by minute through in-memory rings (what ``screener backtest`` ran before). It is slow
  (about 1,000-3,000 symbol-minutes per CPU-second): ``--old-days`` limits its span to the last days
  that every symbol of the recording has, after warming up on everything before (as the new one
  does); its rate counts the evaluated minutes only, the warm-up (writing the rings) apart.

    .venv/bin/python bench/backtest_throughput.py --data data/klines/binance-um-2025-05 --old-days 1
    .venv/bin/python bench/backtest_throughput.py --old-days 0 --repeat 5 --command-runs 5

CPU time grows when the machine's other jobs share the cores (their caches, their hyperthreads):
each case runs ``--repeat`` times and the best is printed, with the median.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from functions.rules.backtest import reuse_freed_memory
from functions.rules.blockwise import run_backtest
from functions.rules.replay import read_market, replay
from functions.rules.report import AlertsWriter
from functions.rules.store import seed_file_rules
from marketdata.blocks import DAY_MS
from screener.events.models import MINUTE_MS

DATA = Path(__file__).resolve().parents[1] / "data" / "klines"


def keyed(alerts: list) -> list[tuple[str, str, int, str]]:  # type: ignore[type-arg]
    return [(a.rule_type, a.symbol, a.minute, a.id) for a in alerts]


def command_rate(folder: Path, state: Path, alerts: Path) -> tuple[int, float]:
    """Run ``screener backtest`` over ``folder`` in a child; return the symbol-minutes and CPU seconds it reported."""
    command = [
        sys.executable, "-m", "screener.cli", "backtest", "--data", str(folder), "--no-progress",
        "--alerts-out", str(alerts),
    ]  # fmt: skip
    env = dict(os.environ, SCREENER_DATA_DIR=str(state))
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    found = re.search(r"over (\d+) symbol-minutes .*?([\d,]+) symbol-minutes per CPU-second", out)
    if found is None:
        raise SystemExit(f"screener backtest printed no throughput: {out.strip()[-500:]}")
    # The rate, not the CPU seconds printed to 2 decimals: it is computed from the exact time.
    minutes = int(found.group(1))
    return minutes, minutes / int(found.group(2).replace(",", ""))


def command_figures(folder: Path, runs: int) -> None:
    """Print what ``screener backtest`` reports, run ``runs`` times per case, each in a fresh process."""
    with tempfile.TemporaryDirectory() as temporary:
        for label in ("command, parsing the files", "command, files parsed"):
            times = []
            for attempt in range(runs):
                # Parsing: an empty data directory each time; parsed: the one the first run filled.
                state = Path(temporary) / (f"state-{attempt}" if label.endswith("files") else "state-0")
                minutes, cpu = command_rate(folder, state, Path(temporary) / "alerts.jsonl")
                times.append(cpu)
            print(
                f"{label:28} {minutes:>9,} symbol-minutes {'':13}{min(times):7.2f} CPU-s "
                f"{minutes / min(times):>12,.0f} symbol-minutes/CPU-s "
                f"(best of {runs}; median {minutes / statistics.median(times):,.0f})"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, action="append", help="kline folders (default: every held-in set)")
    parser.add_argument("--old-days", type=float, default=1.0, help="days the old path evaluates (0: skip it)")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of the new path per case; the best counts (the machine is shared)"
    )
    parser.add_argument(
        "--command-runs", type=int, default=3, help="runs of `screener backtest` per case, each in a fresh process"
    )
    args = parser.parse_args()
    folders = args.data or sorted(p for p in DATA.iterdir() if p.is_dir())
    rules = list(seed_file_rules())
    reuse_freed_memory()  # as `screener backtest` runs
    for folder in folders:
        print(f"== {folder.name}")
        if args.command_runs > 0:
            command_figures(folder, args.command_runs)
        with tempfile.TemporaryDirectory() as temporary:
            for label in ("new, parsing the files", "new, files parsed already"):
                times = []
                for attempt in range(args.repeat):
                    # Parsing: an empty cache each time; parsed already: the one the first run filled.
                    cache = Path(temporary) / (f"parse-{attempt}" if label.endswith("files") else "parse-0")
                    writer = AlertsWriter(Path(temporary) / "alerts.jsonl")
                    began = time.process_time()
                    result = run_backtest(folder, rules, cache=cache, on_alerts=writer, keep_alerts=False)
                    writer.close()
                    times.append(time.process_time() - began)
                cpu = min(times)
                print(
                    f"{label:28} {result.symbol_minutes:>9,} symbol-minutes {result.count:>6,} alerts "
                    f"{cpu:7.2f} CPU-s {result.symbol_minutes / cpu:>12,.0f} symbol-minutes/CPU-s "
                    f"(best of {len(times)}; median {result.symbol_minutes / statistics.median(times):,.0f})"
                )
        if args.old_days <= 0:
            continue
        series = read_market(folder)
        end = min(s.last_open_time for s in series.values()) + MINUTE_MS  # every symbol has data up to here
        start = end - int(args.old_days * DAY_MS)
        began = time.process_time()
        new = run_backtest(folder, rules, start=start, end=end)
        new_cpu = time.process_time() - began
        marks: dict[str, float] = {}

        def mark(minute: int, start: int = start, marks: dict[str, float] = marks) -> None:
            if minute == start - MINUTE_MS:  # the last minute of the warm-up
                marks["warm"] = time.process_time()

        began = time.process_time()
        old = asyncio.run(replay(series, rules, start=start, end=end, on_minute=mark))
        old_cpu = time.process_time() - marks.get("warm", began)
        same = keyed(new.alerts) == keyed(old.alerts)
        print(
            f"{args.old_days:g} day(s) to {end}: old {old.symbol_minutes:,} symbol-minutes in {old_cpu:.1f} CPU-s "
            f"({old.symbol_minutes / old_cpu:,.0f}/CPU-s, warm-up apart); new {new_cpu:.2f} CPU-s with its warm-up; "
            f"alerts {len(old.alerts)} old, {len(new.alerts)} new, identical: {same}"
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {peak:.0f} MiB")


if __name__ == "__main__":
    main()
