"""Create the JetStream streams and the functions' durable consumers, idempotently, at start."""

from __future__ import annotations

import logging

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError

from screener.config import Settings
from screener.names import CONSUMERS, STREAM_DEAD_LETTERS, STREAMS, ConsumerSpec, StreamSpec

log = logging.getLogger(__name__)


def stream_config(spec: StreamSpec, settings: Settings) -> StreamConfig:
    """Return the configuration of ``spec``: limits retention with explicit age, size and duplicate window."""
    # Dead letters are kept longer: a human has to look at them.
    age_hours = settings.stream_max_age_hours * (7 if spec is STREAM_DEAD_LETTERS else 1)
    return StreamConfig(
        name=spec.name,
        subjects=list(spec.subjects),
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=age_hours * 3600.0,
        max_bytes=settings.stream_max_bytes,
        duplicate_window=float(settings.duplicate_window_seconds),
        num_replicas=1,
    )


def consumer_config(spec: ConsumerSpec, settings: Settings) -> ConsumerConfig:
    """Return the durable pull consumer configuration of one function."""
    return ConsumerConfig(
        durable_name=spec.durable,
        filter_subject=spec.filter_subject,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=settings.ack_wait_seconds,
        # No delivery limit: JetStream would drop the message silently (screener.runtime.worker).
        max_deliver=-1,
        max_ack_pending=settings.max_ack_pending,
        max_waiting=512,
    )


async def ensure_streams(js: JetStreamContext, settings: Settings) -> None:
    """Create or update every stream of ``screener.names.STREAMS``."""
    for spec in STREAMS:
        config = stream_config(spec, settings)
        try:
            await js.stream_info(spec.name)
        except NotFoundError:
            await js.add_stream(config)
            log.info("created stream %s %s", spec.name, list(spec.subjects))
        else:
            await js.update_stream(config)


async def ensure_consumer(js: JetStreamContext, spec: ConsumerSpec, settings: Settings) -> None:
    """Create or update the durable consumer of one function."""
    await js.add_consumer(spec.stream.name, consumer_config(spec, settings))


async def ensure_all(js: JetStreamContext, settings: Settings) -> None:
    """Create every stream and every function's consumer."""
    await ensure_streams(js, settings)
    for spec in CONSUMERS.values():
        await ensure_consumer(js, spec, settings)
