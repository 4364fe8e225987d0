"""The CloudEvents HTTP binding, through the ``cloudevents`` package."""

from __future__ import annotations

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings import http
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from screener.events.envelope import InvalidEvent

_FORMAT = JSONFormat()


def from_http(headers: dict[str, str], body: bytes) -> BaseCloudEvent:
    """Read a binary or structured CloudEvent from an HTTP request; raise ``InvalidEvent``."""
    try:
        return http.from_http(http.HTTPMessage(headers=dict(headers), body=body), _FORMAT, CloudEvent)
    except (BaseCloudEventException, ValueError, KeyError, TypeError) as exc:
        raise InvalidEvent(f"malformed CloudEvent: {exc}") from None


def to_http(event: BaseCloudEvent) -> tuple[dict[str, str], bytes]:
    """Return the headers and body of ``event`` in binary content mode."""
    message = http.to_binary(event, _FORMAT)
    return dict(message.headers), message.body
