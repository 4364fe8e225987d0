"""What publishing one minute of N candle events costs the publisher, step by step (CPU time).

The collector and the calculator publish one CloudEvent per symbol per minute. This splits that
into building the events (``make_event``, the CloudEvents SDK's checks), encoding them for NATS
(``nats_binding.to_binary``: headers and JSON), and ``Publisher.publish`` (encoding again, nats-py's
``publish_async`` and reading every acknowledgement), against a real nats-server with JetStream:
the per-event share of the budget in docs/latency.md ("What the targets would take").

    .venv/bin/python bench/publish_cost.py                  # starts its own nats-server
    .venv/bin/python bench/publish_cost.py --symbols 650 --minutes 5 --nats-url nats://127.0.0.1:4222
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import nats

from collector.emitter import closed_candle_event
from screener.embedded.servers import start_nats
from screener.events import nats_binding
from screener.events.models import MINUTE_MS, Candle
from screener.runtime.publisher import Publisher

STREAM = "PUBLISHCOST"
FIRST_MINUTE = 1_772_323_140_000


async def measure(nats_url: str, symbols: int, minutes: int) -> None:
    """Publish ``minutes`` minutes of ``symbols`` candles into a scratch stream; print each step's CPU time."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await js.add_stream(name=STREAM, subjects=["candles.>"], duplicate_window=120)
    publisher = Publisher(js)
    steps: dict[str, list[float]] = {"make_event": [], "to_binary": [], "publish": []}
    try:
        for index in range(minutes):
            minute = FIRST_MINUTE + index * MINUTE_MS
            candles = [
                Candle(
                    symbol=f"S{n}USDT", open_time=minute, open=1.0, high=2.0, low=0.5, close=1.5,
                    volume=10.0, quote_volume=15.0, trades=3,
                )
                for n in range(symbols)
            ]  # fmt: skip
            began = time.process_time()
            events = [closed_candle_event(candle) for candle in candles]
            built = time.process_time()
            for event in events:
                nats_binding.to_binary(event)
            encoded = time.process_time()
            await publisher.publish(events)
            published = time.process_time()
            steps["make_event"].append(built - began)
            steps["to_binary"].append(encoded - built)
            steps["publish"].append(published - encoded)
    finally:
        await js.delete_stream(STREAM)
        await nc.close()
    print(f"{symbols} events a minute, {minutes} minutes; median CPU per minute (per event):")
    for step, times in steps.items():
        median = statistics.median(times)
        print(f"  {step:11} {1e3 * median:7.1f} ms ({1e6 * median / symbols:5.1f} us)")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", type=int, default=650)
    parser.add_argument("--minutes", type=int, default=5)
    parser.add_argument("--nats-url", help="an existing NATS with JetStream (default: start one)")
    args = parser.parse_args()
    if args.nats_url:
        asyncio.run(measure(args.nats_url, args.symbols, args.minutes))
        return
    with tempfile.TemporaryDirectory() as tmp:
        server = start_nats(Path(tmp) / "nats")
        try:
            asyncio.run(measure(server.url, args.symbols, args.minutes))
        finally:
            server.stop()


if __name__ == "__main__":
    cli()
