"""Fixtures of the runtime tests."""

from __future__ import annotations

import pytest
from nats.js import JetStreamContext

from screener.streams import ensure_consumer, ensure_streams
from tests.fakes.echo import ECHO_CONSUMER
from tests.runtime.helpers import fast_settings


@pytest.fixture
async def prepared(jetstream: JetStreamContext) -> JetStreamContext:
    """Return a JetStream context with the project's streams and the echo function's consumer."""
    settings = fast_settings()
    await ensure_streams(jetstream, settings)
    await ensure_consumer(jetstream, ECHO_CONSUMER, settings)
    return jetstream
