"""Peak memory and throughput of ``screener backtest`` on synthetic recordings, wide and long.

Writes Binance-style 1-minute kline files (OHLCV, one gzip file per symbol and 30 days, random
walks: a few distinct series shared round-robin by the symbols, so writing them stays cheap; every
symbol is computed on its own all the same) and runs the real command in a child process twice:
once parsing the files, once with them in the data directory's cache. For each run it prints the
command's own throughput line and the child's peak resident memory (``wait4``'s ``ru_maxrss``).

Memory is meant to be bounded by a block (a group of up to 64 symbols over a few days) whatever the
number of symbols or days: compare the wide run (many symbols, few days) with a longer one, and the
long run (few symbols, a year) with a short one.

    .venv/bin/python bench/backtest_memory.py --symbols 650 --days 7
    .venv/bin/python bench/backtest_memory.py --symbols 16 --days 365
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

DAY_MS = 86_400_000
FILE_DAYS = 30
SERIES = 8  # distinct random walks, shared round-robin by the symbols
START_MS = 1_735_689_600_000  # 2025-01-01T00:00Z


def synthetic_file(series: int, first_day: int, days: int) -> bytes:
    """Return one gzip OHLCV CSV of ``days`` days of minutes from ``first_day``, for random walk ``series``."""
    rng = np.random.default_rng(series * 100_003 + first_day)
    minutes = days * 1440
    price = 10.0 * (1 + series) * np.exp(np.cumsum(rng.normal(0, 0.0008, minutes)))
    close = np.round(price, 4)
    open_ = np.round(np.concatenate(([price[0]], price[:-1])), 4)
    spread = np.abs(rng.normal(0, 0.0006, minutes)) * price
    high = np.round(np.maximum(open_, close) + spread, 4)
    low = np.round(np.minimum(open_, close) - spread, 4)
    volume = np.round(rng.gamma(2.0, 500.0, minutes) * (1 + 10 * (rng.random(minutes) < 0.01)), 2)
    open_time = START_MS + first_day * DAY_MS + 60_000 * np.arange(minutes)
    lines = ["open_time,open,high,low,close,volume"]
    columns = (open_time, open_, high, low, close, volume)
    lines += [f"{t},{o},{h},{lo},{c},{v}" for t, o, h, lo, c, v in zip(*(x.tolist() for x in columns), strict=True)]
    return gzip.compress(("\n".join(lines) + "\n").encode(), compresslevel=1)


def write_recording(folder: Path, symbols: int, days: int) -> None:
    """Write ``symbols`` symbols' files of ``days`` days into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for first_day in range(0, days, FILE_DAYS):
        span = min(FILE_DAYS, days - first_day)
        texts = [synthetic_file(k, first_day, span) for k in range(min(SERIES, symbols))]
        for s in range(symbols):
            name = f"S{s:04d}USDT-1m-d{first_day:04d}.csv.gz"
            (folder / name).write_bytes(texts[s % len(texts)])


def run_backtest(data: Path, state: Path, report: Path) -> tuple[str, float]:
    """Run ``screener backtest`` in a child; return its throughput line and peak RSS in MiB."""
    command = [
        sys.executable, "-m", "screener.cli", "backtest", "--data", str(data),
        "--report-dir", str(report), "--no-progress",
    ]  # fmt: skip
    env = dict(os.environ, SCREENER_DATA_DIR=str(state))
    with tempfile.TemporaryFile(mode="w+") as errors:
        child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=errors, text=True)
        assert child.stdout is not None
        out = child.stdout.read()
        _, status, usage = os.wait4(child.pid, 0)  # this child's own peak, not the largest of all children
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode:
            errors.seek(0)
            raise SystemExit(f"screener backtest failed ({child.returncode}): {errors.read().strip()[-2000:]}")
    line = next((x for x in out.splitlines() if "symbol-minutes per CPU-second" in x), out.strip())
    return line, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", type=int, default=650)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--keep", type=Path, help="write the recording here and keep it (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="backtest-memory-") as temporary:
        root = args.keep or Path(temporary)
        data = root / f"synthetic-{args.symbols}x{args.days}d"
        if not data.exists():
            write_recording(data, args.symbols, args.days)
        print(f"== {args.symbols} symbols x {args.days} days ({args.symbols * args.days * 1440:,} symbol-minutes)")
        state = root / "state"
        for label in ("parsing the files", "files parsed already"):
            line, peak = run_backtest(data, state, root / "report")
            rate = re.search(r"([\d,]+) symbol-minutes per CPU-second", line)
            print(f"{label:22} peak RSS {peak:7.0f} MiB  {rate.group(1) if rate else '?':>10} symbol-minutes/CPU-s")
            print(f"    {line}")


if __name__ == "__main__":
    main()
