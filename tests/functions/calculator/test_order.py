"""The calculator takes each symbol's candles in stream order, whatever order they are delivered in.

Against a real CANDLES stream and Redis: a redelivered earlier minute, a later minute that arrives
first, a Redis flush that loses every position, a dead-lettered message in between and a real gap in
the market. Every case must give the metrics of a single worker reading the stream in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from cloudevents.core.base import BaseCloudEvent
from nats.js import JetStreamContext

from functions.calculator.function import Calculator
from screener.config import load_settings
from screener.events import nats_binding
from screener.events.envelope import nats_subject
from screener.events.models import Candle
from screener.runtime.function import Delivery, PartialBatch
from screener.runtime.publisher import Publisher
from screener.streams import ensure_streams
from state.candles import CandleStore
from tests.functions.calculator.test_function import candle_event, near

__all__ = ["near"]  # the fixture of 2,000 real NEARUSDT minutes
Batch = list[Delivery[Candle]]


async def in_stream(js: JetStreamContext, calculator: Calculator, candles: Sequence[Candle]) -> list[Delivery[Candle]]:
    """Publish the candles' events to the CANDLES stream; return deliveries carrying their sequences."""
    await ensure_streams(js, load_settings({}))
    found = []
    for candle in candles:
        event = candle_event(candle)
        headers, payload = nats_binding.to_binary(event)
        ack = await js.publish(nats_subject(event), payload, headers=headers)
        found.append(Delivery(event, calculator.parse(event), sequence=ack.seq))
    return found


async def run(
    js: JetStreamContext, calculator: Calculator, batch: list[Delivery[Candle]]
) -> tuple[dict[str, Any], int]:
    """Handle and publish as the worker does; return the metrics by event id and how many wait."""
    try:
        events: Sequence[BaseCloudEvent] = await calculator.handle(batch)
        waiting: frozenset[int] = frozenset()
    except PartialBatch as partial:
        events, waiting = partial.outputs, partial.waiting
    await Publisher(js).publish(list(events))
    await calculator.published([d for i, d in enumerate(batch) if i not in waiting])
    return {e.get_id(): e.get_data() for e in events}, len(waiting)


async def in_order(redis_client: aioredis.Redis, near: list[Candle], minutes: range) -> dict[str, Any]:
    """Return the metrics one calculator gives for ``minutes`` handled one by one, in order."""
    await redis_client.flushdb()
    await CandleStore(redis_client).write(near[:1500], read_back=False)
    single = Calculator(redis_client)
    expected: dict[str, Any] = {}
    for m in minutes:
        events = await single.handle([Delivery(candle_event(near[m]), near[m])])
        expected.update({e.get_id(): e.get_data() for e in events})
    await redis_client.flushdb()
    await CandleStore(redis_client).write(near[:1500], read_back=False)
    return expected


async def test_later_minutes_wait_for_an_earlier_one_and_give_the_in_order_metrics(
    redis_client: aioredis.Redis, jetstream: JetStreamContext, near: list[Candle]
) -> None:
    expected = await in_order(redis_client, near, range(1500, 1506))
    calculator = Calculator(redis_client)
    calculator.bind_jetstream(jetstream)
    d = await in_stream(jetstream, calculator, near[1500:1506])
    got, waiting = await run(jetstream, calculator, [d[0]])
    # minutes 2..5 arrive while minute 1 is still with a killed worker: they wait, none is computed
    later, waiting = await run(jetstream, calculator, d[2:])
    assert (later, waiting) == ({}, 4)
    for batch in ([d[1]], d[2:], d[2:]):  # the redelivery, then the waiting ones, then a duplicate
        more, waiting = await run(jetstream, calculator, batch)
        assert waiting == 0
        got.update(more)
    assert got == expected


async def test_positions_lost_with_redis_come_back_from_the_metrics_stream(
    redis_client: aioredis.Redis, jetstream: JetStreamContext, near: list[Candle]
) -> None:
    expected = await in_order(redis_client, near, range(1500, 1504))
    calculator = Calculator(redis_client)
    calculator.bind_jetstream(jetstream)
    d = await in_stream(jetstream, calculator, near[1500:1504])
    got, _ = await run(jetstream, calculator, d[:2])
    for key in await redis_client.keys("screener:position:*"):
        await redis_client.delete(key)  # positions lost (the rings are kept here)
    # minute 1 again (its ack was lost), then 3 before 2: 1 is done, 3 waits for 2
    assert await run(jetstream, calculator, [d[1], d[3]]) == ({}, 1)
    more, waiting = await run(jetstream, calculator, [d[2], d[3]])
    assert waiting == 0
    got.update(more)
    assert got == expected


async def test_a_dead_lettered_message_and_a_real_gap_hold_nothing_back(
    redis_client: aioredis.Redis, jetstream: JetStreamContext, near: list[Candle]
) -> None:
    calculator = Calculator(redis_client)
    calculator.bind_jetstream(jetstream)
    await ensure_streams(jetstream, load_settings({}))
    first = await in_stream(jetstream, calculator, [near[1500]])
    await jetstream.publish("candles.1m.NEARUSDT", b"not json", headers={"ce-specversion": "1.0"})
    later = await in_stream(jetstream, calculator, [near[1503]])  # minutes 1501-1502 never traded
    await run(jetstream, calculator, first)
    got, waiting = await run(jetstream, calculator, later)
    assert waiting == 0
    assert list(got) == ["metrics:NEARUSDT:" + str(near[1503].open_time)]
