"""``screener collector``: run the live Binance collector or a replay of recorded klines.

screener collector                                  # replay of data/klines/binance-um-2025-05 at 60x
screener collector --speed max --virtual-symbols 1000
screener collector --source binance --symbols BTCUSDT ETHUSDT
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path
from typing import Any

import aiohttp

from collector.binance.live import LiveCollector
from collector.clock import SystemClock
from collector.emitter import CandleEmitter
from collector.health import CollectorHealth
from collector.replay.runner import load_market, prepare_replay
from marketdata.klines import KlineFileError
from screener import eventloop
from screener.config import Settings
from screener.connections import connect_nats, create_pg_pool
from screener.health import serve_health
from screener.ports import EXIT_CONFIG
from screener.runtime.publisher import Publisher
from screener.streams import ensure_streams
from screener.tracing import setup_tracing

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``screener collector`` (each overrides its SCREENER_* setting)."""
    parser.add_argument("--source", choices=["binance", "replay"], help="live Binance or a replay (SCREENER_SOURCE)")
    parser.add_argument("--data", type=Path, help="replay: a folder of kline CSV files, or one file")
    parser.add_argument("--speed", help="replay: a factor (60 = a minute per second), 'realtime' or 'max'")
    parser.add_argument("--symbols", nargs="+", help="only these symbols (live: a fixed list)")
    parser.add_argument("--top-n", type=int, help="live: the N symbols with the largest 24h quote volume")
    parser.add_argument("--virtual-symbols", type=int, help="replay: N time-shifted copies for load tests")
    parser.add_argument("--no-loop", action="store_true", help="replay: stop at the end of the recording")
    parser.add_argument("--minutes", type=int, help="replay: stop after emitting this many minutes")
    parser.add_argument(
        "--warmup-only", action="store_true", help="replay: write the warm-up history into PostgreSQL and exit"
    )


def apply_arguments(args: argparse.Namespace, settings: Settings) -> Settings:
    """Return ``settings`` with the command-line overrides applied (validated like the environment)."""
    overrides: dict[str, Any] = {}
    if args.source:
        overrides["source"] = args.source
    if args.data:
        overrides["replay_data"] = args.data
    if args.speed:
        overrides["replay_speed"] = args.speed
    if args.symbols:
        overrides["symbols"] = [s.upper() for part in args.symbols for s in part.split(",") if s]
    if args.top_n is not None:
        overrides["top_n"] = args.top_n
    if args.virtual_symbols is not None:
        overrides["replay_virtual_symbols"] = args.virtual_symbols
    if args.no_loop:
        overrides["replay_loop"] = False
    return Settings.model_validate({**settings.model_dump(), **overrides})


async def collect(settings: Settings, *, max_minutes: int | None = None, warmup_only: bool = False) -> None:
    """Run the configured source until cancelled (or, for a replay, until it ends).

    With ``SCREENER_HEALTH_PORT`` set, serve ``/healthz``, ``/readyz`` and ``/stats`` (collector.health).
    """
    nc = await connect_nats(settings, name="screener-collector")
    pool = await create_pg_pool(settings) if settings.postgres_dsn else None
    runner = None
    try:
        js = nc.jetstream()
        await ensure_streams(js, settings)
        emitter = CandleEmitter(Publisher(js))
        health = CollectorHealth(emitter.stats, settings.collector_stale_seconds)
        if settings.health_port and not warmup_only:
            runner = await serve_health(health, settings.health_port)
        clock = SystemClock()
        if settings.source == "replay":
            market = load_market(settings)
            source = await prepare_replay(market, emitter, clock, settings, pool)
            if not warmup_only:
                health.streaming()
                await source.run(max_minutes=max_minutes)
                log.info("replay finished: %s", source.stats)
        else:
            async with aiohttp.ClientSession() as session:
                collector = LiveCollector(settings, emitter, session, clock, pool=pool)
                ready = asyncio.create_task(_streaming_once_ready(collector, health))
                try:
                    await collector.run()
                finally:
                    ready.cancel()
    finally:
        if runner is not None:
            await runner.cleanup()
        if pool is not None:
            await pool.close()
        await nc.drain()


async def _streaming_once_ready(collector: LiveCollector, health: CollectorHealth) -> None:
    await collector.ready.wait()
    health.streaming()


async def _main(settings: Settings, args: argparse.Namespace) -> int:
    task = asyncio.create_task(collect(settings, max_minutes=args.minutes, warmup_only=args.warmup_only))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        log.info("collector stopped")
    except KlineFileError as exc:  # a restart would read the same files: say why, once
        log.error("replay data cannot be read: %s", exc)
        return EXIT_CONFIG
    return 0


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run the collector until SIGTERM or Ctrl-C."""
    settings = apply_arguments(args, settings)
    setup_tracing(settings, "collector")
    return eventloop.run(_main(settings, args))
