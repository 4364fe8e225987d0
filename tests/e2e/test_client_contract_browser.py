"""The product's web client's calls, made by a browser page from another origin, against `screener up`.

A small page (tests/e2e/client_page) makes exactly the client's calls (client.md): Alert History with
``limit=2000&since=<48 h ago>``, a watchlist star that must survive a reload, a webhook created,
toggled and tested against a local receiver, and the alert WebSocket with the client's JSON pings.
`screener up` runs its default replay (``SCREENER_REPLAY_TIME=live``), so the replay's alerts are recent.
The page signs up and logs in through /auth as the client does; the token survives reloads.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from screener.embedded.servers import free_port
from tests.e2e.test_dashboard_browser import CHROMIUM, CHROMIUM_ARGS, pytestmark, wait_until
from tests.fakes.webhook_receivers import RECEIVER_ALLOW, WebhookReceiver, running_receiver
from tests.gateway.helpers import SECRET

PAGE = Path(__file__).resolve().parent / "client_page"
REPO = Path(__file__).resolve().parents[2]
pytestmark = [*pytestmark, pytest.mark.e2e]


@pytest.fixture
async def screener_up(tmp_path: Path) -> AsyncIterator[str]:
    """Run `screener up` (its default live replay) with a JWT secret; yield the gateway's base URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCREENER_")}
    env.update(
        {
            "SCREENER_DATA_DIR": str(tmp_path / "state"),
            "SCREENER_GATEWAY_PORT": str(port),
            "SCREENER_REPLAY_SPEED": "600",
            "SCREENER_JWT_SECRET": SECRET,
            # The webhook test delivers to a receiver on loopback, which the outbound policy refuses by default.
            "SCREENER_OUTBOUND_ALLOW": RECEIVER_ALLOW[0],
        }
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "screener.cli", "up"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{base}/health/ready", timeout=5) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    try:
        deadline = time.monotonic() + 180
        while not await asyncio.to_thread(ready):
            assert process.poll() is None, "screener up exited"
            assert time.monotonic() < deadline, "the gateway never became ready"
            await asyncio.sleep(1)
        yield base
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
async def page_origin() -> AsyncIterator[str]:
    """Serve the client page from its own origin (as the client's dev server on :3000 would)."""
    app = web.Application()
    app.router.add_static("/", PAGE)
    server = TestServer(app)
    await server.start_server()
    yield str(server.make_url("/index.html"))
    await server.close()


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    """Yield a running local webhook receiver."""
    async with running_receiver() as running:
        yield running


async def test_the_clients_calls_work_from_a_browser_against_screener_up(
    screener_up: str, page_origin: str, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright

    ws_url = screener_up.replace("http://", "ws://") + "/ws/alerts"
    init = (
        f"localStorage.setItem('api_url', {screener_up!r});"
        f"localStorage.setItem('ws_url', {ws_url!r});"
        "localStorage.setItem('account', JSON.stringify({email: 'trader@example.com', password: 'correct horse 1'}));"
    )
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = await browser.new_page()
        await page.add_init_script(init)
        problems: list[str] = []
        page.on("pageerror", lambda exc: problems.append(str(exc)))
        page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
        await page.goto(page_origin)
        # Sign-up, login and the /api/me gate, through the gateway's own accounts.
        await wait_until(page, "() => window.clientState.me !== null", timeout=60)
        me = await page.evaluate("() => window.clientState.me")
        assert me["email"] == "trader@example.com" and me["status"] == "active" and me["role"] == "user"

        # Alert History: the replay's alerts, dated within the last 48 hours.
        await wait_until(page, "() => window.clientState.alerts.length > 0", timeout=420)
        alerts: list[dict[str, Any]] = await page.evaluate("() => window.clientState.alerts")
        now = datetime.now(tz=UTC)
        for alert in alerts:
            stamp = datetime.fromisoformat(alert["timestamp"].replace("Z", "+00:00"))
            assert now - timedelta(hours=48) <= stamp <= now + timedelta(minutes=2), alert
        assert len({a["id"] for a in alerts}) == len(alerts)

        # A watchlist star survives a reload.
        await page.click("button.star[data-coin=BTC]")
        await wait_until(page, "() => document.querySelector('button.star[data-coin=BTC]').dataset.on === 'true'")
        await page.reload()
        await wait_until(page, "() => document.querySelector('button.star[data-coin=BTC]')?.dataset.on === 'true'")
        assert await page.get_attribute("button.star[data-coin=ETH]", "data-on") == "false"

        # A webhook created, toggled off and on, and tested against the local receiver.
        await page.evaluate("(url) => window.runWebhook(url)", receiver.url("/client-hook"))
        (sample,) = receiver.received("/client-hook")
        assert sample.json()["rule_type"] == "test"
        webhook = await page.evaluate("() => window.clientState.webhook")
        assert webhook["is_enabled"] is True and webhook["webhook_type"] == "http"

        # The WebSocket brings a live alert (only alert frames), the same id that history then shows.
        await wait_until(page, "() => window.clientState.frames.length > 0", timeout=420)
        frame = (await page.evaluate("() => window.clientState.frames"))[0]
        assert {"id", "symbol", "rule_type", "description", "timestamp", "price"} <= set(frame)
        await wait_until(page, "(id) => window.clientState.alerts.some((a) => a.id === id)", frame["id"], timeout=60)
        await page.screenshot(path=str(tmp_path / "client-page.png"))
        assert await page.evaluate("() => window.clientState.errors") == []
        await browser.close()
    assert problems == []
