"""Turn candles into CloudEvents and publish them; invalid candles go to the dead letters."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import nats.errors
from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.v1.event import CloudEvent

from screener.events import nats_binding
from screener.events.envelope import make_event, nats_subject
from screener.events.models import MINUTE_MS, Candle, candle_event_id
from screener.names import EVENT_SOURCE_COLLECTOR, TYPE_CANDLE_CLOSED, TYPE_CANDLE_FORMING
from screener.runtime.publisher import PublishError
from screener.tracing import current_traceparent, tracer

log = logging.getLogger(__name__)

DEAD_LETTER_FUNCTION = "collector"
# The longest pause between two attempts to publish a minute while JetStream is away.
PUBLISH_RETRY_CAP_SECONDS = 5.0


class EventPublisher(Protocol):
    """What the emitter needs of ``screener.runtime.publisher.Publisher``."""

    async def publish(self, events: Sequence[BaseCloudEvent]) -> None:
        """Publish ``events`` and wait for their acknowledgements."""
        ...

    async def dead_letter(
        self,
        function: str,
        reason: str,
        *,
        payload: bytes,
        headers: Mapping[str, str] | None,
        original_subject: str,
        message_id: str,
    ) -> None:
        """Store an event that cannot be processed on the dead-letter subject, with the reason."""
        ...


@dataclass
class EmitterStats:
    """Counters of what the emitter did."""

    closed: int = 0
    forming: int = 0
    invalid: int = 0
    publish_retries: int = 0
    last_closed_at: float | None = None  # time.monotonic() of the last closed candle published


def _instant(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def closed_candle_event(candle: Candle, event_time_ms: int | None = None, traceparent: str | None = None) -> CloudEvent:
    """Return the ``candle closed`` event of ``candle``; ``time`` is the exchange's event time.

    Without an event time (REST, replay) the minute's close instant is used.
    """
    return make_event(
        event_type=TYPE_CANDLE_CLOSED,
        source=EVENT_SOURCE_COLLECTOR,
        event_id=candle_event_id(candle.symbol, candle.open_time),
        subject=candle.symbol,
        data=candle,
        time=_instant(event_time_ms if event_time_ms is not None else candle.open_time + MINUTE_MS),
        traceparent=traceparent,
    )


def forming_candle_event(candle: Candle, event_time_ms: int, traceparent: str | None = None) -> CloudEvent:
    """Return the ``candle forming`` event of an update of the current minute (id carries the event time)."""
    return make_event(
        event_type=TYPE_CANDLE_FORMING,
        source=EVENT_SOURCE_COLLECTOR,
        event_id=f"candle.forming:{candle.symbol}:{candle.open_time}:{event_time_ms}",
        subject=candle.symbol,
        data=candle,
        time=_instant(event_time_ms),
        traceparent=traceparent,
    )


class CandleEmitter:
    """Publish closed candles (and, when asked, forming updates); dead-letter invalid ones.

    One span is started per published batch (one batch is one minute of every symbol in a replay),
    and its ``traceparent`` goes into every event, so a trace starts at the collector.
    """

    def __init__(self, publisher: EventPublisher) -> None:
        self._publisher = publisher
        self.stats = EmitterStats()

    async def emit_closed(self, candles: Sequence[Candle], event_times: Sequence[int | None] | None = None) -> int:
        """Publish the valid ``candles`` as closed-candle events; return how many were published.

        ``event_times`` holds the exchange's event time of each candle, where known.
        """
        if not candles:
            return 0
        with tracer().start_as_current_span("collector.emit_closed") as span:
            span.set_attribute("candles", len(candles))
            traceparent = current_traceparent()
            events: list[CloudEvent] = []
            for index, candle in enumerate(candles):
                when = event_times[index] if event_times else None
                event = closed_candle_event(candle, when, traceparent)
                reason = candle.validation_error()
                if reason is not None:
                    await self._dead_letter(event, reason)
                    continue
                events.append(event)
            await self._publish(events)
        self.stats.closed += len(events)
        if events:
            self.stats.last_closed_at = time.monotonic()
        return len(events)

    async def emit_forming(self, candles: Sequence[tuple[Candle, int]]) -> int:
        """Publish forming-minute updates ``(candle, event_time_ms)``; invalid ones are skipped."""
        traceparent = current_traceparent()
        events = [forming_candle_event(c, t, traceparent) for c, t in candles if c.validation_error() is None]
        if events:
            await self._publish(events)
        self.stats.forming += len(events)
        return len(events)

    async def _publish(self, events: Sequence[BaseCloudEvent]) -> None:
        """Publish ``events``, retrying for as long as JetStream refuses them (a NATS restart).

        A retry re-publishes events JetStream may already hold; their deterministic ids make the
        duplicate window drop them. Giving up would lose the minute: the collector is the only one
        holding it.
        """
        attempt = 0
        while True:
            try:
                await self._publisher.publish(events)
                return
            except (PublishError, nats.errors.Error, OSError) as exc:
                attempt += 1
                self.stats.publish_retries += 1
                delay = min(PUBLISH_RETRY_CAP_SECONDS, 0.25 * 2 ** min(attempt, 6))
                log.warning(
                    "publishing %d events failed (attempt %d), retrying in %.1f s: %r", len(events), attempt, delay, exc
                )
                await asyncio.sleep(delay)

    async def _dead_letter(self, event: CloudEvent, reason: str) -> None:
        self.stats.invalid += 1
        log.warning("invalid candle %s dead-lettered: %s", event.get_id(), reason)
        headers, body = nats_binding.to_binary(event)
        await self._publisher.dead_letter(
            DEAD_LETTER_FUNCTION,
            reason,
            payload=body,
            headers=headers,
            original_subject=nats_subject(event),
            message_id=event.get_id(),
        )
