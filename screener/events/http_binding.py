"""The CloudEvents HTTP binding, through the ``cloudevents`` package."""

from __future__ import annotations

import orjson
from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings import http
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from screener.events.envelope import InvalidEvent

_FORMAT = JSONFormat()
_CE_PREFIX = "ce-"


def from_http(headers: dict[str, str], body: bytes) -> BaseCloudEvent:
    """Read a binary or structured CloudEvent from an HTTP request; raise ``InvalidEvent``."""
    if not any(name.lower().startswith(_CE_PREFIX) for name in headers):
        _check_structured(body)
    try:
        return http.from_http(http.HTTPMessage(headers=dict(headers), body=body), _FORMAT, CloudEvent)
    except (BaseCloudEventException, ValueError, KeyError, TypeError) as exc:
        raise InvalidEvent(f"malformed CloudEvent: {exc}") from None
    except RecursionError:  # the SDK decodes with the standard library's recursive parser
        raise InvalidEvent("malformed CloudEvent: its JSON is nested too deeply") from None


def _check_structured(body: bytes) -> None:
    """Raise ``InvalidEvent`` unless ``body`` is one JSON object, as structured mode requires.

    The SDK reads any message without ``ce-`` headers as structured and calls ``.get`` on whatever
    the JSON is, so an array (a batch), a string or deep nesting would crash it instead of being
    refused (section 3.2 of the HTTP binding: a structured event is one JSON object).
    """
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"malformed CloudEvent: the body is not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise InvalidEvent(
            f"malformed CloudEvent: a structured event must be a JSON object, not {type(document).__name__}"
        )


def to_http(event: BaseCloudEvent) -> tuple[dict[str, str], bytes]:
    """Return the headers and body of ``event`` in binary content mode."""
    message = http.to_binary(event, _FORMAT)
    return dict(message.headers), message.body
