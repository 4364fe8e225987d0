"""The CloudEvents NATS binding against the spec's rules: headers, percent-encoding, both modes."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from screener.events import nats_binding
from screener.events.envelope import InvalidEvent, make_event, parse_data
from screener.events.models import Candle, candle_event_id
from screener.names import TYPE_CANDLE_CLOSED


def candle_event(**extensions: str):  # type: ignore[no-untyped-def]
    candle = Candle(
        symbol="BTCUSDT",
        open_time=1_767_225_600_000,
        open=1.5,
        high=2.0,
        low=1.0,
        close=1.75,
        volume=10.0,
        quote_volume=17.5,
    )
    return make_event(
        event_type=TYPE_CANDLE_CLOSED,
        source="/screener/collector",
        event_id=candle_event_id("BTCUSDT", candle.open_time),
        subject="BTCUSDT",
        data=candle,
        time=datetime(2026, 1, 1, 0, 1, tzinfo=UTC),
        extensions=extensions,
    )


def test_binary_mode_maps_every_attribute_to_a_ce_header_including_datacontenttype() -> None:
    headers, body = nats_binding.to_binary(candle_event())
    assert headers["ce-specversion"] == "1.0"
    assert headers["ce-type"] == TYPE_CANDLE_CLOSED
    assert headers["ce-id"] == "candle.1m:BTCUSDT:1767225600000"
    assert headers["ce-datacontenttype"] == "application/json"
    assert headers["ce-time"] == "2026-01-01T00:01:00Z"
    assert "Content-Type" not in headers
    assert json.loads(body)["symbol"] == "BTCUSDT"


def test_header_values_are_percent_encoded_per_the_spec() -> None:
    event = candle_event(comexampleext='caf\u00e9 50% "quoted"')
    headers, _ = nats_binding.to_binary(event)
    # Space, double quote, percent and non-ASCII are encoded; other printable ASCII is not.
    assert headers["ce-comexampleext"] == "caf%C3%A9%2050%25%20%22quoted%22"
    assert headers["ce-source"] == "/screener/collector"


def test_binary_round_trip_keeps_attributes_and_data() -> None:
    event = candle_event(traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    decoded = nats_binding.from_message(*nats_binding.to_binary(event))
    assert decoded.get_attributes() == event.get_attributes()
    assert decoded.get_data() == event.get_data()


def test_structured_mode_is_accepted_on_receive() -> None:
    event = candle_event()
    headers, body = nats_binding.to_structured(event)
    assert headers == {"Content-Type": "application/cloudevents+json"}
    decoded = nats_binding.from_message(headers, body)
    assert decoded.get_id() == event.get_id()
    assert decoded.get_time() == event.get_time()
    assert decoded.get_data() == event.get_data()


def test_percent_encoded_headers_are_decoded_on_receive() -> None:
    headers = {
        "ce-specversion": "1.0",
        "ce-type": "t",
        "ce-source": "/s",
        "ce-id": "a%20b",
        "ce-datacontenttype": "application/json",
    }
    assert nats_binding.from_message(headers, b"{}").get_id() == "a b"


@pytest.mark.parametrize(
    ("headers", "body", "reason"),
    [
        ({}, b"hello", "not a CloudEvent"),
        ({"ce-type": "t", "ce-source": "/s", "ce-id": "1"}, b"{}", "not a valid CloudEvent"),
        ({"Content-Type": "application/cloudevents+json"}, b"{broken", "not valid JSON"),
        (
            {
                "ce-specversion": "1.0",
                "ce-type": "t",
                "ce-source": "/s",
                "ce-id": "1",
                "ce-datacontenttype": "application/json",
            },
            b"{broken",
            "data is not valid JSON",
        ),
        # A poison message must be dead-lettered, not crash the worker that parses it.
        ({"Content-Type": "application/cloudevents+json"}, b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (
            {"Content-Type": "application/cloudevents+json"},
            b'{"specversion": "1.0", "type": "t", "source": "/s", "id": "1", "data_base64": "abc"}',
            "data_base64 is not base64",
        ),
        (
            {"Content-Type": "application/cloudevents+json"},
            b'{"specversion": "1.0", "type": "t", "source": "/s", "id": "1", "data_base64": 5}',
            "data_base64 is not base64",
        ),
    ],
)
def test_malformed_messages_raise_invalid_event_with_a_reason(
    headers: dict[str, str], body: bytes, reason: str
) -> None:
    with pytest.raises(InvalidEvent, match=reason):
        nats_binding.from_message(headers, body)


def test_header_encoding_equals_the_specs_percent_encoding_for_any_text() -> None:
    import random
    from urllib.parse import quote

    # The spec's rule (HTTP binding 3.1.3.2): printable ASCII except space, '"' and '%' stays as is.
    safe = "".join(c for c in map(chr, range(0x21, 0x7F)) if c not in ' "%')
    alphabet = [chr(c) for c in range(0x20, 0x7F)] + ["\u00e9", "\u20ac", "\n", "\t"]
    rng = random.Random(42)
    for _ in range(5000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 16)))
        assert nats_binding.encode_header_value(text) == quote(text, safe=safe), text


def test_json_data_left_undecoded_validates_to_the_same_model() -> None:
    event = candle_event()
    headers, body = nats_binding.to_binary(event)
    raw = nats_binding.from_message(headers, body, decode_json=False)
    assert raw.get_data() == body
    assert raw.get_attributes() == nats_binding.from_message(headers, body).get_attributes()
    assert parse_data(raw, Candle) == parse_data(nats_binding.from_message(headers, body), Candle)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{broken", r"invalid Candle: <data>: Invalid JSON"),
        (b"[1, 2]", r"invalid Candle: <data>: Input should be an object"),
        (b'{"symbol": "BTCUSDT"}', r"invalid Candle: open_time: Field required"),
    ],
)
def test_undecoded_json_that_is_not_the_model_raises_invalid_event_naming_the_problem(body: bytes, reason: str) -> None:
    headers, _ = nats_binding.to_binary(candle_event())
    raw = nats_binding.from_message(headers, body, decode_json=False)
    with pytest.raises(InvalidEvent, match=reason):
        parse_data(raw, Candle)
