"""Events per second through the worker runtime (no-op handler) next to raw nats-py, same run.

Both sides move the same CloudEvents through the same JetStream server: publish N events with
acknowledgements, then consume them from a durable pull consumer with explicit acks. The raw side is
the floor (nats-py only); the runtime side adds decoding, parsing, spans, the handler call and the
ack-after-publish protocol. The ratio is the runtime's overhead.

    .venv/bin/python bench/runtime_overhead.py [--events 20000] [--nats-url nats://...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nats
from cloudevents.core.base import BaseCloudEvent
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from screener.config import load_settings
from screener.embedded.servers import start_nats
from screener.events import nats_binding
from screener.names import STREAM_CANDLES, STREAMS, ConsumerSpec
from screener.runtime.function import Delivery
from screener.runtime.publisher import MSG_ID_HEADER, Publisher
from screener.runtime.worker import Worker
from screener.streams import ensure_streams
from tests.fakes.echo import input_event

NOOP_CONSUMER = ConsumerSpec("noop", "bench-noop", STREAM_CANDLES, "candles.>")


class NoOp:
    """A function that accepts every event and emits nothing."""

    consumer = NOOP_CONSUMER

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def parse(self, event: BaseCloudEvent) -> Any:
        return event.get_data()

    async def handle(self, batch: Sequence[Delivery[Any]]) -> list[BaseCloudEvent]:
        return []


async def reset(js: JetStreamContext) -> None:
    for stream in STREAMS:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_stream(stream.name)


async def raw_round(js: JetStreamContext, events: list[BaseCloudEvent], batch: int) -> tuple[float, float]:
    semaphore = asyncio.Semaphore(512)

    async def publish(event: BaseCloudEvent) -> None:
        headers, body = nats_binding.to_binary(event)  # a raw publisher must encode the event too
        async with semaphore:
            await js.publish("candles.1m.TESTUSDT", body, headers={**headers, MSG_ID_HEADER: event.get_id()})

    start = time.perf_counter()
    await asyncio.gather(*(publish(event) for event in events))
    published = time.perf_counter() - start
    await js.add_consumer(
        STREAM_CANDLES.name,
        ConsumerConfig(durable_name="bench-raw", ack_policy=AckPolicy.EXPLICIT, max_ack_pending=20000),
    )
    sub = await js.pull_subscribe_bind("bench-raw", stream=STREAM_CANDLES.name)
    start = time.perf_counter()
    seen = 0
    while seen < len(events):
        msgs = await sub.fetch(batch, timeout=5)
        for msg in msgs:
            nats_binding.from_message(msg.headers, msg.data)  # the raw side decodes too: same work as a consumer needs
        await asyncio.gather(*(m.ack() for m in msgs))
        seen += len(msgs)
    return published, time.perf_counter() - start


async def runtime_round(js: JetStreamContext, events: list[BaseCloudEvent], batch: int) -> tuple[float, float]:
    settings = load_settings({}, batch_size=batch, max_ack_pending=20000)
    start = time.perf_counter()
    await Publisher(js).publish(events)
    published = time.perf_counter() - start
    worker = Worker(NoOp(), js, settings, concurrency=1, fetch_timeout=0.5)
    start = time.perf_counter()
    task = asyncio.create_task(worker.run())
    while worker.stats.processed < len(events):
        await asyncio.sleep(0.002)
    consumed = time.perf_counter() - start
    worker.stop()
    await task
    return published, consumed


async def main(events_count: int, batch: int, nats_url: str | None, repeats: int) -> None:
    server = None
    if nats_url is None:
        server = start_nats(Path(tempfile.mkdtemp()) / "nats")
        nats_url = server.url
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    settings = load_settings({})
    events = [input_event(n) for n in range(events_count)]
    samples: dict[str, list[tuple[float, float]]] = {"raw nats-py": [], "worker runtime": []}
    for _ in range(repeats):  # alternate the two sides so load on the machine hits both alike
        for label, round_ in (("raw nats-py", raw_round), ("worker runtime", runtime_round)):
            await reset(js)
            await ensure_streams(js, settings)
            published, consumed = await round_(js, events, batch)
            samples[label].append((events_count / published, events_count / consumed))
    rows = [
        (label, statistics.median(p for p, _ in values), statistics.median(c for _, c in values))
        for label, values in samples.items()
    ]
    await nc.drain()
    if server:
        server.stop()
    print(f"{events_count} events, batch {batch}, one consumer, median of {repeats} alternating runs")
    print(f"{'':16}{'publish ev/s':>14}{'consume ev/s':>14}")
    for label, pub, con in rows:
        print(f"{label:16}{pub:14,.0f}{con:14,.0f}")
    (_, raw_pub, raw_con), (_, rt_pub, rt_con) = rows
    print(
        f"runtime / raw:  publish {rt_pub / raw_pub:.2f}x, consume {rt_con / raw_con:.2f}x "
        f"(overhead {100 * (1 - rt_con / raw_con):.0f}% on consume)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--nats-url")
    options = parser.parse_args()
    asyncio.run(main(options.events, options.batch, options.nats_url, options.repeats))
