"""The JetStream worker against a real NATS server: ack after publish, dead letters, retries, crashes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from cloudevents.core.base import BaseCloudEvent
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from screener.names import STREAM_ALERTS, STREAM_DEAD_LETTERS, dead_letter_subject
from screener.runtime.function import Delivery, PartialBatch
from screener.runtime.publisher import REASON_HEADER, Publisher, PublishError
from screener.runtime.worker import Worker
from screener.streams import ensure_consumer
from tests.fakes.echo import ECHO_CONSUMER, Echo, input_event
from tests.runtime.helpers import fast_settings, running

REPO = Path(__file__).resolve().parents[2]


async def wait_until(predicate: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def stream_count(js: JetStreamContext, stream: str) -> int:
    return int((await js.stream_info(stream)).state.messages)


async def test_batch_is_handled_published_and_acked(
    prepared: JetStreamContext, redis_client: aioredis.Redis, redis_url: str
) -> None:
    await Publisher(prepared).publish([input_event(n) for n in range(100)])
    worker = Worker(Echo(redis_url), prepared, fast_settings(), fetch_timeout=0.2)
    async with running(worker):
        await wait_until(lambda: _alerts_at_least(prepared, 100))
    assert await redis_client.hlen("echo:seen") == 100
    info = await prepared.consumer_info("CANDLES", "echo")
    assert info.num_pending == 0
    assert info.num_ack_pending == 0
    assert worker.stats.emitted == 100


async def _alerts_at_least(js: JetStreamContext, n: int) -> bool:
    return await stream_count(js, STREAM_ALERTS.name) >= n


async def test_republished_events_are_dropped_by_the_duplicate_window(prepared: JetStreamContext) -> None:
    publisher = Publisher(prepared)
    await publisher.publish([input_event(n) for n in range(10)])
    await publisher.publish([input_event(n) for n in range(10)])
    assert await stream_count(prepared, "CANDLES") == 10


async def test_malformed_and_invalid_events_go_to_dead_letters_with_reason(
    prepared: JetStreamContext, nats_client: NATS, redis_url: str
) -> None:
    await prepared.publish("candles.1m.TESTUSDT", b"not a cloudevent")
    await Publisher(prepared).publish([input_event(1), input_event(2, n_text="x")])
    bad = input_event(3)
    bad._data = {"n": "three"}  # an event whose payload the function rejects
    await Publisher(prepared).publish([bad])
    worker = Worker(Echo(redis_url), prepared, fast_settings(), fetch_timeout=0.2)
    async with running(worker):
        await wait_until(lambda: _count_at_least(prepared, STREAM_DEAD_LETTERS.name, 2))
        await wait_until(lambda: _alerts_at_least(prepared, 2))
    sub = await prepared.subscribe(dead_letter_subject("echo"), ordered_consumer=True)
    reasons = []
    for _ in range(2):
        msg = await sub.next_msg(timeout=5)
        reasons.append(msg.headers[REASON_HEADER])
    assert any("not a CloudEvent" in r for r in reasons)
    assert any("data.n must be an integer" in r for r in reasons)
    assert worker.stats.dead_lettered == 2


async def _count_at_least(js: JetStreamContext, stream: str, n: int) -> bool:
    return await stream_count(js, stream) >= n


async def test_poison_event_is_isolated_and_dead_lettered_after_max_crashes(
    prepared: JetStreamContext, redis_client: aioredis.Redis, redis_url: str
) -> None:
    events = [input_event(n) for n in range(5)] + [input_event(99, crash=True)]
    await Publisher(prepared).publish(events)
    settings = fast_settings(max_crashes=2)
    await ensure_consumer(prepared, ECHO_CONSUMER, settings)
    worker = Worker(Echo(redis_url), prepared, settings, fetch_timeout=0.2)
    async with running(worker):
        await wait_until(lambda: _count_at_least(prepared, STREAM_DEAD_LETTERS.name, 1), timeout=30)
    assert await redis_client.hlen("echo:seen") == 5  # the neighbours were processed
    sub = await prepared.subscribe(dead_letter_subject("echo"), ordered_consumer=True)
    msg = await sub.next_msg(timeout=5)
    assert "crashed 2 times" in msg.headers[REASON_HEADER]
    assert "boom: poison input" in msg.headers[REASON_HEADER]


async def test_transient_error_naks_and_the_batch_is_retried(
    prepared: JetStreamContext, redis_client: aioredis.Redis, redis_url: str
) -> None:
    await Publisher(prepared).publish([input_event(n) for n in range(10)])
    echo = Echo(redis_url)
    echo.transient_failures_left = 2
    worker = Worker(echo, prepared, fast_settings(), fetch_timeout=0.2)
    async with running(worker):
        await wait_until(lambda: _alerts_at_least(prepared, 10))
    assert echo.transient_failures_left == 0  # both failures happened...
    assert worker.stats.retried >= 2  # ...and the events of the failed batches were naked for a retry
    assert await redis_client.hlen("echo:seen") == 10
    assert worker.stats.dead_lettered == 0


async def test_slow_handler_is_bounded_by_max_ack_pending(prepared: JetStreamContext, redis_url: str) -> None:
    settings = fast_settings(max_ack_pending=7, ack_wait_seconds=30.0)
    await ensure_consumer(prepared, ECHO_CONSUMER, settings)
    await Publisher(prepared).publish([input_event(n) for n in range(40)])
    worker = Worker(Echo(redis_url, delay=0.3), prepared, settings, batch_size=50, concurrency=3, fetch_timeout=0.2)
    observed = []
    async with running(worker):
        for _ in range(15):
            info = await prepared.consumer_info("CANDLES", "echo")
            observed.append(info.num_ack_pending)
            await asyncio.sleep(0.1)
        await wait_until(lambda: _alerts_at_least(prepared, 40), timeout=30)
    assert max(observed) <= 7
    assert max(observed) > 0


async def test_worker_killed_mid_batch_has_events_redelivered_and_processed_once_in_effect(
    prepared: JetStreamContext, redis_client: aioredis.Redis, nats_url: str, redis_url: str
) -> None:
    await Publisher(prepared).publish([input_event(n) for n in range(60)])
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "tests.fakes.echo", nats_url, redis_url, "0.4"]
    first = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE)
    assert first.stdout is not None and first.stdout.readline().strip() == b"ready"
    await wait_until(lambda: _attempted_some(redis_client))
    first.send_signal(signal.SIGKILL)  # mid-batch: it has written some state but acked nothing of this batch
    first.wait(10)
    second = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE)
    try:
        await wait_until(lambda: _alerts_at_least(prepared, 60), timeout=60)
        await wait_until(lambda: _all_acked(prepared), timeout=30)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(20)
    assert await redis_client.hlen("echo:seen") == 60
    assert await stream_count(prepared, STREAM_ALERTS.name) == 60  # re-published outputs were deduplicated
    attempts = [int(v) for v in (await redis_client.hgetall("echo:attempts")).values()]
    assert max(attempts) >= 2  # some events really were handled twice...
    assert second.returncode == 0  # ...and SIGTERM drained cleanly


async def _attempted_some(client: aioredis.Redis) -> bool:
    return int(await client.hlen("echo:attempts")) >= 20


async def _all_acked(js: JetStreamContext) -> bool:
    info = await js.consumer_info("CANDLES", "echo")
    return info.num_pending == 0 and info.num_ack_pending == 0


class _Waits(Echo):
    """Echo that makes event 0 wait (``PartialBatch``) for its first ``waits`` deliveries; the rest pass."""

    def __init__(self, redis_url: str, waits: int) -> None:
        super().__init__(redis_url)
        self.waits_left = waits

    async def handle(self, batch: Sequence[Delivery[dict[str, Any]]]) -> list[BaseCloudEvent]:
        held = [i for i, d in enumerate(batch) if d.payload["n"] == 0]
        if held and self.waits_left:
            self.waits_left -= 1
            done = [d for i, d in enumerate(batch) if i not in held]
            raise PartialBatch(await super().handle(done), held, 0.05)
        return await super().handle(batch)


async def test_waiting_many_times_uses_up_no_delivery_limit_and_the_neighbours_go_on(
    prepared: JetStreamContext, redis_client: aioredis.Redis, redis_url: str
) -> None:
    # Waiting for an earlier event is not failing: more waits than the old delivery limit of 5, and
    # more than max_crashes, still end in processing, with no dead letter and no drop.
    await Publisher(prepared).publish([input_event(n) for n in range(5)])
    settings = fast_settings(max_crashes=2)
    await ensure_consumer(prepared, ECHO_CONSUMER, settings)
    waits = _Waits(redis_url, waits=8)
    worker = Worker(waits, prepared, settings, fetch_timeout=0.2)
    async with running(worker):
        await wait_until(lambda: _alerts_at_least(prepared, 5), timeout=40)
    assert waits.waits_left == 0
    assert await redis_client.hlen("echo:seen") == 5
    assert worker.stats.dead_lettered == 0
    assert (await prepared.consumer_info("CANDLES", "echo")).config.max_deliver == -1


async def test_two_bad_events_sharing_an_id_leave_two_dead_letters(prepared: JetStreamContext, redis_url: str) -> None:
    for payload in (b'{"n": "one"}', b'{"n": "two"}'):
        headers = {
            "ce-specversion": "1.0",
            "ce-id": "same",
            "ce-source": "t",
            "ce-type": "t",
            "content-type": "application/json",
        }
        await prepared.publish("candles.1m.ECHO", payload, headers=headers)
    await prepared.publish(
        "candles.1m.ECHO", b'{"n": 3}', headers={"ce-specversion": "1.0", "ce-source": "t", "ce-type": "t"}
    )
    worker = Worker(Echo(redis_url), prepared, fast_settings(), fetch_timeout=0.2)
    async with running(worker):
        await wait_until(lambda: _count_at_least(prepared, STREAM_DEAD_LETTERS.name, 3))
    assert worker.stats.dead_lettered == 3  # the one without ce-id too: no invented id


class _FlakyPublisher(Publisher):
    """A real publisher whose first ``failures`` publishes fail as when JetStream restarts."""

    def __init__(self, js: JetStreamContext, failures: int) -> None:
        super().__init__(js)
        self.failures_left = failures

    async def publish(self, events: Sequence[BaseCloudEvent]) -> None:
        if self.failures_left:
            self.failures_left -= 1
            raise PublishError("no acknowledgement from JetStream in 5.0 s")
        await super().publish(events)


async def test_outputs_jetstream_did_not_store_are_retried_not_counted_as_crashes(
    prepared: JetStreamContext, redis_client: aioredis.Redis, redis_url: str
) -> None:
    # More failed publishes than max_crashes: NATS being away is not the events' fault, so none of
    # them may reach the dead letters; the batch is retried until JetStream stores its outputs.
    await Publisher(prepared).publish([input_event(n) for n in range(5)])
    settings = fast_settings(max_crashes=2)
    worker = Worker(Echo(redis_url), prepared, settings, fetch_timeout=0.2)
    worker._publisher = _FlakyPublisher(prepared, failures=4)
    async with running(worker):
        await wait_until(lambda: _alerts_at_least(prepared, 5), timeout=30)
    assert worker.stats.dead_lettered == 0
    assert worker.stats.crashes == 0
    assert await stream_count(prepared, STREAM_DEAD_LETTERS.name) == 0
