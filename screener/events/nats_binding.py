"""The CloudEvents NATS protocol binding (cloudevents/spec, nats-protocol-binding.md).

The ``cloudevents`` package has no NATS binding, so this module maps events to NATS headers and
payloads once. Binary mode: every context attribute, ``datacontenttype`` included, is a header
``ce-<name>`` whose value is percent-encoded with the HTTP binding's rules (the NATS binding refers
to them, section 3.1.3.2); the payload is ``data``. Structured mode (``Content-Type:
application/cloudevents+json``, as Knative's JetStream channel stores events) is accepted on receive.
"""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote, unquote

import orjson
from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from screener.events.envelope import InvalidEvent

CE_PREFIX: Final = "ce-"
CONTENT_TYPE: Final = "Content-Type"
STRUCTURED_JSON: Final = "application/cloudevents+json"
# Printable ASCII except space, double quote and percent stays as is (HTTP binding, 3.1.3.2).
_SAFE: Final = "".join(c for c in map(chr, range(0x21, 0x7F)) if c not in ' "%')
_NEEDS_NO_ENCODING: Final = re.compile(r"[\x21\x23-\x24\x26-\x7e]*")
_FORMAT: Final = JSONFormat()


def encode_header_value(value: Any) -> str:
    """Return ``value`` as a percent-encoded header value (timestamps as RFC 3339 with ``Z``)."""
    if isinstance(value, datetime):
        text = value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    else:
        text = str(value)
    # Fast path: ids, types, sources and timestamps almost never hold a character to encode.
    if _NEEDS_NO_ENCODING.fullmatch(text):
        return text
    return quote(text, safe=_SAFE)


def to_binary(event: BaseCloudEvent) -> tuple[dict[str, str], bytes]:
    """Return the NATS headers and payload of ``event`` in binary content mode."""
    headers = {
        f"{CE_PREFIX}{name}": encode_header_value(value)
        for name, value in event.get_attributes().items()
        if value is not None
    }
    content_type = event.get_datacontenttype()
    data = event.get_data()
    if isinstance(data, dict) and (content_type or "application/json").startswith("application/json"):
        # orjson: several times faster than the stdlib encoder on a minute's burst of metrics payloads.
        body = orjson.dumps(data)
    else:
        body = _FORMAT.write_data(data, content_type)
    return headers, body


def to_structured(event: BaseCloudEvent) -> tuple[dict[str, str], bytes]:
    """Return the NATS headers and payload of ``event`` in structured content mode."""
    return {CONTENT_TYPE: STRUCTURED_JSON}, _FORMAT.write(event)


def from_message(headers: dict[str, str] | None, payload: bytes, *, decode_json: bool = True) -> CloudEvent:
    """Read a CloudEvent from a NATS message in either content mode.

    With ``decode_json`` False, a binary-mode event's JSON data is left as the payload's bytes:
    ``screener.events.envelope.parse_data`` then validates the model straight from them, in one pass
    instead of decoding to Python objects and validating those (a tenth less for a metrics event).
    Raise ``InvalidEvent`` with the reason when the message is not a valid CloudEvent.
    """
    headers = headers or {}
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        if any(k.startswith(CE_PREFIX) for k in lowered):
            return _from_binary(lowered, payload, decode_json)
        if lowered.get("content-type", "").split(";")[0].strip() == STRUCTURED_JSON:
            return _from_structured(payload)
    except BaseCloudEventException as exc:
        raise InvalidEvent(f"not a valid CloudEvent: {exc}") from None
    raise InvalidEvent("not a CloudEvent: no ce- headers and not application/cloudevents+json")


def _from_binary(headers: dict[str, str], payload: bytes, decode_json: bool = True) -> CloudEvent:
    attributes: dict[str, Any] = {}
    for name, raw in headers.items():
        if not name.startswith(CE_PREFIX):
            continue
        attr = name[len(CE_PREFIX) :]
        value = unquote(raw)
        attributes[attr] = _parse_time(value) if attr == "time" else value
    _require_attributes(attributes, "the ce-{} header")
    if "datacontenttype" not in attributes and "content-type" in headers:
        attributes["datacontenttype"] = headers["content-type"]
    content_type = attributes.get("datacontenttype")
    if content_type and content_type.startswith("application/json") and payload and not decode_json:
        data: Any = bytes(payload)  # validated by parse_data, straight from the JSON
    elif content_type and content_type.startswith("application/json") and payload:
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise InvalidEvent(f"data is not valid JSON: {exc}", attributes.get("id")) from None
    else:
        data = _FORMAT.read_data(payload, content_type)
    return CloudEvent(attributes, data)


def _from_structured(payload: bytes) -> CloudEvent:
    try:
        document = json.loads(payload)
    except ValueError as exc:
        raise InvalidEvent(f"structured event is not valid JSON: {exc}") from None
    except RecursionError:  # the standard library's parser recurses once per level of nesting
        raise InvalidEvent("structured event is not valid JSON: nested too deeply") from None
    if not isinstance(document, dict):
        raise InvalidEvent("structured event is not a JSON object")
    if "time" in document and isinstance(document["time"], str):
        document["time"] = _parse_time(document["time"])
    _require_attributes(document, "attribute {}")
    data = document.pop("data", None)
    if "data_base64" in document:
        data = _base64_data(document.pop("data_base64"), document.get("id"))
    return CloudEvent(document, data)


def _base64_data(value: object, event_id: object) -> bytes:
    """Return the bytes of a structured event's ``data_base64``; raise ``InvalidEvent`` when it is not base64."""
    try:
        if not isinstance(value, str):
            raise ValueError("not a string")
        return base64.b64decode(value, validate=True)
    except ValueError as exc:  # binascii.Error is a ValueError
        raise InvalidEvent(
            f"data_base64 is not base64: {exc}", event_id if isinstance(event_id, str) else None
        ) from None


# CloudEvents 1.0 required attributes. The SDK would invent a random id for a missing one, and a
# random id defeats every deduplication downstream (JetStream's window, ON CONFLICT, alert ids).
_REQUIRED = ("specversion", "id", "source", "type")


def _require_attributes(attributes: dict[str, Any], spelling: str) -> None:
    for name in _REQUIRED:
        value = attributes.get(name)
        if not isinstance(value, str) or not value.strip():
            event_id = attributes.get("id")
            raise InvalidEvent(
                f"not a valid CloudEvent: {spelling.format(name)} is missing or empty",
                event_id if isinstance(event_id, str) else None,
            )


def _parse_time(value: str) -> datetime:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidEvent(f"time {value!r} is not RFC 3339") from None
