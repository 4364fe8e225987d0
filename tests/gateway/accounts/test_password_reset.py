"""Password reset over real SMTP (aiosmtpd): the mail, single use, one hour, sessions ended (decision 8)."""

from __future__ import annotations

import asyncio
import logging
import re
from email.message import EmailMessage
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest

from gateway.accounts.store import MAX_ACTIVE_RESETS, reset_token_hash
from tests.gateway.accounts.conftest import FRONTEND, Inbox
from tests.gateway.accounts.helpers import Client, bearer, error_of, login, register
from tests.gateway.conftest import GatewayFactory

NEW_PASSWORD = "a brand new password"


def reset_link(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    match = re.search(r"https?://\S+", body.get_content())
    assert match, body.get_content()
    return match.group(0)


def token_of(link: str) -> str:
    return parse_qs(urlsplit(link).query)["token"][0]


async def ask_reset(client: Client, email: str) -> None:
    response = await client.post("/auth/forgot-password", json={"email": email})
    assert response.status == 200
    assert isinstance((await response.json())["message"], str)


async def test_forgot_password_mails_a_link_to_the_reset_page(mail_gw: tuple[Client, Inbox]) -> None:
    gw, inbox = mail_gw
    await register(gw, "reset@example.com")
    await ask_reset(gw, "RESET@example.com")
    [message] = await inbox.wait_for(1)
    assert message["To"] == "reset@example.com"
    assert message["From"] == "screener@example.test"
    link = reset_link(message)
    assert link.startswith(f"{FRONTEND}/reset-password?token=")
    assert len(token_of(link)) >= 40


async def test_a_reset_sets_the_password_once_and_ends_older_sessions(mail_gw: tuple[Client, Inbox]) -> None:
    gw, inbox = mail_gw
    old_session = (await register(gw, "once@example.com"))["token"]
    await asyncio.sleep(1.1)  # a token is dated to the second: the reset must come after it
    await ask_reset(gw, "once@example.com")
    raw = token_of(reset_link((await inbox.wait_for(1))[0]))
    done = await gw.post("/auth/reset-password", json={"token": raw, "password": NEW_PASSWORD})
    assert done.status == 200
    assert (await login(gw, "once@example.com", NEW_PASSWORD)).status == 200
    assert (await login(gw, "once@example.com")).status == 401
    await error_of(await gw.get("/api/me", headers=bearer(old_session)), 401, "token_revoked")
    # The ended session reaches none of the account's data, not only the accounts endpoints.
    await error_of(await gw.get("/api/watchlist", headers=bearer(old_session)), 401, "token_revoked")
    await error_of(await gw.get("/api/webhooks", headers=bearer(old_session)), 401, "token_revoked")
    again = await gw.post("/auth/reset-password", json={"token": raw, "password": "yet another password"})
    body = await error_of(again, 400, "invalid_reset_token")
    assert body["error"] == "This reset link is invalid or has expired"
    assert (await login(gw, "once@example.com", NEW_PASSWORD)).status == 200


async def test_a_reset_link_expires_after_an_hour(mail_gw: tuple[Client, Inbox], pool: asyncpg.Pool) -> None:
    gw, inbox = mail_gw
    await register(gw, "hour@example.com")
    await ask_reset(gw, "hour@example.com")
    raw = token_of(reset_link((await inbox.wait_for(1))[0]))
    async with pool.acquire() as conn:
        lifetime = await conn.fetchval(
            "SELECT expires_at - created_at FROM password_resets WHERE token_hash = $1", reset_token_hash(raw)
        )
        assert lifetime.total_seconds() == 3600
        # An hour later:
        await conn.execute("UPDATE password_resets SET expires_at = now() - interval '1 second'")
    response = await gw.post("/auth/reset-password", json={"token": raw, "password": NEW_PASSWORD})
    await error_of(response, 400, "invalid_reset_token")
    assert (await login(gw, "hour@example.com")).status == 200


async def test_one_reset_uses_up_every_link_of_the_user(mail_gw: tuple[Client, Inbox]) -> None:
    gw, inbox = mail_gw
    await register(gw, "two@example.com")
    await ask_reset(gw, "two@example.com")
    await ask_reset(gw, "two@example.com")
    first, second = (token_of(reset_link(m)) for m in await inbox.wait_for(2))
    assert first != second
    assert (await gw.post("/auth/reset-password", json={"token": second, "password": NEW_PASSWORD})).status == 200
    stale = await gw.post("/auth/reset-password", json={"token": first, "password": "another password!"})
    await error_of(stale, 400, "invalid_reset_token")


@pytest.mark.parametrize("raw", ["", "short", "x" * 300, "not a token at all, spaces!"])
async def test_malformed_and_unknown_tokens_are_one_400(mail_gw: tuple[Client, Inbox], raw: str) -> None:
    gw, _ = mail_gw
    response = await gw.post("/auth/reset-password", json={"token": raw, "password": NEW_PASSWORD})
    body = await error_of(response, 400, "invalid_reset_token")
    assert "'token'" in body["message"]


async def test_an_unknown_address_gets_the_same_answer_and_no_mail(mail_gw: tuple[Client, Inbox]) -> None:
    gw, inbox = mail_gw
    await register(gw, "real@example.com")
    unknown = await gw.post("/auth/forgot-password", json={"email": "ghost@example.com"})
    known = await gw.post("/auth/forgot-password", json={"email": "real@example.com"})
    assert unknown.status == known.status == 200
    assert await unknown.json() == await known.json()
    await inbox.wait_for(1)
    await asyncio.sleep(0.5)
    assert [m["To"] for m in inbox.messages] == ["real@example.com"]


async def test_reset_mail_is_capped_per_user(mail_gw: tuple[Client, Inbox]) -> None:
    gw, inbox = mail_gw
    await register(gw, "bombed@example.com")
    for _ in range(MAX_ACTIVE_RESETS + 3):
        await ask_reset(gw, "bombed@example.com")
    await inbox.wait_for(MAX_ACTIVE_RESETS)
    await asyncio.sleep(0.5)
    assert len(inbox.messages) == MAX_ACTIVE_RESETS


async def test_without_smtp_reset_is_off_said_at_start_and_forgot_still_answers(
    make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="gateway.accounts"):
        gw = await make_gateway(auth_rate_limit_per_minute=1000)
    assert any("password reset is off" in r.getMessage() for r in caplog.records)
    await register(gw, "nomail@example.com")
    response = await gw.post("/auth/forgot-password", json={"email": "nomail@example.com"})
    assert response.status == 200


async def test_forgot_password_rejects_a_missing_address(mail_gw: tuple[Client, Inbox]) -> None:
    gw, _ = mail_gw
    response = await gw.post("/auth/forgot-password", json={})
    assert "'email'" in (await error_of(response, 400, "invalid_parameter"))["message"]


async def test_an_unreachable_smtp_server_is_logged_without_the_token(
    make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture, pool: asyncpg.Pool
) -> None:
    gw = await make_gateway(auth_rate_limit_per_minute=1000, smtp_url="smtp://127.0.0.1:9")
    await register(gw, "down@example.com")
    with caplog.at_level(logging.INFO, logger="gateway.accounts"):
        assert (await gw.post("/auth/forgot-password", json={"email": "down@example.com"})).status == 200
        for _ in range(100):
            if any("not sent" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.1)
    [record] = [r for r in caplog.records if "not sent" in r.getMessage()]
    assert "smtp://127.0.0.1:9" in record.getMessage()
