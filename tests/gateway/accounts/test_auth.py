"""Sign-up, sign-in, /api/me, refresh and password change against a real gateway (client.md section 1)."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import asyncpg
import jwt
import pytest

from gateway.accounts.standing import Standing
from gateway.accounts.tokens import ISSUER
from gateway.auth import Identity
from tests.gateway.accounts.helpers import (
    PASSWORD,
    USER_FIELDS,
    Client,
    bearer,
    error_of,
    login,
    register,
)
from tests.gateway.conftest import GatewayFactory
from tests.gateway.helpers import AUDIENCE, SECRET, token


def parse_iso(text: str) -> datetime:
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_register_answers_the_user_object_and_a_gateway_token(accounts_gw: Client) -> None:
    before = int(time.time())
    body = await register(accounts_gw, "Ada@Example.com")
    user = body["user"]
    assert set(user) == USER_FIELDS
    assert uuid.UUID(user["id"])
    assert user["email"] == "Ada@Example.com"
    assert user["role"] == "user"
    # Without a billing provider every new account is active (decision 7).
    assert user["status"] == "active"
    assert user["plan"] is None and user["plan_activated_at"] is None and user["plan_expires_at"] is None
    assert user["trial_ends_at"] is None and user["tv_addon_active"] is False
    assert abs(parse_iso(user["created_at"]).timestamp() - before) < 60
    claims = jwt.decode(body["token"], SECRET, algorithms=["HS256"], audience=AUDIENCE)
    assert claims["sub"] == user["id"]
    assert claims["email"] == "Ada@Example.com"
    assert claims["role"] == "user"
    assert claims["aud"] == "authenticated"
    assert claims["exp"] - claims["iat"] == 24 * 3600
    assert before - 5 <= claims["iat"] <= time.time() + 5


async def test_the_token_opens_api_me_with_the_same_user(accounts_gw: Client) -> None:
    body = await register(accounts_gw, "me@example.com")
    response = await accounts_gw.get("/api/me", headers=bearer(body["token"]))
    me = await response.json()
    assert response.status == 200
    assert me == body["user"]


async def test_token_lifetime_is_a_setting(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(token_lifetime_hours=2, auth_rate_limit_per_minute=1000)
    body = await register(gw, "short@example.com")
    claims = jwt.decode(body["token"], SECRET, algorithms=["HS256"], audience=AUDIENCE)
    assert claims["exp"] - claims["iat"] == 7200


async def test_an_email_registers_once_whatever_its_case(accounts_gw: Client) -> None:
    await register(accounts_gw, "twice@example.com")
    response = await accounts_gw.post("/auth/register", json={"email": "TWICE@example.COM", "password": PASSWORD})
    body = await error_of(response, 409, "email_taken")
    assert body["error"] == "An account with this email already exists"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"email": "not-an-address", "password": PASSWORD}, "email"),
        ({"password": PASSWORD}, "email"),
        ({"email": "a@example.com", "password": "short"}, "password"),
        ({"email": "a@example.com", "password": 12345678}, "password"),
        ({"email": "a@example.com", "password": "x" * 1025}, "password"),
        ({"email": "a@example.com", "password": PASSWORD, "name": "Ada"}, "name"),
    ],
)
async def test_register_rejects_bad_fields_naming_them(
    accounts_gw: Client, payload: dict[str, object], field: str
) -> None:
    response = await accounts_gw.post("/auth/register", json=payload)
    body = await error_of(response, 400, "invalid_parameter")
    assert repr(field) in body["message"]


async def test_register_rejects_a_body_that_is_not_json(accounts_gw: Client) -> None:
    response = await accounts_gw.post("/auth/register", data=b"{not json", headers={"Content-Type": "application/json"})
    body = await error_of(response, 400, "invalid_parameter")
    assert "'body'" in body["message"]


async def test_login_answers_user_and_token_and_stamps_the_login(accounts_gw: Client) -> None:
    created = await register(accounts_gw, "login@example.com")
    response = await login(accounts_gw, "LOGIN@example.com")
    body = await response.json()
    assert response.status == 200
    assert set(body) == {"user", "token"}
    assert body["user"]["id"] == created["user"]["id"]
    assert body["user"]["last_login_at"] is not None
    me = await (await accounts_gw.get("/api/me", headers=bearer(body["token"]))).json()
    assert me["email"] == "login@example.com"


async def test_login_failures_read_the_same_for_an_unknown_email_and_a_wrong_password(accounts_gw: Client) -> None:
    await register(accounts_gw, "known@example.com")
    wrong = await error_of(await login(accounts_gw, "known@example.com", "wrong password"), 401, "invalid_credentials")
    unknown = await error_of(await login(accounts_gw, "nobody@example.com", PASSWORD), 401, "invalid_credentials")
    assert wrong == unknown
    assert wrong["error"] == "Invalid email or password"


async def test_api_me_refresh_and_password_change_need_a_token(accounts_gw: Client) -> None:
    for method, path in (("GET", "/api/me"), ("POST", "/api/refresh"), ("POST", "/api/change-password")):
        response = await accounts_gw.request(method, path, json={})
        await error_of(response, 401, "unauthorized")
    forged = token(str(uuid.uuid4()), secret="not-the-secret-at-all-0123456789")
    assert (await accounts_gw.get("/api/me", headers=bearer(forged))).status == 401


async def test_refresh_answers_a_new_token_for_the_same_user(accounts_gw: Client) -> None:
    created = await register(accounts_gw, "refresh@example.com")
    response = await accounts_gw.post("/api/refresh", json={}, headers=bearer(created["token"]))
    body = await response.json()
    assert response.status == 200
    assert body["user"]["id"] == created["user"]["id"]
    claims = jwt.decode(body["token"], SECRET, algorithms=["HS256"], audience=AUDIENCE)
    assert claims["sub"] == created["user"]["id"]
    assert (await accounts_gw.get("/api/me", headers=bearer(body["token"]))).status == 200


async def test_change_password_checks_the_current_one(accounts_gw: Client) -> None:
    created = await register(accounts_gw, "change@example.com")
    headers = bearer(created["token"])
    wrong = await accounts_gw.post(
        "/api/change-password",
        json={"old_password": "not it at all", "new_password": "a new password"},
        headers=headers,
    )
    body = await error_of(wrong, 400, "wrong_password")
    assert body["error"] == "Current password is incorrect"
    short = await accounts_gw.post(
        "/api/change-password", json={"old_password": PASSWORD, "new_password": "short"}, headers=headers
    )
    assert "'new_password'" in (await error_of(short, 400, "invalid_parameter"))["message"]
    done = await accounts_gw.post(
        "/api/change-password", json={"old_password": PASSWORD, "new_password": "a new password"}, headers=headers
    )
    assert done.status == 200
    assert (await login(accounts_gw, "change@example.com", PASSWORD)).status == 401
    assert (await login(accounts_gw, "change@example.com", "a new password")).status == 200
    # The client keeps its token after a change: the session goes on.
    assert (await accounts_gw.get("/api/me", headers=headers)).status == 200


async def test_an_external_supabase_token_gets_a_user_provisioned(accounts_gw: Client) -> None:
    subject = str(uuid.uuid4())
    headers = bearer(token(subject, claims={"email": "supa@example.com"}))
    first = await accounts_gw.get("/api/me", headers=headers)
    me = await first.json()
    assert first.status == 200
    assert set(me) == USER_FIELDS
    assert me["id"] == subject and me["email"] == "supa@example.com" and me["status"] == "active"
    again = await (await accounts_gw.get("/api/me", headers=headers)).json()
    assert again["id"] == subject and again["created_at"] == me["created_at"]


async def test_an_external_subject_that_is_no_uuid_maps_to_a_stable_user(accounts_gw: Client) -> None:
    headers = bearer(token("auth0|abc123"))
    first = await (await accounts_gw.get("/api/me", headers=headers)).json()
    second = await (await accounts_gw.get("/api/me", headers=headers)).json()
    assert uuid.UUID(first["id"]) and first["id"] == second["id"]
    assert first["email"] == ""


async def test_an_external_token_with_a_taken_email_still_opens_api_me(accounts_gw: Client, pool: asyncpg.Pool) -> None:
    local = await register(accounts_gw, "shared@example.com")
    subject = str(uuid.uuid4())
    response = await accounts_gw.get("/api/me", headers=bearer(token(subject, claims={"email": "shared@example.com"})))
    me = await response.json()
    assert response.status == 200
    assert me["id"] == subject and me["id"] != local["user"]["id"]
    assert me["email"] == "shared@example.com"  # from the token: the row keeps the address with its owner
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT email FROM users WHERE id = $1", uuid.UUID(subject)) is None


async def test_a_gateway_token_of_a_deleted_account_is_refused(accounts_gw: Client, pool: asyncpg.Pool) -> None:
    created = await register(accounts_gw, "gone@example.com")
    async with pool.acquire() as conn:
        await conn.execute("DELETE FROM users WHERE id = $1", uuid.UUID(created["user"]["id"]))
    response = await accounts_gw.get("/api/me", headers=bearer(created["token"]))
    await error_of(response, 401, "unauthorized")


async def test_a_disabled_account_can_neither_sign_in_nor_use_its_token(
    accounts_gw: Client, pool: asyncpg.Pool
) -> None:
    created = await register(accounts_gw, "off@example.com")
    async with pool.acquire() as conn:
        await conn.execute("UPDATE users SET disabled_at = now() WHERE email = 'off@example.com'")
    await error_of(await login(accounts_gw, "off@example.com"), 403, "account_disabled")
    await error_of(await accounts_gw.get("/api/me", headers=bearer(created["token"])), 403, "account_disabled")


async def test_a_disabled_accounts_token_reaches_none_of_its_data(accounts_gw: Client, pool: asyncpg.Pool) -> None:
    token = (await register(accounts_gw, "gone-quiet@example.com"))["token"]
    async with pool.acquire() as conn:
        await conn.execute("UPDATE users SET disabled_at = now() WHERE email = 'gone-quiet@example.com'")
    # Billing is off here, so no plan check reads the user row: before, these answered 200/201.
    for method, path, body in [
        ("GET", "/api/watchlist", None),
        ("POST", "/api/webhooks", {"name": "n", "webhook_type": "http", "webhook_url": "https://hooks.example/h"}),
        ("GET", "/api/settings", None),
        ("PUT", "/api/settings/tv-username", {"tv_username": "someone"}),
        ("POST", "/api/alert-rules", {"name": "n", "expression": "c5m > 1"}),
    ]:
        response = await accounts_gw.request(method, path, json=body, headers=bearer(token))
        await error_of(response, 403, "account_disabled")
    # Public endpoints serve the token as anonymous (decision 3), not as the disabled user.
    rules = await accounts_gw.get("/api/alert-rules", headers=bearer(token))
    assert rules.status == 200


async def test_a_disable_made_elsewhere_counts_once_the_cached_standing_is_stale(
    accounts_gw: Client, pool: asyncpg.Pool
) -> None:
    created = await register(accounts_gw, "later@example.com")
    caller = Identity(created["user"]["id"], issuer=ISSUER, issued_at=int(time.time()))
    now = [0.0]
    standing = Standing(pool, max_age=5.0, clock=lambda: now[0])
    assert await standing.refusal(caller) is None
    async with pool.acquire() as conn:  # the CLI, or another replica
        await conn.execute("UPDATE users SET disabled_at = now() WHERE email = 'later@example.com'")
    assert await standing.refusal(caller) is None  # cached: one lookup per user per few seconds
    now[0] = 5.0
    refused = await standing.refusal(caller)
    assert refused is not None and refused.code == "account_disabled"


async def test_without_a_secret_sign_in_is_unavailable(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(jwt_secret=None)
    response = await gw.post("/auth/register", json={"email": "x@example.com", "password": PASSWORD})
    await error_of(response, 503, "accounts_not_configured")
    await error_of(await login(gw, "x@example.com"), 503, "accounts_not_configured")


async def test_last_login_moves_on_each_sign_in(accounts_gw: Client, pool: asyncpg.Pool) -> None:
    await register(accounts_gw, "stamp@example.com")
    async with pool.acquire() as conn:
        await conn.execute("UPDATE users SET last_login_at = now() - interval '1 day'")
    body = await (await login(accounts_gw, "stamp@example.com")).json()
    assert datetime.now(UTC).timestamp() - parse_iso(body["user"]["last_login_at"]).timestamp() < 60
