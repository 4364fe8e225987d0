"""The minute-boundary burst through real NATS and Redis: candles published -> last metrics event.

Prepares N symbols with a full day of state (the 7 real 2026-02 series written through the write
script, then copied key by key to N symbols), starts calculator workers as production runs them
(``screener run calculator``, one process each, on the calculator's consumer), and then:
- bursts: publishes one minute of all N symbols at once, and times until the N-th metrics event of that
  minute arrives (the first burst reads every ring back; later ones use the workers' mirrors);
- steady throughput: publishes K minutes of all symbols at once and times the drain (candles/s);
- memory: MEMORY USAGE of one symbol's keys, and Redis' used memory per symbol.

The publisher and the counter of metrics events run in this process; the workers in their own, as in
production (a collector and a calculator never share a process). Embedded nats-server and
redis-server are started when no URL is given.

    .venv/bin/python bench/calculator_burst.py --symbols 650 --bursts 6 --steady-minutes 10
    .venv/bin/python bench/calculator_burst.py --workers 2     # two calculator processes (KEDA scale-out)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import nats
import redis.asyncio as aioredis
from cloudevents.core.v1.event import CloudEvent
from nats.aio.msg import Msg

from screener.config import load_settings
from screener.embedded.servers import free_port, start_nats, start_redis
from screener.events.envelope import make_event
from screener.events.models import MINUTE_MS, Candle, candle_event_id
from screener.names import CONSUMER_CALCULATOR, EVENT_SOURCE_COLLECTOR, STREAMS, TYPE_CANDLE_CLOSED
from screener.runtime.publisher import Publisher
from screener.streams import ensure_consumer, ensure_streams
from state import layout
from state.candles import CandleStore
from state.metrics_store import snapshots_key
from tests.functions.calculator.klines import SET_2026, read_candles

DATA = Path(__file__).resolve().parents[1] / "data" / "klines" / SET_2026
HISTORY = 3000  # two laps of the ring
TARGET_MS = 250  # the target for a 650-symbol burst on the 2-core machine


def symbol_name(i: int) -> str:
    """Return the i-th benchmark symbol."""
    return f"B{i:04d}USDT"


async def prepare(redis: aioredis.Redis, count: int, future: int) -> tuple[list[list[Candle]], int]:
    """Write the real series' history and copy it to ``count`` symbols; return the future candles."""
    series = [read_candles(f, limit=HISTORY + future) for f in sorted(DATA.glob("*.csv.gz"))]
    store = CandleStore(redis)
    for source in series:
        await store.write(source[:HISTORY], read_back=False)
    dumps = {s[0].symbol: [await redis.dump(k) for k in layout.state_keys(s[0].symbol)] for s in series}
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(count):
            name = series[i % len(series)][0].symbol
            for key, blob in zip(layout.state_keys(symbol_name(i)), dumps[name], strict=True):
                if blob is not None:  # the write log is empty after one big write
                    pipe.restore(key, 0, blob, replace=True)
        await pipe.execute()
    return [s[HISTORY:] for s in series], series[0][HISTORY - 1].open_time


def minute_events(future: list[list[Candle]], count: int, k: int) -> list[CloudEvent]:
    """Return the closed-candle events of minute index ``k`` for every symbol."""
    events = []
    for i in range(count):
        c = future[i % len(future)][k].model_copy(update={"symbol": symbol_name(i)})
        events.append(
            make_event(
                event_type=TYPE_CANDLE_CLOSED,
                source=EVENT_SOURCE_COLLECTOR,
                event_id=candle_event_id(c.symbol, c.open_time),
                subject=c.symbol,
                data=c,
            )
        )
    return events


class MetricsCounter:
    """Count metrics events per minute as they arrive (core NATS, no JSON decoding)."""

    def __init__(self) -> None:
        self.seen: dict[int, int] = {}
        self.waiters: dict[tuple[int, int], asyncio.Future[float]] = {}

    async def on_message(self, msg: Msg) -> None:
        """Count one event; wake whoever waits for this minute's count."""
        event_id = (msg.headers or {}).get("ce-id", "")
        minute = int(event_id.rsplit(":", 1)[-1])
        self.seen[minute] = self.seen.get(minute, 0) + 1
        # Only the waiters still open: counting must not slow down as bursts accumulate.
        for key in [k for k in self.waiters if k[0] >= minute]:
            wanted, count = key
            if sum(v for m, v in self.seen.items() if m <= wanted) >= count:
                self.waiters.pop(key).set_result(time.perf_counter())

    def until(self, minute: int, count: int) -> asyncio.Future[float]:
        """Return a future set when ``count`` events of minutes up to ``minute`` have arrived."""
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiters[(minute, count)] = future
        return future


