"""Drive the dashboard's account dialog in headless Chromium: sign up, sign out, a refused and a good sign-in."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer
from nats.aio.client import Client as NATS

from gateway.app import create_app
from screener.config import load_settings
from tests.e2e.test_dashboard_browser import CHROMIUM, CHROMIUM_ARGS, pytestmark, wait_until
from tests.gateway.helpers import SECRET, seed_rules

__all__ = ["pytestmark"]  # the browser marker and the skip when no Chromium is installed
PASSWORD = "a dashboard password"


@pytest.fixture
async def site(postgres_dsn: str, redis_client: aioredis.Redis, nats_client: NATS) -> AsyncIterator[str]:
    """Serve a gateway with accounts on the test's servers; yield its base URL."""
    pool = await asyncpg.create_pool(postgres_dsn, min_size=1, max_size=4)
    assert pool is not None
    async with pool.acquire() as conn:
        await seed_rules(conn)
    settings = load_settings({}, jwt_secret=SECRET, rate_limit_per_minute=10_000, auth_rate_limit_per_minute=1000)
    server = TestServer(create_app(settings, pool, redis_client, nats_client))
    await server.start_server()
    yield str(server.make_url("/"))
    await server.close()
    await pool.close()


async def test_dashboard_signs_up_out_and_in_with_email_and_password(site: str) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = await browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(site)
        await page.click("#signin")
        await page.fill("#signin-email", "dash@example.com")
        await page.fill("#signin-password", PASSWORD)
        await page.click("#signup")
        await wait_until(page, "() => document.getElementById('signin').textContent === 'dash@example.com'")
        token = await page.evaluate("() => localStorage.getItem('screener.token')")
        assert token and token.count(".") == 2
        assert await page.locator("#rules-note").inner_text() == "synced to your account"

        await page.click("#signin")
        await page.click("#signout")
        await wait_until(page, "() => document.getElementById('signin').textContent === 'Sign in'")
        assert await page.evaluate("() => localStorage.getItem('screener.token')") is None

        await page.click("#signin")
        await page.fill("#signin-email", "dash@example.com")
        await page.fill("#signin-password", "not the password")
        await page.click("#signin-submit")
        await wait_until(page, "() => document.getElementById('signin-error').textContent.length > 0")
        assert await page.locator("#signin-error").inner_text() == "Invalid email or password"

        await page.fill("#signin-password", PASSWORD)
        await page.click("#signin-submit")
        await wait_until(page, "() => document.getElementById('signin').textContent === 'dash@example.com'")
        await browser.close()
    assert errors == []
