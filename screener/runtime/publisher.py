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
# A publish whose acknowledgement has not come back by then is an error (the stream is unreachable).
ACK_TIMEOUT_SECONDS = 30.0


class Publisher:
    """Publish events and wait for JetStream's acknowledgements."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js

    async def publish(self, events: Sequence[BaseCloudEvent]) -> None:
        """Publish ``events`` on their subjects; return once every one is stored (or deduplicated).

        The messages are pipelined (``publish_async``: one shared reply subscription, nats-py bounds the
        acknowledgements outstanding) rather than one request-reply round trip per event.
        """
        acks = []
        for event in events:
            headers, body = nats_binding.to_binary(event)
            headers[MSG_ID_HEADER] = event.get_id()
            acks.append(await self._js.publish_async(nats_subject(event), body, headers=headers))
        if acks:
            await asyncio.wait_for(asyncio.gather(*acks), ACK_TIMEOUT_SECONDS)

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
