"""What a function is: an async handler from a batch of events to the events it emits.

A function never sees a transport. The JetStream worker (``screener.runtime.worker``) and the
Knative HTTP receiver (``screener.runtime.http``) are thin adapters around the same object, and a
unit test can call ``parse`` and ``handle`` with no broker at all.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from cloudevents.core.base import BaseCloudEvent

from screener.names import ConsumerSpec

InT = TypeVar("InT")
InT_contra = TypeVar("InT_contra", contravariant=True)


class TransientError(Exception):
    """A failure worth retrying (a server unreachable, a dependency not ready yet): nak with backoff."""

    def __init__(self, message: str, delay_seconds: float | None = None) -> None:
        super().__init__(message)
        self.delay_seconds = delay_seconds


class PartialBatch(TransientError):
    """Part of a batch is done and part must wait (an earlier message of its symbol is not done yet).

    The adapter publishes ``outputs``, acknowledges every delivery but the ``waiting`` ones (their
    indices in the batch) and redelivers those after ``delay_seconds``. Waiting is not a failure:
    it uses up no crash allowance.
    """

    def __init__(self, outputs: Sequence[BaseCloudEvent], waiting: Collection[int], delay_seconds: float) -> None:
        super().__init__(f"{len(waiting)} events wait for earlier ones", delay_seconds)
        self.outputs = outputs
        self.waiting = frozenset(waiting)


@dataclass(frozen=True)
class Delivery(Generic[InT]):
    """One parsed input event, with the CloudEvent it came from (for tracing and ids).

    ``traceparent`` is the adapter's span for this event; events emitted because of it carry it on,
    so one trace follows a candle through every function (``screener.tracing.traceparent_for``).
    ``sequence`` is the event's place in its stream (0 when the transport has none, as over HTTP).
    """

    event: BaseCloudEvent
    payload: InT
    traceparent: str | None = None
    sequence: int = 0


class Function(Protocol[InT]):
    """A stateless function of the pipeline.

    ``parse`` turns one CloudEvent into the function's input and raises ``InvalidEvent`` (from
    ``screener.events.envelope``) for an event that can never be processed: the adapters dead-letter
    it with the reason. ``handle`` processes a batch and returns the events to emit; it must be
    idempotent (it may see the same batch again after a crash) and must have written its state before
    it returns, because the adapter acknowledges the inputs right after publishing the outputs.
    Raising ``TransientError`` retries the batch later; any other exception is a crash, retried up to
    ``max_crashes`` times (counted by the adapter) and then dead-lettered with the error.
    """

    consumer: ConsumerSpec

    async def start(self) -> None:
        """Open connections; called once before the first batch."""

    async def close(self) -> None:
        """Release connections; called once after the last batch."""

    def parse(self, event: BaseCloudEvent) -> InT:
        """Return the input carried by ``event`` or raise ``InvalidEvent``."""
        ...

    async def handle(self, batch: Sequence[Delivery[InT]]) -> Sequence[BaseCloudEvent]:
        """Process ``batch``; return the events to publish."""
        ...


class PublishAware(Protocol):
    """A function that must know when its outputs are durable (published and acknowledged).

    ``published`` is called with the deliveries whose outputs JetStream has stored, before they are
    acknowledged: state written by ``handle`` is not output published, so a function that records
    progress ("this minute is done") records it here.
    """

    async def published(self, done: Sequence[Delivery[Any]]) -> None:
        """Record that the outputs of ``done`` are durable."""
        ...


class RawJsonParser(Protocol):
    """A function whose ``parse`` reads an event's data only through ``parse_data``.

    Setting ``parses_json_bytes = True`` lets the JetStream adapter hand it events whose JSON data
    is still bytes (``from_message(..., decode_json=False)``), validated by ``parse_data`` in one
    pass (decoding and validating a metrics event: 0.90x the time of decoding to Python objects and
    validating those, docs/latency.md). A function that reads ``event.get_data()`` itself must not set it.
    """

    parses_json_bytes: bool
