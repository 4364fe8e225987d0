"""Sign-up modes open, invite and closed, and single-use expiring invites (decision 6)."""

from __future__ import annotations

from datetime import timedelta

import asyncpg

from gateway.accounts import store
from tests.gateway.accounts.helpers import PASSWORD, Client, error_of, register
from tests.gateway.conftest import GatewayFactory


async def new_invite(pool: asyncpg.Pool, lifetime: timedelta = timedelta(days=7)) -> str:
    async with pool.acquire() as conn:
        return (await store.create_invite(conn, lifetime)).code


async def test_invite_mode_needs_a_code(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(signup_mode="invite", auth_rate_limit_per_minute=1000)
    response = await gw.post("/auth/register", json={"email": "a@example.com", "password": PASSWORD})
    body = await error_of(response, 403, "invite_required")
    assert body["error"] == "An invite is required to sign up"


async def test_an_invite_signs_up_once(make_gateway: GatewayFactory, pool: asyncpg.Pool) -> None:
    gw = await make_gateway(signup_mode="invite", auth_rate_limit_per_minute=1000)
    code = await new_invite(pool)
    created = await register(gw, "invited@example.com", invite_code=code)
    assert created["user"]["status"] == "active"
    again = await gw.post(
        "/auth/register", json={"email": "second@example.com", "password": PASSWORD, "invite_code": code}
    )
    await error_of(again, 400, "invalid_invite")
    async with pool.acquire() as conn:
        invite = await store.invite(conn, code)
        assert await conn.fetchval("SELECT count(*) FROM users WHERE email = 'second@example.com'") == 0
    assert invite is not None and invite.used_at is not None and invite.used_by_email == "invited@example.com"


async def test_an_expired_invite_signs_nobody_up(make_gateway: GatewayFactory, pool: asyncpg.Pool) -> None:
    gw = await make_gateway(signup_mode="invite", auth_rate_limit_per_minute=1000)
    code = await new_invite(pool)
    async with pool.acquire() as conn:
        await conn.execute("UPDATE invites SET expires_at = now() - interval '1 second' WHERE code = $1", code)
    response = await gw.post(
        "/auth/register", json={"email": "late@example.com", "password": PASSWORD, "invite_code": code}
    )
    body = await error_of(response, 400, "invalid_invite")
    assert body["error"] == "This invite is invalid, used or expired"


async def test_a_failed_sign_up_leaves_the_invite_unused(make_gateway: GatewayFactory, pool: asyncpg.Pool) -> None:
    gw = await make_gateway(signup_mode="invite", auth_rate_limit_per_minute=1000)
    await register(gw, "taken@example.com", invite_code=await new_invite(pool))
    code = await new_invite(pool)
    response = await gw.post(
        "/auth/register", json={"email": "taken@example.com", "password": PASSWORD, "invite_code": code}
    )
    await error_of(response, 409, "email_taken")
    check = await (await gw.get(f"/auth/invite/{code}")).json()
    assert check["valid"] is True


async def test_closed_mode_signs_nobody_up(make_gateway: GatewayFactory, pool: asyncpg.Pool) -> None:
    gw = await make_gateway(signup_mode="closed", auth_rate_limit_per_minute=1000)
    code = await new_invite(pool)
    for extra in ({}, {"invite_code": code}):
        response = await gw.post("/auth/register", json={"email": "c@example.com", "password": PASSWORD, **extra})
        body = await error_of(response, 403, "signup_closed")
        assert body["error"] == "Sign-up is closed"
    assert await (await gw.get(f"/auth/invite/{code}")).json() == {"valid": False, "message": "Sign-up is closed"}


async def test_open_mode_takes_an_invite_too_and_uses_it(accounts_gw: Client, pool: asyncpg.Pool) -> None:
    code = await new_invite(pool)
    await register(accounts_gw, "open@example.com", invite_code=code)
    assert (await (await accounts_gw.get(f"/auth/invite/{code}")).json())["valid"] is False
    response = await accounts_gw.post(
        "/auth/register", json={"email": "bad@example.com", "password": PASSWORD, "invite_code": "no such code"}
    )
    await error_of(response, 400, "invalid_invite")


async def test_invite_check_answers_valid_used_expired_and_unknown(accounts_gw: Client, pool: asyncpg.Pool) -> None:
    valid = await new_invite(pool)
    body = await (await accounts_gw.get(f"/auth/invite/{valid}")).json()
    assert body["valid"] is True and body["expires_at"].endswith("Z")

    used = await new_invite(pool)
    await register(accounts_gw, "user@example.com", invite_code=used)
    assert await (await accounts_gw.get(f"/auth/invite/{used}")).json() == {
        "valid": False,
        "message": "This invite has already been used",
    }

    expired = await new_invite(pool, timedelta(seconds=-1))
    body = await (await accounts_gw.get(f"/auth/invite/{expired}")).json()
    assert body["valid"] is False and body["message"] == "This invite has expired"

    for unknown in ("abcdefghijklmnop", "x", "%3Cscript%3E"):
        response = await accounts_gw.get(f"/auth/invite/{unknown}")
        assert response.status == 200
        assert await response.json() == {"valid": False, "message": "This invite link is not valid"}
