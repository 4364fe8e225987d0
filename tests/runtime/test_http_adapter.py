"""The Knative HTTP adapter: 200 with the next event, 202 with none, 400 malformed, 500 crash."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from cloudevents.core.base import BaseCloudEvent

from screener.events import http_binding
from screener.events.envelope import InvalidEvent, make_event
from screener.names import TYPE_ALERT_TRIGGERED
from screener.runtime.function import Delivery
from screener.runtime.http import create_app
from tests.fakes.echo import ECHO_CONSUMER, input_event


class Doubler:
    """Emit n*2 for even n, nothing for odd n, crash for n < 0."""

    consumer = ECHO_CONSUMER

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def parse(self, event: BaseCloudEvent) -> int:
        data = event.get_data()
        if not isinstance(data, dict) or not isinstance(data.get("n"), int):
            raise InvalidEvent("data.n must be an integer", event.get_id())
        return int(data["n"])

    async def handle(self, batch: Sequence[Delivery[int]]) -> list[BaseCloudEvent]:
        if any(d.payload < 0 for d in batch):
            raise RuntimeError("negative")
        return [
            make_event(
                event_type=TYPE_ALERT_TRIGGERED,
                source="/t",
                event_id=f"x{d.payload}",
                subject="T",
                data={"n": d.payload * 2},
                traceparent=d.traceparent,
            )
            for d in batch
            if d.payload % 2 == 0
        ]


@pytest.fixture
async def client() -> Any:
    async with TestClient(TestServer(create_app(Doubler()))) as test_client:
        yield test_client


async def test_binary_event_in_next_event_out(client: TestClient) -> None:
    headers, body = http_binding.to_http(input_event(4))
    response = await client.post("/", data=body, headers=headers)
    assert response.status == 200
    reply = http_binding.from_http(dict(response.headers), await response.read())
    assert reply.get_type() == TYPE_ALERT_TRIGGERED
    assert reply.get_data() == {"n": 8}


async def test_structured_event_is_accepted(client: TestClient) -> None:
    from cloudevents.core.bindings.http import to_structured
    from cloudevents.core.formats.json import JSONFormat

    message = to_structured(input_event(2), JSONFormat())
    response = await client.post("/", data=message.body, headers=dict(message.headers))
    assert response.status == 200


async def test_no_output_is_202(client: TestClient) -> None:
    headers, body = http_binding.to_http(input_event(3))
    response = await client.post("/", data=body, headers=headers)
    assert response.status == 202


async def test_malformed_event_is_400_with_reason(client: TestClient) -> None:
    response = await client.post("/", data=b"{}", headers={"Content-Type": "application/json"})
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "invalid_event"


async def test_invalid_payload_is_400_naming_the_field(client: TestClient) -> None:
    event = input_event(1)
    event._data = {"n": "one"}
    headers, body = http_binding.to_http(event)
    response = await client.post("/", data=body, headers=headers)
    assert response.status == 400
    assert "data.n" in (await response.json())["error"]["message"]


async def test_crash_is_500_and_logged(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    headers, body = http_binding.to_http(input_event(-2))
    response = await client.post("/", data=body, headers=headers)
    assert response.status == 500
    assert "crashed on event in--2" in caplog.text


_STRUCTURED = {"Content-Type": "application/cloudevents+json"}
_BINARY_JSON = {
    "ce-specversion": "1.0",
    "ce-id": "deep",
    "ce-source": "/t",
    "ce-type": "t",
    "Content-Type": "application/json",
}


@pytest.mark.parametrize(
    ("headers", "body", "reason"),
    [
        (_STRUCTURED, b"[]", "must be a JSON object, not list"),
        ({"Content-Type": "application/cloudevents-batch+json"}, b"[{}]", "must be a JSON object, not list"),
        (_STRUCTURED, b'"event"', "must be a JSON object, not str"),
        (_STRUCTURED, b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
        (_BINARY_JSON, b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
    ids=["array", "batch", "string", "deep-structured", "deep-binary"],
)
async def test_a_body_the_sdk_cannot_read_is_400_with_the_reason(
    client: TestClient[Any, Any], headers: dict[str, str], body: bytes, reason: str
) -> None:
    # Before: AttributeError or RecursionError escaped the adapter as a bare 500, which Knative
    # retries instead of routing the event to its dead-letter sink.
    response = await client.post("/", data=body, headers=headers)
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["code"] == "invalid_event" and reason in error["message"]


async def test_a_body_not_in_its_content_encoding_is_400(client: TestClient[Any, Any]) -> None:
    headers, body = http_binding.to_http(input_event(2))
    response = await client.post("/", data=body, headers={**headers, "Content-Encoding": "gzip"})
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "invalid_event"
