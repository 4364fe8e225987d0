"""``screener backtest``: evaluate the rules over recorded klines and write alerts and a report.

Computes every metric and evaluates every rule over whole columns of time (``blockwise``: blocks of
days, groups of symbols), in-process over the replay formats (Binance's 12-column kline CSV or
OHLCV-only CSV, plain or gzip), no broker or database needed::

    screener backtest --data data/klines/binance-um-2025-05 --from 2025-05-12 --to 2025-05-14 \\
        --alerts-out alerts.jsonl

The report goes to ``--report-dir``, by default ``backtest-report`` in the data directory
(``SCREENER_DATA_DIR``), which also keeps the parsed files for the next run. The data directory's
default, ``.screener``, is relative to the working directory: where no such folder exists (not a
folder screener runs in), ``--report-dir`` is required rather than creating one there. Alerts go to
``--alerts-out`` block by block, so memory does not grow with them. The run prints its throughput in
symbol-minutes per CPU-second.

Rules are the 20 shipped ones (``seed/rules.json``) unless ``--rule-file`` (a JSON list of rule
objects) or ``--expr NAME=EXPRESSION`` add others; ``--rules`` keeps only the named ones (rules they
reference are still evaluated). Data before ``--from`` warms the state up without being evaluated.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import resource
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from tqdm import tqdm

from functions.rules.blockwise import run_backtest
from functions.rules.errors import RuleError
from functions.rules.report import AlertsWriter, write_report
from functions.rules.ruleset import Rule, RuleSet
from functions.rules.store import seed_file_rules
from marketdata.klines import KlineFileError
from screener.config import Settings


def parse_instant(text: str) -> int:
    """Return the epoch milliseconds of an ISO date or date-time (UTC unless it says otherwise)."""
    instant = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    return int(instant.timestamp() * 1000)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``screener backtest``."""
    parser.add_argument("--data", type=Path, required=True, help="folder of kline CSV files (plain or .gz)")
    parser.add_argument("--from", dest="start", type=parse_instant, help="first minute to evaluate (ISO, UTC)")
    parser.add_argument("--to", dest="end", type=parse_instant, help="end of the evaluated span, exclusive (ISO)")
    parser.add_argument("--rules", help="comma-separated rule ids to report (default: every enabled rule)")
    parser.add_argument("--rule-file", type=Path, help="JSON list of extra or replacement rule objects")
    parser.add_argument(
        "--expr", action="append", default=[], metavar="NAME=EXPRESSION", help="an extra rule, e.g. 'dip=c5m < -2'"
    )
    parser.add_argument("--symbols", help="comma-separated symbols to read (default: every file)")
    parser.add_argument(
        "--alerts-out", type=Path, help="write every alert, with the metric values it read, as one JSON object per line"
    )
    parser.add_argument(
        "--report-dir", type=Path, help="report folder (default: backtest-report in the data directory, .screener)"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def select_rules(args: argparse.Namespace) -> list[Rule]:
    """Return the rules to evaluate from the seed file, ``--rule-file``, ``--expr`` and ``--rules``."""
    rules = {r.rule_type: r for r in seed_file_rules()}
    if args.rule_file:
        for row in json.loads(args.rule_file.read_text(encoding="utf-8")):
            rule = Rule.model_validate(row)
            rules[rule.rule_type] = rule
    for item in args.expr:
        name, sep, expression = item.partition("=")
        if not sep:
            raise RuleError(f"--expr {item!r}: expected NAME=EXPRESSION")
        rules[name.strip()] = Rule(rule_type=name.strip(), name=name.strip(), expression=expression.strip())
    selected = list(rules.values())
    if args.rules:
        wanted = {r.strip() for r in args.rules.split(",") if r.strip()}
        unknown = wanted - rules.keys()
        if unknown:
            raise RuleError(f"--rules: unknown rule(s) {sorted(unknown)}")
        selected = [r.model_copy(update={"enabled": r.rule_type in wanted}) for r in selected]
    RuleSet.build(selected, strict=True)  # report a bad expression with its position, before any work
    return selected


def report_folder(args: argparse.Namespace, settings: Settings) -> Path | None:
    """Return where the report goes: ``--report-dir``, else ``backtest-report`` in the data directory.

    The data directory defaults to ``.screener`` under the working directory; when that folder does
    not exist (not a folder screener runs in), there is no default: the user must say where.
    """
    if args.report_dir is not None:
        return Path(args.report_dir).resolve()
    if _has_data_dir(settings):
        return (settings.data_dir / "backtest-report").resolve()
    return None


def _has_data_dir(settings: Settings) -> bool:
    """Return whether the data directory is one to write into: set absolute, or present here."""
    return settings.data_dir.is_absolute() or settings.data_dir.is_dir()


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_MMAP_THRESHOLD_MAX = 32 << 20  # the largest glibc accepts on 64-bit


def reuse_freed_memory() -> bool:
    """Keep the memory numpy frees in this process for its next arrays (glibc); return whether it could.

    A block allocates and frees the same ~150 arrays of a few hundred kB each. By default glibc
    hands blocks of that size back to the kernel (its heap top trimmed, larger ones unmapped), and
    the next block faults every page in again: about a third of the backtest's CPU time went to those
    page faults. Here arrays below 32 MiB come from the heap, which is never trimmed: the peak
    stays what it was (a block's arrays), it is just not given back between blocks.
    """
    if sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(
        mallopt(parameter, value) == 1
        for parameter, value in (
            (_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX),
            (_M_TRIM_THRESHOLD, 2**31 - 1),
            (_M_TOP_PAD, 64 << 20),
        )
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run the backtest; return the exit status."""
    reuse_freed_memory()
    try:
        rules = select_rules(args)
    except (RuleError, ValueError) as exc:
        print(f"screener backtest: {exc}", file=sys.stderr)
        return 2
    symbols = [s.strip().upper() for s in args.symbols.split(",")] if args.symbols else None
    report_dir = report_folder(args, settings)
    if report_dir is None:
        print(
            f"screener backtest: no data directory here ({settings.data_dir.resolve()} does not exist): "
            "pass --report-dir, or set SCREENER_DATA_DIR to put the report and the parsed files under it",
            file=sys.stderr,
        )
        return 2
    if args.start is not None and args.end is not None and args.end <= args.start:
        print("screener backtest: --to must be after --from", file=sys.stderr)
        return 2
    bar = tqdm(unit="min", disable=args.no_progress, desc="backtest")

    def advance(minutes: int) -> None:
        bar.update(minutes)

    writer = AlertsWriter(args.alerts_out) if args.alerts_out else None
    # Parsed files are kept in the data directory when there is one (else parsed again each run).
    cache = (settings.data_dir / "kline-cache").resolve() if _has_data_dir(settings) else None
    began, cpu = time.perf_counter(), time.process_time()
    try:
        # Alerts go to the file block by block: memory does not grow with them.
        result = run_backtest(
            args.data,
            rules,
            symbols=symbols,
            start=args.start,
            end=args.end,
            on_block=advance,
            on_alerts=writer,
            keep_alerts=False,
            cache=cache,
        )
    except KlineFileError as exc:
        print(f"screener backtest: {exc}", file=sys.stderr)
        return 2
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    seconds, cpu_seconds = time.perf_counter() - began, time.process_time() - cpu
    if result.symbol_minutes == 0:
        print("screener backtest: the chosen span holds no data", file=sys.stderr)
        return 2
    paths = write_report(result, report_dir)
    print(
        f"{result.count} alerts over {result.symbol_minutes} symbol-minutes of {len(result.symbols)} symbols "
        f"in {seconds:.1f}s ({cpu_seconds:.2f} CPU-s, reading, metrics, rules and alerts file: "
        f"{result.symbol_minutes / max(cpu_seconds, 1e-9):,.0f} symbol-minutes per CPU-second; "
        f"peak memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB); "
        f"report: {paths['markdown']}, chart: {paths['chart']}"
        + (f", alerts: {args.alerts_out}" if args.alerts_out else "")
    )
    return 0