def plot_bursts(path: Path, drains: list[float], steady_rate: float | None, args: argparse.Namespace) -> None:
    """Draw each burst's time to drain against the 250 ms target (PNG at ``path``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 3.6), dpi=110)
    numbers = range(1, len(drains) + 1)
    colours = ["#9aa5b1" if k == 0 else "#2f80ed" for k in range(len(drains))]
    axis.bar(numbers, [1e3 * d for d in drains], color=colours)
    axis.axhline(TARGET_MS, color="#eb5757", linestyle="--", linewidth=1.2, label=f"target {TARGET_MS} ms")
    if len(drains) > 1:
        median = 1e3 * statistics.median(drains[1:])
        axis.axhline(median, color="#27ae60", linewidth=1.2, label=f"warm median {median:.0f} ms")
    axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axis.set_xlabel("burst (first: cold, rings read back; others: warm mirrors)")
    axis.set_ylabel("candles published -> last metrics event (ms)")
    steady = f", steady {steady_rate:,.0f} candles/s" if steady_rate else ""
    axis.set_title(f"Minute-boundary burst: {args.symbols} symbols, {args.workers} calculator process(es){steady}")
    axis.legend(loc="upper right")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


class WorkerProcesses:
    """Calculator workers as production runs them: ``screener run calculator``, one process each."""

    def __init__(self, args: argparse.Namespace, nats_url: str, redis_url: str) -> None:
        self._args = args
        self._ports = [free_port() for _ in range(args.workers)]
        self._env = {k: v for k, v in os.environ.items() if not k.startswith("SCREENER_")}
        self._env.update(
            SCREENER_NATS_URL=nats_url,
            SCREENER_REDIS_URL=redis_url,
            SCREENER_BATCH_SIZE=str(args.batch_size),
            SCREENER_WORKER_CONCURRENCY=str(args.concurrency),
            SCREENER_LOG_LEVEL="WARNING",
        )
        self._processes: list[asyncio.subprocess.Process] = []
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Start the processes and wait until each is bound to the consumer."""
        command = [str(Path(sys.executable).parent / "screener"), "run", "calculator"]
        for port in self._ports:
            env = {**self._env, "SCREENER_HEALTH_PORT": str(port)}
            self._processes.append(await asyncio.create_subprocess_exec(*command, env=env))
        self._http = aiohttp.ClientSession()
        deadline = time.monotonic() + 60
        for port in self._ports:
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with self._http.get(f"http://127.0.0.1:{port}/readyz") as response:
                        if response.status == 200:
                            break
                if time.monotonic() > deadline or any(p.returncode is not None for p in self._processes):
                    raise RuntimeError("a calculator worker did not become ready")
                await asyncio.sleep(0.1)
        print(f"{len(self._processes)} calculator worker process(es) ready")

    async def batches(self) -> int:
        """Return the batches the workers have processed so far."""
        assert self._http is not None
        total = 0
        for port in self._ports:
            async with self._http.get(f"http://127.0.0.1:{port}/stats") as response:
                total += int((await response.json())["batches"])
        return total

    async def stop(self) -> None:
        """Stop the workers (SIGTERM: they drain) and wait for them."""
        for process in self._processes:
            process.send_signal(signal.SIGTERM)
        for process in self._processes:
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
        if self._http is not None:
            await self._http.close()


async def run(args: argparse.Namespace) -> None:
    servers = []
    with tempfile.TemporaryDirectory() as tmp:
        nats_url, redis_url = args.nats_url, args.redis_url
        if not nats_url:
            servers.append(start_nats(Path(tmp) / "nats"))
            nats_url = servers[-1].url
        if not redis_url:
            servers.append(start_redis(Path(tmp) / "redis"))
            redis_url = servers[-1].url
        try:
            await measure(args, nats_url, redis_url)
        finally:
            for server in servers:
                server.stop()


