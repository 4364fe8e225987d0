"""The minute-boundary burst end to end: candles published -> alerts persisted and published.

N symbols get a full day of real state (``bench/calculator_burst.py``'s preparation), then a
calculator worker and a rules worker run on real NATS, Redis and PostgreSQL (the 20 seeded rules).
Each burst publishes one minute of all N symbols; it is over when the rules consumer has acknowledged
every metrics event of that minute, which the worker does only after the alerts are in
``alert_history`` and on the ALERTS stream. Printed: per-burst time, the candles-to-metrics part, and
the alerts of each burst.

    .venv/bin/python bench/pipeline_burst.py --symbols 650 --bursts 6
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import nats
import redis.asyncio as aioredis

from bench.calculator_burst import MetricsCounter, minute_events, prepare
from bench.fresh_pipeline import fresh_pipeline
from functions.calculator.function import Calculator
from functions.rules.function import create as create_rules
from screener.config import Settings, load_settings
from screener.embedded.servers import start_nats, start_postgres, start_redis
from screener.events.models import MINUTE_MS
from screener.names import CONSUMER_RULES, STREAM_ALERTS
from screener.runtime.publisher import Publisher
from screener.runtime.worker import Worker


async def rules_caught_up(js: nats.js.JetStreamContext, delivered_at_least: int) -> float:
    """Return the instant the rules consumer has every expected event delivered and acknowledged."""
    while True:
        info = await js.consumer_info(CONSUMER_RULES.stream.name, CONSUMER_RULES.durable)
        if info.delivered.consumer_seq >= delivered_at_least and info.num_pending == 0 and info.num_ack_pending == 0:
            return time.perf_counter()
        await asyncio.sleep(0.002)


async def measure(args: argparse.Namespace, settings: Settings) -> None:
    redis, nc, js = await fresh_pipeline(settings)
    count = args.symbols
    future, last_history = await prepare(redis, count, args.bursts + 1)
    counter = MetricsCounter()
    await nc.subscribe("metrics.1m.>", cb=counter.on_message)
    calculator_redis = aioredis.from_url(settings.redis_url)
    workers = [
        Worker(Calculator(calculator_redis), js, settings, fetch_timeout=0.05),
        Worker(create_rules(settings), js, settings, fetch_timeout=0.05),
    ]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    publisher = Publisher(js)
    totals, metrics_parts = [], []
    try:
        for k in range(args.bursts):
            minute = last_history + (k + 1) * MINUTE_MS
            alerts_before = (await js.stream_info(STREAM_ALERTS.name)).state.messages
            metrics_done = counter.until(minute, (k + 1) * count)
            start = time.perf_counter()
            await publisher.publish(minute_events(future, count, k))
            metrics_end = await asyncio.wait_for(metrics_done, 120)
            end = await asyncio.wait_for(rules_caught_up(js, (k + 1) * count), 120)
            alerts = (await js.stream_info(STREAM_ALERTS.name)).state.messages - alerts_before
            totals.append(end - start)
            metrics_parts.append(metrics_end - start)
            print(
                f"burst {k + 1}: {count} candles -> metrics {1e3 * (metrics_end - start):7.1f} ms "
                f"-> {alerts} alerts persisted and published {1e3 * (end - start):7.1f} ms"
            )
        warm = totals[1:] or totals
        print(
            f"warm bursts: candle -> alerts median {1e3 * statistics.median(warm):.1f} ms, "
            f"max {1e3 * max(warm):.1f} ms; of which candle -> metrics median "
            f"{1e3 * statistics.median(metrics_parts[1:] or metrics_parts):.1f} ms"
        )
    finally:
        for worker in workers:
            worker.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        await calculator_redis.aclose()
        await redis.aclose()
        await nc.drain()


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        servers = [start_nats(Path(tmp) / "nats"), start_redis(Path(tmp) / "redis")]
        servers.append(start_postgres(Path(tmp) / "pg", durable=False))
        settings = load_settings({}, nats_url=servers[0].url, redis_url=servers[1].url, postgres_dsn=servers[2].url)
        try:
            await measure(args, settings)
        finally:
            for server in servers:
                server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", type=int, default=650)
    parser.add_argument("--bursts", type=int, default=6)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
