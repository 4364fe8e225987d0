"""Build and read the CloudEvents the functions exchange."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.v1.event import CloudEvent
from pydantic import BaseModel, ValidationError

from screener.names import subject_for

JSON = "application/json"
ModelT = TypeVar("ModelT", bound=BaseModel)


class InvalidEvent(ValueError):
    """An event that can never be processed (malformed or invalid): it goes to the dead letters."""

    def __init__(self, reason: str, event_id: str | None = None) -> None:
        super().__init__(reason if event_id is None else f"event {event_id}: {reason}")
        self.reason = reason
        self.event_id = event_id


def make_event(
    *,
    event_type: str,
    source: str,
    event_id: str,
    subject: str,
    data: BaseModel | dict[str, Any],
    time: datetime | None = None,
    traceparent: str | None = None,
    extensions: dict[str, str] | None = None,
) -> CloudEvent:
    """Return a JSON CloudEvent; ``subject`` is the symbol it is about."""
    attributes: dict[str, Any] = {
        "type": event_type,
        "source": source,
        "id": event_id,
        "subject": subject,
        "datacontenttype": JSON,
    }
    if time is not None:
        attributes["time"] = time
    if traceparent:
        attributes["traceparent"] = traceparent
    if extensions:
        attributes.update(extensions)
    payload = data.model_dump(mode="json") if isinstance(data, BaseModel) else data
    return CloudEvent(attributes, payload)


def nats_subject(event: BaseCloudEvent) -> str:
    """Return the subject ``event`` is published on (from its type and ``subject`` attribute)."""
    symbol = event.get_subject()
    if not symbol:
        raise InvalidEvent("event has no subject attribute (the symbol)", event.get_id())
    return subject_for(event.get_type(), symbol)


def parse_data(event: BaseCloudEvent, model: type[ModelT]) -> ModelT:
    """Validate ``event``'s data as ``model``; raise ``InvalidEvent`` naming the bad fields.

    The data is a decoded JSON object, or the JSON itself (bytes) when the event was read with
    ``from_message(..., decode_json=False)``: then pydantic parses and validates in one pass.
    """
    data = event.get_data()
    try:
        if isinstance(data, bytes) and (event.get_datacontenttype() or "").startswith(JSON):
            return model.model_validate_json(data)
        if not isinstance(data, dict):
            raise InvalidEvent(f"data is {type(data).__name__}, expected a JSON object", event.get_id())
        return model.model_validate(data)
    except ValidationError as exc:
        fields = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<data>'}: {e['msg']}" for e in exc.errors())
        raise InvalidEvent(f"invalid {model.__name__}: {fields}", event.get_id()) from None


def expect_type(event: BaseCloudEvent, *types: str) -> str:
    """Return ``event``'s type if it is one of ``types``, else raise ``InvalidEvent``."""
    event_type = event.get_type()
    if event_type not in types:
        raise InvalidEvent(f"unexpected event type {event_type!r}, expected one of {list(types)}", event.get_id())
    return event_type