async def measure(args: argparse.Namespace, nats_url: str, redis_url: str) -> None:
    settings = load_settings({}, batch_size=args.batch_size, worker_concurrency=args.concurrency)
    redis = aioredis.from_url(redis_url)
    await redis.flushdb()
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    for stream in STREAMS:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_stream(stream.name)
    await ensure_streams(js, settings)
    await ensure_consumer(js, CONSUMER_CALCULATOR, settings)
    count = args.symbols
    started = time.perf_counter()
    future, last_history = await prepare(redis, count, args.bursts + args.steady_minutes + 1)
    print(f"prepared {count} symbols with {HISTORY} minutes each in {time.perf_counter() - started:.1f} s")

    counter = MetricsCounter()
    await nc.subscribe("metrics.1m.>", cb=counter.on_message)
    workers = WorkerProcesses(args, nats_url, redis_url)
    await workers.start()
    publisher = Publisher(js)
    expected = 0
    try:
        drains = []
        for k in range(args.bursts):
            events = minute_events(future, count, k)
            minute = last_history + (k + 1) * MINUTE_MS
            expected += count
            done = counter.until(minute, expected)
            batches_before = await workers.batches()
            start = time.perf_counter()
            await publisher.publish(events)
            published = time.perf_counter()
            end = await asyncio.wait_for(done, 120)
            drains.append(end - start)
            label = "cold (rings read back)" if k == 0 else "warm (mirrors)"
            batches = await workers.batches() - batches_before
            print(
                f"burst {k + 1}: {count} candles -> last metrics event {1e3 * (end - start):7.1f} ms "
                f"(publishing took {1e3 * (published - start):6.1f} ms, {batches} batches) [{label}]"
            )
            await asyncio.sleep(args.pause)
        if len(drains) > 1:
            warm = drains[1:]
            print(f"warm bursts: median {1e3 * statistics.median(warm):.1f} ms, max {1e3 * max(warm):.1f} ms")
        steady_rate = None

        if args.steady_minutes:
            events = []
            for k in range(args.bursts, args.bursts + args.steady_minutes):
                events += minute_events(future, count, k)
            expected += len(events)
            last = last_history + (args.bursts + args.steady_minutes) * MINUTE_MS
            done = counter.until(last, expected)
            start = time.perf_counter()
            await publisher.publish(events)
            end = await asyncio.wait_for(done, 600)
            steady_rate = len(events) / (end - start)
            print(
                f"steady: {len(events)} candles ({args.steady_minutes} minutes x {count}) drained in "
                f"{end - start:.2f} s = {len(events) / (end - start):,.0f} candles/s (publishing included)"
            )
    finally:
        await workers.stop()
    if args.plot:
        plot_bursts(args.plot, drains, steady_rate, args)
        print(f"plot written to {args.plot}")

    symbol = symbol_name(0)
    keys = [*layout.state_keys(symbol), layout.gap_key(symbol), snapshots_key(symbol)]
    sizes = {k: await redis.memory_usage(k) or 0 for k in keys}
    ring_bytes = sum(sizes[k] for k in layout.state_keys(symbol))
    print("memory of one symbol (MEMORY USAGE):")
    for key, size in sizes.items():
        print(f"  {key:32s} {size:8,d} bytes")
    print(f"  rings + version: {ring_bytes:,d} bytes; with the snapshots hash: {ring_bytes + sizes[keys[-1]]:,d} bytes")
    used = (await redis.info("memory"))["used_memory"]
    print(f"Redis used_memory / symbols: {used / count:,.0f} bytes per symbol ({count} symbols)")
    await redis.aclose()
    await nc.drain()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", type=int, default=650)
    parser.add_argument("--bursts", type=int, default=5)
    parser.add_argument("--steady-minutes", type=int, default=10)
    parser.add_argument("--workers", type=int, default=1, help="calculator worker processes")
    parser.add_argument("--concurrency", type=int, default=2, help="batches in flight per worker")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--pause", type=float, default=0.2, help="seconds between bursts")
    parser.add_argument("--plot", type=Path, default=None, help="write a PNG of the bursts here")
    parser.add_argument("--nats-url", default=None)
    parser.add_argument("--redis-url", default=None)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
