"""Billing tests: a gateway selling plans through a local server that speaks Whop's API and signs webhooks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.fakes.whop_server import BILLING_SETTINGS, RunningWhop, serve
from tests.gateway.accounts.helpers import Client
from tests.gateway.conftest import GatewayFactory

FRONTEND = "https://app.example.test"


def billing_settings(whop: RunningWhop, **overrides: Any) -> dict[str, Any]:
    """Return the gateway settings that sell the six plans through ``whop``."""
    values: dict[str, Any] = {
        **BILLING_SETTINGS,
        "auth_rate_limit_per_minute": 100_000,
        "whop_api_url": whop.base_url,
        "whop_timeout_seconds": 1.0,
        "frontend_origin": FRONTEND,
    }
    values.update(overrides)
    return values


@pytest.fixture
async def whop() -> AsyncIterator[RunningWhop]:
    """Serve a fake Whop on a free local port."""
    running = await serve()
    yield running
    await running.stop()


@pytest.fixture
async def billing_gw(make_gateway: GatewayFactory, whop: RunningWhop) -> Client:
    """Return a gateway with Whop billing on (open sign-up starts a 7-day trial)."""
    return await make_gateway(**billing_settings(whop))
