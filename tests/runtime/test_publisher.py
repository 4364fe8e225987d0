"""Publisher against a real JetStream: pipelined publishes, bounded in flight, refusals reported."""

from __future__ import annotations

import pytest
from nats.js import JetStreamContext

from screener.config import load_settings
from screener.connections import nats_client_of
from screener.events.envelope import nats_subject
from screener.names import STREAM_CANDLES
from screener.runtime import publisher as publisher_module
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


async def test_acks_that_never_come_free_their_slots_for_the_next_publish(
    jetstream: JetStreamContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    # NATS restarted between a publish and its ack: the ack never comes. Here a plain subscriber that
    # never answers stands in for the lost acks (no stream takes the subject yet).
    monkeypatch.setattr(publisher_module, "ACK_TIMEOUT_SECONDS", 0.3)
    nc = nats_client_of(jetstream)
    silent = await nc.subscribe(nats_subject(input_event(0)))
    publisher = Publisher(jetstream, in_flight=4)
    with pytest.raises(PublishError):
        await publisher.publish([input_event(n) for n in range(10)])  # runs out of slots waiting
    with pytest.raises(PublishError):
        await publisher.publish([input_event(n) for n in range(2)])  # every ack lost, slots returned
    await silent.unsubscribe()
    await ensure_streams(jetstream, load_settings({}))
    await publisher.publish([input_event(n) for n in range(10)])  # JetStream is back: all stored
    info = await jetstream.stream_info(STREAM_CANDLES.name)
    assert info.state.messages == 10
