"""The rules' share of the minute burst, through real NATS, Redis and PostgreSQL.

N symbols' metrics events of one minute (computed by the calculator's code from copies of the real
2026-02 series, and saved in the metrics store as the calculator does) are published at once; a
rules worker (``screener.runtime.worker``) evaluates all 20 rules, stores the alerts in
``alert_history`` and publishes them, and only then acknowledges. The time is from the first publish
to the last acknowledgement. Add ``bench/calculator_burst.py``'s candle -> metrics figure for the
whole candle -> alert path.

    .venv/bin/python bench/rules_burst.py --symbols 650 --bursts 8
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import nats
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rules_eval import build  # the same symbols as the evaluation benchmark

from functions.calculator.compute import compute_arrays, to_payloads
from functions.rules.function import RulesFunction
from functions.rules.replay_state import MemoryCandleState
from functions.rules.store import seed_rules
from screener.config import load_settings
from screener.db.migrate import migrate
from screener.embedded.servers import start_nats, start_postgres, start_redis
from screener.events.envelope import make_event
from screener.events.models import metrics_event_id
from screener.names import CONSUMER_RULES, EVENT_SOURCE_CALCULATOR, STREAM_METRICS, TYPE_METRICS_COMPUTED
from screener.runtime.publisher import Publisher
from screener.runtime.worker import Worker
from screener.streams import ensure_streams
from state.metrics_store import MetricsStore


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--symbols", type=int, default=650)
    parser.add_argument("--bursts", type=int, default=8)
    parser.add_argument("--history", type=int, default=1600)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="rules-burst-"))
    servers = [start_nats(root / "nats"), start_redis(root / "redis"), start_postgres(root / "pg", durable=False)]
    nats_server, redis_server, pg_server = servers
    try:
        conn = await asyncpg.connect(pg_server.url)
        await migrate(conn)
        await seed_rules(conn)
        settings = load_settings({}, nats_url=nats_server.url, redis_url=redis_server.url, postgres_dsn=pg_server.url)
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        await ensure_streams(js, settings)
        redis_client = aioredis.from_url(redis_server.url)
        metrics_store = MetricsStore(redis_client)

        names, rows = build(args.symbols, args.history, args.bursts)
        state = MemoryCandleState()
        for t in range(args.history):
            for name, symbol_rows in zip(names, rows, strict=True):
                state.write_row(name, symbol_rows[t])

        function = RulesFunction(settings)
        worker = Worker(function, js, settings, fetch_timeout=0.05)
        task = asyncio.create_task(worker.run())
        for _ in range(400):  # the worker binds its consumer, then fetches
            if worker.ready:
                break
            await asyncio.sleep(0.05)
        publisher = Publisher(js)
        timings, alerts = [], []
        for t in range(args.history, args.history + args.bursts):
            for name, symbol_rows in zip(names, rows, strict=True):
                state.write_row(name, symbol_rows[t])
            minute = int(rows[0][t][0])
            payloads = to_payloads(compute_arrays(minute, [state.state(n) for n in names]))
            await metrics_store.save_payloads(payloads)
            events = [
                make_event(
                    event_type=TYPE_METRICS_COMPUTED,
                    source=EVENT_SOURCE_CALCULATOR,
                    event_id=metrics_event_id(p["symbol"], minute),
                    subject=p["symbol"],
                    data=p,
                )
                for p in payloads
            ]
            before = function.alerts_emitted
            start = time.perf_counter()
            await publisher.publish(events)
            while True:
                info = await js.consumer_info(STREAM_METRICS.name, CONSUMER_RULES.durable)
                if info.num_pending == 0 and info.num_ack_pending == 0:
                    break
                await asyncio.sleep(0.002)
            timings.append((time.perf_counter() - start) * 1000)
            alerts.append(function.alerts_emitted - before)
        worker.stop()
        await task
        stored = await conn.fetchval("SELECT count(*) FROM alert_history")
        await conn.close()
        await redis_client.aclose()
        await nc.drain()
    finally:
        for server in servers:
            server.stop()
    print(f"{args.symbols} symbols, {args.bursts} minute bursts: metrics published -> alerts stored, published, acked")
    print(f"  per burst: median {statistics.median(timings):.0f} ms, max {max(timings):.0f} ms "
          f"(all: {', '.join(f'{x:.0f}' for x in timings)})")  # fmt: skip
    print(f"  alerts per burst: {alerts}; rows in alert_history: {stored}")


if __name__ == "__main__":
    asyncio.run(main())
