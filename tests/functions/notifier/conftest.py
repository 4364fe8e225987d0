"""Fixtures of the notifier tests: a real local webhook receiver and an HTTP client session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.fakes.webhook_receivers import WebhookReceiver, running_receiver


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    """Yield a running receiver on a free port."""
    async with running_receiver() as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """Yield an HTTP client session."""
    async with aiohttp.ClientSession() as session:
        yield session
