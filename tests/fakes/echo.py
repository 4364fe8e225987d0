"""A tiny function for testing the runtime: it records each input in Redis and emits one event per input.

Its effect (a Redis hash field per input id) and its outputs (deterministic ids) are idempotent, so
"processed once in effect" can be checked by counting them. ``python -m tests.fakes.echo`` runs it as
a worker process, so tests can kill it mid-batch.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.v1.event import CloudEvent

from screener.config import Settings, load_settings
from screener.events.envelope import InvalidEvent, make_event
from screener.names import STREAM_CANDLES, TYPE_ALERT_TRIGGERED, ConsumerSpec
from screener.runtime.function import Delivery, TransientError

ECHO_CONSUMER = ConsumerSpec("echo", "echo", STREAM_CANDLES, "candles.>")


def input_event(n: int, symbol: str = "TESTUSDT", **data: Any) -> CloudEvent:
    """Return the n-th test input: a candle-type event with a deterministic id."""
    return make_event(
        event_type="com.screener.candle.closed.v1",
        source="/tests",
        event_id=f"in-{n}",
        subject=symbol,
        data={"n": n, **data},
    )


class Echo:
    """Record each input in Redis (``echo:seen``), count attempts (``echo:attempts``), emit one event each."""

    consumer = ECHO_CONSUMER

    def __init__(self, redis_url: str, delay: float = 0.0) -> None:
        self.redis_url = redis_url
        self.delay = delay
        self.redis: aioredis.Redis | None = None
        self.transient_failures_left = 0

    async def start(self) -> None:
        self.redis = aioredis.from_url(self.redis_url)

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()

    def parse(self, event: BaseCloudEvent) -> dict[str, Any]:
        data = event.get_data()
        if not isinstance(data, dict) or not isinstance(data.get("n"), int):
            raise InvalidEvent("data.n must be an integer", event.get_id())
        return data

    async def handle(self, batch: Sequence[Delivery[dict[str, Any]]]) -> list[BaseCloudEvent]:
        assert self.redis is not None
        if self.transient_failures_left:
            self.transient_failures_left -= 1
            raise TransientError("dependency not ready", delay_seconds=0.1)
        if any(d.payload.get("crash") for d in batch):
            raise RuntimeError("boom: poison input")
        pipe = self.redis.pipeline()
        for delivery in batch:
            pipe.hset("echo:seen", delivery.event.get_id(), delivery.payload["n"])
            pipe.hincrby("echo:attempts", delivery.event.get_id(), 1)
        await pipe.execute()
        if self.delay:  # state is written, nothing is acked yet: the window a crash can hit
            await asyncio.sleep(self.delay)
        return [
            make_event(
                event_type=TYPE_ALERT_TRIGGERED,
                source="/tests/echo",
                event_id=f"out-{d.payload['n']}",
                subject=d.event.get_subject() or "TESTUSDT",
                data={"n": d.payload["n"]},
                traceparent=d.traceparent,
            )
            for d in batch
        ]


async def _main() -> None:
    import nats

    from screener.runtime.worker import Worker

    nats_url, redis_url, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])
    settings: Settings = load_settings({}, nats_url=nats_url, ack_wait_seconds=2.0, batch_size=20)
    nc = await nats.connect(nats_url)
    worker = Worker(Echo(redis_url, delay), nc.jetstream(), settings, concurrency=1)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, worker.stop)
    print("ready", flush=True)
    await worker.run()
    await nc.drain()
    print(f"drained processed={worker.stats.processed}", flush=True)


if __name__ == "__main__":
    os.environ.pop("SCREENER_NATS_URL", None)
    asyncio.run(_main())
