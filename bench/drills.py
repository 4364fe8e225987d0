"""Fault drills: the real pipeline on recorded data, broken on purpose, compared with a clean run.

Every function and the collector run as OS processes of their own (as `screener up` runs them) on
real NATS (JetStream), Redis and PostgreSQL: the servers named by --nats-url/--redis-url/
--postgres-dsn (or DRILLS_NATS_URL, DRILLS_NATS_MONITOR_URL, DRILLS_REDIS_URL, DRILLS_POSTGRES_DSN),
otherwise embedded ones on free ports. Each run starts clean (streams deleted, Redis flushed, a
fresh migrated database), replays --minutes minutes after the warm-up, applies its faults when a
share of the candles is on the stream, waits for zero lag, then compares metrics payloads (byte for
byte), alerts (stream and alert_history), candle rows and dead letters with the clean run.

    python3 make.py drills --short                      # the CI subset; exits 1 when a drill differs
    .venv/bin/python bench/drills.py                     # every drill, February recording, 6,884 minutes
    .venv/bin/python bench/drills.py --recording 2025-05 --drills clean,calculator-kill-6 --repeat 3
    .venv/bin/python bench/drills.py --list
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from bench.faultdrills.catalog import Drill, catalog
from bench.faultdrills.report import as_json, markdown
from bench.faultdrills.runner import SuiteConfig
from bench.faultdrills.servers import Servers, ServerUrls
from bench.faultdrills.suite import Suite

REPO = Path(__file__).resolve().parents[1]
RECORDINGS = {
    "2026-02": REPO / "data" / "klines" / "binance-um-2026-02",
    "2025-05": REPO / "data" / "klines" / "binance-um-2025-05",
}
FULL_MINUTES = 6884
SHORT_MINUTES = 180


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Return the parsed command line."""
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--short", action="store_true", help="the CI subset on a small slice (exit 1 on a difference)")
    parser.add_argument("--drills", help="comma-separated drill names (see --list); default: all, or the short set")
    parser.add_argument("--list", action="store_true", help="list the drills and exit")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each drill; every run must pass")
    parser.add_argument("--recording", default="2026-02", help="2026-02 (7 symbols), 2025-05 (16) or a folder")
    parser.add_argument(
        "--minutes", type=int, help=f"minutes streamed (default {FULL_MINUTES:,}; short {SHORT_MINUTES})"
    )
    parser.add_argument("--warmup", type=int, default=20650, help="warm-up minutes written before streaming")
    parser.add_argument("--speed", help="replay speed of the runs: a factor, 'realtime' or 'max' (3000; short 1000)")
    parser.add_argument("--speeds", default="1000,3000,max", help="clean runs at these speeds (comma-separated)")
    parser.add_argument("--reference-speed", default="600", help="speed of the reference clean run")
    parser.add_argument("--postgres-outage", type=float, help="seconds PostgreSQL stays down (default 60; short 15)")
    parser.add_argument("--drain-bound", type=float, default=180.0, help="seconds a run may take to reach zero lag")
    parser.add_argument("--run-timeout", type=float, default=1800.0, help="seconds before a run that never ends stops")
    parser.add_argument("--live-minutes", type=int, help="live drill: minutes of wall-clock time (default 8; short 4)")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="extra SCREENER_* setting")
    parser.add_argument("--work-dir", type=Path, help="logs and embedded servers' data (default: a new temp folder)")
    parser.add_argument("--json", type=Path, help="also write every run as JSON to this file ('-': stdout)")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    parser.add_argument("--nats-url", default=os.environ.get("DRILLS_NATS_URL"))
    parser.add_argument("--nats-monitor-url", default=os.environ.get("DRILLS_NATS_MONITOR_URL"))
    parser.add_argument("--redis-url", default=os.environ.get("DRILLS_REDIS_URL"))
    parser.add_argument("--postgres-dsn", default=os.environ.get("DRILLS_POSTGRES_DSN"))
    args = parser.parse_args(argv)
    for item in args.env:
        key, sep, _ = item.partition("=")
        if not sep or not key.startswith("SCREENER_"):
            parser.error(f"--env {item!r}: expected SCREENER_NAME=VALUE")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def choose(args: argparse.Namespace) -> list[Drill]:
    """Return the drills the arguments select."""
    speeds = tuple(s for s in args.speeds.split(",") if s) if not args.short else ()
    everything = catalog(
        short=args.short, speeds=speeds, reference_speed=args.reference_speed, postgres_outage=args.postgres_outage
    )
    if args.drills:
        names = [n.strip() for n in args.drills.split(",") if n.strip()]
        known = {d.name: d for d in everything}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise SystemExit(f"unknown drill(s): {', '.join(unknown)}; see --list")
        return [known[n] for n in names]
    return [d for d in everything if d.short] if args.short else everything


async def main_async(args: argparse.Namespace) -> int:
    """Run the selected drills; print the table; return 1 when a run differs from the clean run."""
    drills = choose(args)
    recording = RECORDINGS.get(args.recording, Path(args.recording))
    if not recording.exists():
        raise SystemExit(f"recording {recording} not found")
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="screener-drills-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    config = SuiteConfig(
        recording=recording,
        minutes=args.minutes or (SHORT_MINUTES if args.short else FULL_MINUTES),
        warmup=args.warmup,
        speed=args.speed or ("1000" if args.short else "3000"),
        drain_bound=args.drain_bound,
        run_timeout=args.run_timeout,
        work_dir=work_dir,
        extra_env=dict(item.split("=", 1) for item in args.env),
        live_minutes=args.live_minutes or (4 if args.short else 8),
    )
    urls = ServerUrls(args.nats_url, args.nats_monitor_url, args.redis_url, args.postgres_dsn)
    servers = Servers(work_dir / "servers", urls)
    await asyncio.to_thread(servers.start)
    started = time.monotonic()
    try:
        suite = Suite(servers, config, drills, args.repeat, args.reference_speed)
        verdicts = await suite.run()
    finally:
        await asyncio.to_thread(servers.stop)
    table = markdown(verdicts)
    print(f"\n## Fault drills ({time.monotonic() - started:.0f} s)\n")
    print(f"command: {' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}\n")
    print(table)
    for drill, reason in suite.skipped:
        print(f"- skipped {drill.name}: {reason}")
    for v in verdicts:
        if v.problems and not v.reference:
            print(f"- {v.result.drill.name} #{v.result.number}: {'; '.join(v.problems)}")
        for note in v.result.notes:
            print(f"- {v.result.drill.name} #{v.result.number}: {note}")
    if args.markdown:
        args.markdown.write_text(table + "\n")
    if args.json:
        document = json.dumps([as_json(v) for v in verdicts], indent=2)
        if str(args.json) == "-":
            print(document)
        else:
            args.json.write_text(document + "\n")
    return 1 if suite.failed else 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the command line."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.list:
        for drill in choose(args):
            print(f"{drill.name:26} {'short ' if drill.short else '      '}{drill.title}")
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # SIGTERM ends the suite as Ctrl-C does: the processes and embedded servers are stopped on the way out.
    signal.signal(signal.SIGTERM, _interrupt)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    raise SystemExit(main())
