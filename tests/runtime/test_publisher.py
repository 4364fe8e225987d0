"""Publisher against a real JetStream: pipelined publishes, bounded in flight, refusals reported."""

from __future__ import annotations

import pytest
from nats.js import JetStreamContext

from screener.config import load_settings
from screener.names import STREAM_CANDLES
from screener.runtime.publisher import MSG_ID_HEADER, Publisher, PublishError
from screener.streams import ensure_streams
from tests.fakes.echo import input_event


async def test_more_events_than_slots_are_all_stored_once_in_order(jetstream: JetStreamContext) -> None:
    await ensure_streams(jetstream, load_settings({}))
    publisher = Publisher(jetstream, in_flight=4)  # the burst must wait for acks to free slots
    events = [input_event(n) for n in range(50)]
    await publisher.publish(events)
    await publisher.publish(events[:10])  # the same ids again: dropped by the duplicate window
    info = await jetstream.stream_info(STREAM_CANDLES.name)
    assert info.state.messages == 50
    first = await jetstream.get_msg(STREAM_CANDLES.name, seq=1)
    last = await jetstream.get_msg(STREAM_CANDLES.name, seq=50)
    assert (first.headers or {})[MSG_ID_HEADER] == "in-0"
    assert (last.headers or {})[MSG_ID_HEADER] == "in-49"


async def test_an_event_no_stream_takes_is_reported_not_lost_silently(jetstream: JetStreamContext) -> None:
    # No streams exist: JetStream has no responder for the subject, so nothing can store the event.
    with pytest.raises(PublishError, match="1 of 1 events not stored"):
        await Publisher(jetstream).publish([input_event(1)])
