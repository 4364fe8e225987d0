"""The autoscaling signal is real: the lag KEDA reads rises while no worker runs and drains when one does.

The lag is read exactly as KEDA's ``nats-jetstream`` scaler reads it: ``GET /jsz?acc=$G&consumers=true
&config=true`` on the NATS monitoring port, ``num_pending + num_ack_pending`` of the named durable
consumer. The worker is the real ``screener.runtime.worker.Worker`` on the recorder's real consumer
(``screener.names``), with a no-op handler so that the test measures delivery, not the recorder.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import time
from collections.abc import Sequence

from cloudevents.core.base import BaseCloudEvent
from nats.js import JetStreamContext

from screener import scale_advice
from screener.config import Settings, load_settings
from screener.events.envelope import make_event
from screener.events.models import Candle, candle_event_id
from screener.names import CONSUMERS, EVENT_SOURCE_COLLECTOR, TYPE_CANDLE_CLOSED, ConsumerSpec
from screener.runtime.function import Delivery
from screener.runtime.publisher import Publisher
from screener.runtime.worker import Worker
from screener.scale_advice import SCALING, consumer_lag, desired_replicas
from screener.streams import ensure_consumer, ensure_streams

CONSUMER = CONSUMERS["recorder"]
EVENTS = 120
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
MINUTE = 60_000
START = 1_700_000_040_000  # a minute boundary


class CountingFunction:
    """A function on the recorder's consumer that only counts what it is given."""

    consumer: ConsumerSpec = CONSUMER

    def __init__(self) -> None:
        self.seen: set[str] = set()

    async def start(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Nothing to close."""

    def parse(self, event: BaseCloudEvent) -> BaseCloudEvent:
        """Return the event itself."""
        return event

    async def handle(self, batch: Sequence[Delivery[BaseCloudEvent]]) -> Sequence[BaseCloudEvent]:
        """Record the ids; emit nothing."""
        self.seen.update(delivery.event.get_id() for delivery in batch)
        return []


def candle_events(count: int) -> list[BaseCloudEvent]:
    """Return ``count`` valid closed-candle CloudEvents spread over a few symbols."""
    events: list[BaseCloudEvent] = []
    for i in range(count):
        symbol = SYMBOLS[i % len(SYMBOLS)]
        open_time = START + (i // len(SYMBOLS)) * MINUTE
        candle = Candle(
            symbol=symbol, open_time=open_time, open=100.0, high=101.0, low=99.5, close=100.5, volume=12.0,
            quote_volume=1206.0, trades=42,
        )  # fmt: skip
        events.append(
            make_event(
                event_type=TYPE_CANDLE_CLOSED,
                source=EVENT_SOURCE_COLLECTOR,
                event_id=candle_event_id(symbol, open_time),
                subject=symbol,
                data=candle,
            )
        )
    return events


async def read_lag(monitor_url: str) -> int | None:
    """Return the recorder consumer's lag as KEDA computes it."""
    return await asyncio.to_thread(consumer_lag, monitor_url, "$G", CONSUMER.stream.name, CONSUMER.durable)


async def wait_for_lag(monitor_url: str, expected: int, timeout: float = 20.0) -> list[int | None]:
    """Poll the monitoring endpoint until the lag equals ``expected``; return every reading."""
    readings: list[int | None] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        readings.append(await read_lag(monitor_url))
        if readings[-1] == expected:
            return readings
        await asyncio.sleep(0.1)
    raise AssertionError(f"lag never reached {expected} within {timeout}s; readings {readings[-10:]}")


def settings_for(nats_url: str, monitor_url: str) -> Settings:
    """Return settings pointing at the test's NATS with a small batch size, so draining takes several fetches."""
    return load_settings({}, nats_url=nats_url, nats_monitor_url=monitor_url, batch_size=25, worker_concurrency=1)


async def test_lag_rises_while_no_worker_runs_and_drains_to_zero_when_one_does(
    jetstream: JetStreamContext, nats_url: str, nats_monitor_url: str
) -> None:
    settings = settings_for(nats_url, nats_monitor_url)
    await ensure_streams(jetstream, settings)
    await ensure_consumer(jetstream, CONSUMER, settings)
    assert await read_lag(nats_monitor_url) == 0
    policy = SCALING["recorder"]
    assert desired_replicas(0, policy) == policy.min_replicas

    # No worker: every published candle is pending on the durable consumer, in two steps.
    publisher = Publisher(jetstream)
    events = candle_events(EVENTS)
    await publisher.publish(events[: EVENTS // 2])
    first = await wait_for_lag(nats_monitor_url, EVENTS // 2)
    await publisher.publish(events[EVENTS // 2 :])
    second = await wait_for_lag(nats_monitor_url, EVENTS)
    assert first[-1] is not None
    assert second[-1] is not None
    assert first[-1] < second[-1]
    assert desired_replicas(EVENTS, policy) >= 1  # KEDA would wake the recorder

    # A worker runs: the lag drains to zero and every event was handled.
    function = CountingFunction()
    worker = Worker(function, jetstream, settings, fetch_timeout=0.2)
    task = asyncio.create_task(worker.run())
    try:
        readings = await wait_for_lag(nats_monitor_url, 0)
    finally:
        worker.stop()
        await asyncio.wait_for(task, timeout=10)
    assert function.seen == {event.get_id() for event in events}
    assert readings[-1] == 0
    assert desired_replicas(0, policy) == policy.min_replicas


async def test_missing_consumer_reads_as_none(
    jetstream: JetStreamContext, nats_url: str, nats_monitor_url: str
) -> None:
    await ensure_streams(jetstream, settings_for(nats_url, nats_monitor_url))
    assert await asyncio.to_thread(consumer_lag, nats_monitor_url, "$G", "CANDLES", "no-such-consumer") is None


async def test_scale_advice_command_prints_live_lag_and_replicas(
    jetstream: JetStreamContext, nats_url: str, nats_monitor_url: str
) -> None:
    settings = settings_for(nats_url, nats_monitor_url)
    await ensure_streams(jetstream, settings)
    for spec in CONSUMERS.values():
        await ensure_consumer(jetstream, spec, settings)
    await Publisher(jetstream).publish(candle_events(30))
    await wait_for_lag(nats_monitor_url, 30)
    parser = argparse.ArgumentParser()
    scale_advice.add_arguments(parser)
    out = io.StringIO()

    status = await asyncio.to_thread(scale_advice.run, parser.parse_args(["--json"]), settings, out)

    assert status == 0
    rows = {row["function"]: row for row in json.loads(out.getvalue())}
    assert set(rows) == set(CONSUMERS)
    assert rows["recorder"]["lag"] == 30
    assert rows["calculator"]["lag"] == 30  # it takes candles.> (closed and forming)
    assert rows["rules"]["lag"] == 0
    assert rows["recorder"]["replicas"] == desired_replicas(30, SCALING["recorder"]) == 1
    assert rows["notifier"]["replicas"] == 0
