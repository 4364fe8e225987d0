"""Security of accounts: no clear password anywhere, no e-mail enumeration, guessing limits, one user per token."""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
import uuid

import asyncpg
import pytest

from tests.gateway.accounts.conftest import Inbox
from tests.gateway.accounts.helpers import PASSWORD, Client, bearer, error_of, login, register
from tests.gateway.accounts.test_password_reset import reset_link, token_of
from tests.gateway.conftest import GatewayFactory
from tests.gateway.helpers import token

SECRET_PASSWORD = "Sup3r-Secret-Passphrase!"
NEXT_PASSWORD = "An0ther-Secret-Passphrase?"


async def every_account_row(pool: asyncpg.Pool) -> str:
    async with pool.acquire() as conn:
        rows = []
        for table in ("users", "password_resets", "invites"):
            rows += [r[0] for r in await conn.fetch(f"SELECT row_to_json(t)::text FROM {table} t")]
    return "\n".join(rows)


async def test_passwords_and_reset_tokens_are_never_stored_or_logged_in_clear(
    mail_gw: tuple[Client, Inbox], pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    gw, inbox = mail_gw
    with caplog.at_level(logging.DEBUG):
        created = await register(gw, "secret@example.com", SECRET_PASSWORD)
        assert (await login(gw, "secret@example.com", SECRET_PASSWORD)).status == 200
        assert (await login(gw, "secret@example.com", "wrong " + SECRET_PASSWORD)).status == 401
        await gw.post("/auth/forgot-password", json={"email": "secret@example.com"})
        raw = token_of(reset_link((await inbox.wait_for(1))[0]))
        reset = await gw.post("/auth/reset-password", json={"token": raw, "password": NEXT_PASSWORD})
        assert reset.status == 200
        changed = await gw.post(
            "/api/change-password",
            json={"old_password": NEXT_PASSWORD, "new_password": SECRET_PASSWORD + "2"},
            headers=bearer((await (await login(gw, "secret@example.com", NEXT_PASSWORD)).json())["token"]),
        )
        assert changed.status == 200
    stored = await every_account_row(pool)
    for secret in (SECRET_PASSWORD, NEXT_PASSWORD, raw):
        assert secret not in stored
        assert secret not in caplog.text
        for record in caplog.records:
            assert secret not in record.getMessage()
    async with pool.acquire() as conn:
        password_hash = await conn.fetchval("SELECT password_hash FROM users WHERE email = 'secret@example.com'")
    assert password_hash.startswith("$argon2id$")
    assert "password" not in str(created["user"]) and "$argon2" not in str(created)


async def test_login_costs_the_same_for_an_unknown_email_and_a_wrong_password(accounts_gw: Client) -> None:
    await register(accounts_gw, "timed@example.com")
    await login(accounts_gw, "ghost@example.com", "warm up the dummy hash")
    durations: dict[str, list[float]] = {"unknown": [], "wrong": []}
    for _ in range(8):
        for kind, email in (("unknown", "ghost@example.com"), ("wrong", "timed@example.com")):
            started = time.perf_counter()
            response = await login(accounts_gw, email, "not the password")
            durations[kind].append(time.perf_counter() - started)
            assert response.status == 401
    unknown, wrong = statistics.median(durations["unknown"]), statistics.median(durations["wrong"])
    # Both run one argon2 verification (tens of ms); a lookup alone would answer an unknown e-mail in ~1 ms.
    assert 0.5 < unknown / wrong < 2.0, durations


async def _at_start_of_a_window() -> None:
    """Wait past a minute boundary when one is near: the limit counts per fixed minute."""
    into_minute = time.time() % 60
    if into_minute > 50:
        await asyncio.sleep(60.5 - into_minute)


async def test_auth_endpoints_share_a_stricter_per_ip_limit(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(auth_rate_limit_per_minute=3, trusted_proxies=["127.0.0.1"])
    await _at_start_of_a_window()
    for _ in range(2):
        assert (await login(gw, "guess@example.com", "guess one two")).status == 401
    assert (await gw.post("/auth/forgot-password", json={"email": "guess@example.com"})).status == 200
    for method, path, body in (
        ("POST", "/auth/login", {"email": "guess@example.com", "password": "guess three"}),
        ("POST", "/auth/register", {"email": "new@example.com", "password": PASSWORD}),
        ("POST", "/auth/forgot-password", {"email": "guess@example.com"}),
        ("POST", "/auth/reset-password", {"token": "x" * 43, "password": PASSWORD}),
    ):
        response = await gw.request(method, path, json=body)
        error = await error_of(response, 429, "rate_limited")
        assert error["error"].startswith("Too many attempts")
        assert 1 <= int(response.headers["Retry-After"]) <= 60
    # Another client (behind the trusted proxy) is not held back, and data endpoints are not either.
    other = await gw.post(
        "/auth/login",
        json={"email": "guess@example.com", "password": "guess four"},
        headers={"X-Forwarded-For": "203.0.113.9"},
    )
    assert other.status == 401
    assert (await gw.get("/api/alerts")).status == 200


async def test_a_token_reads_only_its_own_account(accounts_gw: Client) -> None:
    ada = await register(accounts_gw, "ada@example.com")
    bob = await register(accounts_gw, "bob@example.com", "bobs own password")
    assert (await (await accounts_gw.get("/api/me", headers=bearer(ada["token"]))).json())["email"] == "ada@example.com"
    assert (await (await accounts_gw.get("/api/me", headers=bearer(bob["token"]))).json())["email"] == "bob@example.com"
    saved = await accounts_gw.post(
        "/api/settings", json={"preferences": {"theme": "ada's"}}, headers=bearer(ada["token"])
    )
    assert saved.status == 200
    bobs = await (await accounts_gw.get("/api/settings", headers=bearer(bob["token"]))).json()
    assert bobs["preferences"] == {} and bobs["user_id"] == bob["user"]["id"]
    # Bob's token changes Bob's password only, and only with Bob's current password.
    wrong = await accounts_gw.post(
        "/api/change-password",
        json={"old_password": PASSWORD, "new_password": "bob took over"},
        headers=bearer(bob["token"]),
    )
    await error_of(wrong, 400, "wrong_password")
    assert (await login(accounts_gw, "ada@example.com")).status == 200
    # A token naming Ada but not signed with the gateway's secret is no way in.
    forged = token(ada["user"]["id"], secret="an attacker's own secret, 32+ chars")
    assert (await accounts_gw.get("/api/me", headers=bearer(forged))).status == 401


async def test_a_user_cannot_choose_their_role_or_plan_at_sign_up(accounts_gw: Client) -> None:
    for extra in ({"role": "admin"}, {"status": "active", "plan": "yearly"}):
        response = await accounts_gw.post(
            "/auth/register", json={"email": f"{uuid.uuid4().hex[:8]}@example.com", "password": PASSWORD, **extra}
        )
        await error_of(response, 400, "invalid_parameter")
