"""Publish CloudEvents to JetStream in binary mode, and dead letters with their reason."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence

from cloudevents.core.base import BaseCloudEvent
from nats.js import JetStreamContext
from nats.js.api import PubAck

from screener.connections import nats_client_of
from screener.events import nats_binding
from screener.events.envelope import nats_subject
from screener.names import dead_letter_subject

log = logging.getLogger(__name__)

# JetStream drops a second message with the same Nats-Msg-Id inside the stream's duplicate window.
MSG_ID_HEADER = "Nats-Msg-Id"
REASON_HEADER = "Screener-Dead-Letter-Reason"
FUNCTION_HEADER = "Screener-Dead-Letter-Function"
ORIGINAL_SUBJECT_HEADER = "Screener-Original-Subject"
# How many publish acknowledgements may be outstanding at once: enough to fill the pipe, bounded so
# that a burst of thousands of events does not hold thousands of futures.
IN_FLIGHT = 512
# How long an acknowledgement (or a free slot for the next publish) is waited for.
ACK_TIMEOUT_SECONDS = 5.0


class PublishError(RuntimeError):
    """JetStream did not store an event (no ack in time, no stream for the subject, ...)."""


class Publisher:
    """Publish events and wait for JetStream's acknowledgements."""

    def __init__(self, js: JetStreamContext, in_flight: int = IN_FLIGHT) -> None:
        """Publish through the connection of ``js``, with at most ``in_flight`` unacknowledged events."""
        self._js = js
        # A context of our own for pipelined publishes, with twice our own limit: nats-py's slot wait
        # turns a cancellation into TooManyStalledMsgsError, so it must never be the one that waits.
        self._pipelined = nats_client_of(js).jetstream(publish_async_max_pending=2 * in_flight)
        self._in_flight = in_flight
        self._free_slots = in_flight
        self._slot_freed = asyncio.Event()

    async def publish(self, events: Sequence[BaseCloudEvent]) -> None:
        """Publish ``events`` on their subjects; return once every one is stored (or deduplicated).

        The events are written back to back, each with its own reply subject, and the acknowledgements
        are collected as they come (``publish_async``), up to ``IN_FLIGHT`` unacknowledged at a time.
        Raise ``PublishError`` if one is refused or not acknowledged within ``ACK_TIMEOUT_SECONDS``.
        """
        pending: list[asyncio.Future[PubAck]] = []
        try:
            for event in events:
                headers, body = nats_binding.to_binary(event)
                headers[MSG_ID_HEADER] = event.get_id()
                if not self._free_slots:
                    await self._wait_for_a_slot()
                self._free_slots -= 1
                try:
                    future = await self._pipelined.publish_async(nats_subject(event), body, headers=headers)
                except BaseException:
                    self._release()
                    raise
                future.add_done_callback(self._release)
                pending.append(future)
            if not pending:
                return
            done, late = await asyncio.wait(pending, timeout=ACK_TIMEOUT_SECONDS)
        finally:
            # Whatever ends this call (no slot in time, a cancellation, acks that never come because
            # NATS restarted and lost them), no future of ours outlives it: each holds a slot, and one
            # left pending would hold it for ever until no publish could start. A late ack is ignored.
            for future in pending:
                if not future.done():
                    future.cancel()
            self._forget_orphans()
        failures = [f.exception() for f in done if not f.cancelled() and f.exception() is not None]
        if late or failures:
            reason = f"{len(late)} not acknowledged in {ACK_TIMEOUT_SECONDS} s" if late else repr(failures[0])
            raise PublishError(f"{len(late) + len(failures)} of {len(pending)} events not stored: {reason}")

    def _forget_orphans(self) -> None:
        # nats-py registers an ack's future before it writes the message; when that write fails (the
        # connection is gone), the future is never returned to us and would hold one of the context's
        # pending slots for ever. More pending acks than we hold means such orphans: start a fresh
        # context (acks still on their way resolve through the old one).
        if self._pipelined.publish_async_pending() > self._in_flight - self._free_slots:
            log.warning("publisher: %d orphaned acknowledgements dropped", self._pipelined.publish_async_pending())
            self._pipelined = nats_client_of(self._js).jetstream(publish_async_max_pending=2 * self._in_flight)

    async def _wait_for_a_slot(self) -> None:
        # Every slot waits for an ack: wait for one, but not for ever. (A counter and an event, not
        # asyncio.Semaphore: its bookkeeping ran for every event of a burst, while waiting is rare.)
        try:
            async with asyncio.timeout(ACK_TIMEOUT_SECONDS):
                while not self._free_slots:
                    self._slot_freed.clear()
                    await self._slot_freed.wait()
        except TimeoutError:
            raise PublishError(f"no acknowledgement from JetStream in {ACK_TIMEOUT_SECONDS} s") from None

    def _release(self, _: object = None) -> None:
        self._free_slots += 1
        self._slot_freed.set()

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
        """Store an event ``function`` cannot process on its dead-letter subject, with the reason."""
        dl_headers = dict(headers or {})
        dl_headers.update(
            {
                REASON_HEADER: reason[:4000],
                FUNCTION_HEADER: function,
                ORIGINAL_SUBJECT_HEADER: original_subject,
                MSG_ID_HEADER: f"dead-letter:{function}:{message_id}",
            }
        )
        await self._js.publish(dead_letter_subject(function), payload, headers=dl_headers)
