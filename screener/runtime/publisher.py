"""Publish CloudEvents to JetStream in binary mode, and dead letters with their reason."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from cloudevents.core.base import BaseCloudEvent
from nats.js import JetStreamContext

from screener.events import nats_binding
from screener.events.envelope import nats_subject
from screener.names import dead_letter_subject

# JetStream drops a second message with the same Nats-Msg-Id inside the stream's duplicate window.
MSG_ID_HEADER = "Nats-Msg-Id"
REASON_HEADER = "Screener-Dead-Letter-Reason"
FUNCTION_HEADER = "Screener-Dead-Letter-Function"
ORIGINAL_SUBJECT_HEADER = "Screener-Original-Subject"
# How many publish acknowledgements may be outstanding at once: enough to fill the pipe, bounded so
# that a burst of thousands of events does not open thousands of inbox waits.
_IN_FLIGHT = 512


class Publisher:
    """Publish events and wait for JetStream's acknowledgements."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js

    async def publish(self, events: Sequence[BaseCloudEvent]) -> None:
        """Publish ``events`` on their subjects; return once every one is stored (or deduplicated).

        Each publish is a request for JetStream's acknowledgement, up to ``_IN_FLIGHT`` at once.
        (nats-py's ``publish_async`` was faster, but it turns a cancellation while it waits for a
        free slot into ``TooManyStalledMsgsError``, so a caller's retry loop could outlive its own
        cancellation; a collector then never stopped.)
        """
        semaphore = asyncio.Semaphore(_IN_FLIGHT)

        async def one(event: BaseCloudEvent) -> None:
            headers, body = nats_binding.to_binary(event)
            headers[MSG_ID_HEADER] = event.get_id()
            async with semaphore:
                await self._js.publish(nats_subject(event), body, headers=headers)

        await asyncio.gather(*(one(event) for event in events))

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
