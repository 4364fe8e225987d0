"""Watch a running drill from outside: consumer lag, JetStream advisories, stream progress.

Lag is what KEDA scales on: ``num_pending + num_ack_pending`` of every durable consumer. Advisories
are captured into a stream of the harness's own, so they survive a NATS restart and can be counted
per consumer afterwards: ``MAX_DELIVERIES`` (a message JetStream gave up on: "dropped") and
``MSG_NAKED`` (every nak).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass

import nats
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig

ADVISORY_STREAM = "DRILLS_ADVISORIES"
ADVISORY_PREFIX = "$JS.EVENT.ADVISORY.CONSUMER"
ADVISORY_KINDS = ("MAX_DELIVERIES", "MSG_NAKED", "MSG_TERMINATED")
PIPELINE_STREAMS = ("CANDLES", "METRICS", "ALERTS")


async def connect(url: str) -> Client:
    """Connect to NATS, reconnecting for ever (the drills restart the server on purpose)."""
    return await nats.connect(
        url, max_reconnect_attempts=-1, reconnect_time_wait=0.5, connect_timeout=5, allow_reconnect=True
    )


async def capture_advisories(js: JetStreamContext) -> None:
    """Create the stream that keeps the consumer advisories of the run."""
    await js.add_stream(
        StreamConfig(
            name=ADVISORY_STREAM,
            subjects=[f"{ADVISORY_PREFIX}.{kind}.>" for kind in ADVISORY_KINDS],
            storage=StorageType.FILE,
        )
    )


async def advisory_counts(js: JetStreamContext) -> dict[str, Counter[str]]:
    """Return, per advisory kind, how many advisories each consumer (``STREAM/CONSUMER``) got."""
    info = await js.stream_info(ADVISORY_STREAM, subjects_filter=">")
    out: dict[str, Counter[str]] = {kind: Counter() for kind in ADVISORY_KINDS}
    for subject, count in (info.state.subjects or {}).items():
        tokens = subject.split(".")  # $JS.EVENT.ADVISORY.CONSUMER.<KIND>.<STREAM>.<CONSUMER>
        if len(tokens) >= 7 and tokens[4] in out:
            out[tokens[4]][f"{tokens[5]}/{'.'.join(tokens[6:])}"] += count
    return out


@dataclass
class Lag:
    """Lag of every durable consumer of the pipeline's streams."""

    per_consumer: dict[str, int]

    @property
    def total(self) -> int:
        """Return the summed lag."""
        return sum(self.per_consumer.values())

    def short(self) -> str:
        """Return ``calculator 120 · rules 3`` (non-zero consumers only)."""
        busy = [f"{name.split('/')[-1]} {lag}" for name, lag in sorted(self.per_consumer.items()) if lag]
        return " · ".join(busy) or "0"


async def consumer_lag(js: JetStreamContext) -> Lag | None:
    """Return the lag of every durable consumer, or None when the server does not answer now."""
    per: dict[str, int] = {}
    try:
        for stream in PIPELINE_STREAMS:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                for info in await js.consumers_info(stream):
                    if info.config.durable_name:
                        per[f"{stream}/{info.name}"] = (info.num_pending or 0) + (info.num_ack_pending or 0)
    except (NatsError, TimeoutError):
        return None
    return Lag(per)


async def stream_messages(js: JetStreamContext, stream: str) -> int | None:
    """Return how many messages ``stream`` holds, or None when it cannot be read now."""
    try:
        return int((await js.stream_info(stream)).state.messages)
    except (NatsError, TimeoutError):
        return None
