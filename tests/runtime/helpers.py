"""Helpers for tests that run a JetStream worker against a real NATS server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from screener.config import Settings, load_settings
from screener.runtime.worker import Worker


def fast_settings(**overrides: object) -> Settings:
    """Return settings with short redelivery times for tests."""
    return load_settings({}, **{"ack_wait_seconds": 2.0, "max_crashes": 3, "batch_size": 50, **overrides})


@contextlib.asynccontextmanager
async def running(worker: Worker, stop_within: float = 20.0) -> AsyncIterator[Worker]:
    """Run ``worker`` for the block; then stop it and wait (at most ``stop_within`` s) until it drained."""
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, stop_within)
