"""Helpers of the billing tests: a buyer's round trip and the webhook URL."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fakes.whop_server import RunningWhop
from tests.gateway.accounts.helpers import Client, bearer, register


def webhook_url(client: Client) -> str:
    """Return the gateway's Whop webhook URL."""
    return str(client.make_url("/api/billing/webhook"))


async def buyer(client: Client, email: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Sign a new user up; return their User object and Authorization header."""
    created = await register(client, email)
    return created["user"], bearer(created["token"])


async def start_checkout(client: Client, whop: RunningWhop, headers: dict[str, str], plan: str) -> tuple[str, str]:
    """Start a checkout of ``plan``; return (the gateway's session reference, Whop's ``ch_`` id)."""
    response = await client.post("/api/checkout", json={"plan": plan}, headers=headers)
    body = await response.json()
    assert response.status == 200, body
    checkout_id = parse_qs(urlsplit(body["checkout_url"]).query)["session"][0]
    configuration = whop.whop.checkouts[checkout_id]
    ref = parse_qs(urlsplit(configuration["redirect_url"]).query)["session"][0]
    return ref, checkout_id


async def confirm(client: Client, headers: dict[str, str], session: str) -> Any:
    """Return the gateway's answer to ``POST /api/billing/confirm?session=``."""
    return await client.post(f"/api/billing/confirm?session={session}", json={}, headers=headers)


async def me(client: Client, headers: dict[str, str]) -> dict[str, Any]:
    """Return the caller's User object."""
    response = await client.get("/api/me", headers=headers)
    body: dict[str, Any] = await response.json()
    assert response.status == 200, body
    return body
