"""Replay throughput into JetStream, as fast as the acknowledgements allow (candles/s).

Two cases: the 16 real symbols of the 2025-05 recording, and 1,000 scale-out (virtual) symbols
built from them. Each minute's candles of every symbol are published together and their publish
acknowledgements awaited before the next minute, exactly as ``screener collector --speed max``.

    .venv/bin/python bench/replay_throughput.py                 # starts its own nats-server
    .venv/bin/python bench/replay_throughput.py --nats-url nats://127.0.0.1:4222 --minutes 300

Figures depend on the machine (on a shared 2-core box the CloudEvent encoding, not NATS, is the
bound); the script prints them and saves nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import nats
from nats.js.errors import NotFoundError

from collector.clock import SystemClock
from collector.emitter import CandleEmitter
from collector.replay.market import ReplayMarket
from collector.replay.source import ReplaySource
from marketdata.klines import read_folder
from screener.config import load_settings
from screener.embedded.servers import start_nats
from screener.names import STREAM_CANDLES
from screener.runtime.publisher import Publisher
from screener.streams import ensure_streams

DATA = Path(__file__).resolve().parents[1] / "data" / "klines" / "binance-um-2025-05"


async def measure(nats_url: str, market: ReplayMarket, minutes: int) -> dict[str, float]:
    """Replay ``minutes`` minutes of ``market`` at max speed into a fresh CANDLES stream."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    with contextlib.suppress(NotFoundError):
        await js.delete_stream(STREAM_CANDLES.name)
    await ensure_streams(js, load_settings({}))
    emitter = CandleEmitter(Publisher(js))
    source = ReplaySource(market, emitter, SystemClock(), speed=None, start_ms=market.start_ms)
    per_minute: list[float] = []
    started = time.perf_counter()
    for _ in range(minutes):
        t0 = time.perf_counter()
        await source.emit_next()
        per_minute.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    stored = (await js.stream_info(STREAM_CANDLES.name)).state.messages
    await nc.drain()
    return {
        "symbols": len(market.symbols),
        "minutes": minutes,
        "candles": source.stats.candles,
        "stored": stored,
        "seconds": elapsed,
        "candles_per_s": source.stats.candles / elapsed,
        "minute_p50_ms": statistics.median(per_minute) * 1000,
        "minute_max_ms": max(per_minute) * 1000,
    }


def report(name: str, figures: dict[str, float]) -> None:
    """Print one case's figures."""
    print(
        f"{name:<28} {int(figures['symbols']):>5} symbols x {int(figures['minutes']):>4} min = "
        f"{int(figures['candles']):>7} candles (stream holds {int(figures['stored'])}) in {figures['seconds']:.2f}s: "
        f"{figures['candles_per_s']:,.0f} candles/s; per minute p50 {figures['minute_p50_ms']:.1f} ms, "
        f"max {figures['minute_max_ms']:.1f} ms"
    )


async def main(args: argparse.Namespace) -> None:
    """Run both cases."""
    series = read_folder(args.data)
    real = ReplayMarket(series)
    scaled = ReplayMarket(series, virtual_symbols=args.virtual)
    report("real symbols (2025-05)", await measure(args.nats_url, real, args.minutes))
    scale_minutes = max(2, args.minutes * len(real.symbols) // args.virtual)
    report(f"{args.virtual} scale-out symbols", await measure(args.nats_url, scaled, scale_minutes))


def cli() -> None:
    """Parse the options, start a nats-server when none is given, run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--nats-url", help="an existing NATS server with JetStream (default: start one)")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--minutes", type=int, default=1000, help="minutes of the real-symbol case")
    parser.add_argument("--virtual", type=int, default=1000, help="symbols of the scale-out case")
    args = parser.parse_args()
    if args.nats_url:
        asyncio.run(main(args))
        return
    with tempfile.TemporaryDirectory() as tmp:
        server = start_nats(Path(tmp) / "nats")
        try:
            args.nats_url = server.url
            asyncio.run(main(args))
        finally:
            server.stop()


if __name__ == "__main__":
    cli()
