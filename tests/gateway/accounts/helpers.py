"""Helpers of the accounts tests: sign-up and sign-in calls, and the error body of client.md."""

from __future__ import annotations

from typing import Any

from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient

Client = TestClient[web.Request, web.Application]
PASSWORD = "correct horse battery"
USER_FIELDS = {
    "id",
    "email",
    "role",
    "status",
    "trial_ends_at",
    "plan",
    "plan_activated_at",
    "plan_expires_at",
    "tv_addon_active",
    "created_at",
    "last_login_at",
}


def bearer(token: str) -> dict[str, str]:
    """Return an Authorization header for ``token``."""
    return {"Authorization": f"Bearer {token}"}


async def register(client: Client, email: str, password: str = PASSWORD, **extra: Any) -> dict[str, Any]:
    """Sign up through the gateway; return ``{user, token}`` (the test fails on any other answer)."""
    response = await client.post("/auth/register", json={"email": email, "password": password, **extra})
    body: dict[str, Any] = await response.json()
    assert response.status == 201, body
    return body


async def login(client: Client, email: str, password: str = PASSWORD) -> ClientResponse:
    """Return the gateway's answer to a sign-in."""
    return await client.post("/auth/login", json={"email": email, "password": password})


async def error_of(response: ClientResponse, status: int, code: str) -> dict[str, Any]:
    """Assert client.md's error body (decision 1) with ``status`` and ``code``; return it."""
    body: dict[str, Any] = await response.json()
    assert response.status == status, body
    assert isinstance(body["error"], str) and body["error"], body
    assert body["code"] == code, body
    assert isinstance(body["message"], str) and body["message"], body
    assert "Traceback" not in body["message"]
    return body
