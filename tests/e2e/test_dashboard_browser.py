"""Drive the dashboard in headless Chromium: it loads real data, receives a live alert, and is screenshotted.

The gateway runs on the test's real PostgreSQL, Redis and NATS. Candles are the recorded Binance klines
of data/klines; the live alert is a CloudEvent published on the alerts subject through NATS, exactly as
the rules function publishes it.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer
from nats.aio.client import Client as NATS

from gateway.app import create_app
from screener.config import load_settings
from screener.db.partitions import PartitionCache
from screener.events.models import MINUTE_MS, WINDOWS, MetricsSnapshot, TimeframeMetrics, minute_close_iso
from state.metrics_store import MetricsStore
from tests.gateway.helpers import SECRET, insert_alerts, make_alert, publish_alert, seed_rules

CHROMIUM = os.environ.get("SCREENER_TEST_CHROMIUM", "/usr/bin/chromium")  # test-only override of the binary
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DAYS = 2
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists(),
        reason=f"no chromium binary at {CHROMIUM} (apt-get install -y chromium)",
    ),
]


def read_klines(path: Path, minutes: int) -> list[tuple[int, float, float, float, float, float, float, int]]:
    """Return the last ``minutes`` rows of a Binance monthly kline CSV."""
    with gzip.open(path, "rt") as handle:
        rows = [r for r in csv.reader(handle) if r and r[0].isdigit()]
    return [
        (int(r[0]), float(r[1]), float(r[2]), float(r[3]), float(r[4]), float(r[5]), float(r[7]), int(r[8]))
        for r in rows[-minutes:]
    ]


def snapshot_of(symbol: str, rows: list[tuple[int, float, float, float, float, float, float, int]]) -> MetricsSnapshot:
    """Return rolling-window metrics of the last minute (enough for the table; the calculator does the rest)."""
    last = rows[-1]
    frames = {}
    for name, n in WINDOWS.items():
        window = rows[-n:]
        open_, close = window[0][1], window[-1][4]
        volume = sum(r[6] for r in window)
        frames[name] = TimeframeMetrics(
            open=open_,
            high=max(r[2] for r in window),
            low=min(r[3] for r in window),
            close=close,
            volume=volume,
            price_change=(close / open_ - 1) * 100,
            vwap=volume / sum(r[5] for r in window),
            coverage=len(window) / n,
            rsi_14=50 + (close / open_ - 1) * 400 if name == "15m" else None,
        )
    return MetricsSnapshot(
        symbol=symbol, minute=last[0], timestamp=minute_close_iso(last[0]), last_price=last[4], timeframes=frames
    )


@pytest.fixture
async def dashboard(
    postgres_dsn: str, redis_client: aioredis.Redis, nats_client: NATS, klines_dir: Path
) -> AsyncIterator[tuple[str, int]]:
    """Serve a gateway over real recorded data; yield (base URL, last minute)."""
    pool = await asyncpg.create_pool(postgres_dsn, min_size=2, max_size=6)
    assert pool is not None
    snapshots = []
    last_minute = 0
    async with pool.acquire() as conn:
        await seed_rules(conn)
        for path in sorted((klines_dir / "binance-um-2026-02").glob("*.csv.gz")):
            symbol = path.name.split("-")[0]
            rows = read_klines(path, DAYS * 1440)
            await PartitionCache().ensure(conn, "candles_1m", [rows[0][0], rows[-1][0]])
            await conn.copy_records_to_table(
                "candles_1m",
                records=[(symbol, _ts(r[0]), *r[1:7], r[7]) for r in rows],
                columns=["symbol", "open_time", "open", "high", "low", "close", "volume", "quote_volume", "trades"],
            )
            snapshots.append(snapshot_of(symbol, rows))
            last_minute = rows[-1][0]
        history = [
            make_alert("LINKUSDT", "futures_5_big_bull", last_minute - 300 * MINUTE_MS, price=8.9),
            make_alert("AVAXUSDT", "futures_top_hunter", last_minute - 120 * MINUTE_MS, price=9.1),
            make_alert("LINKUSDT", "futures_bottom_hunter", last_minute - 40 * MINUTE_MS, price=8.7),
        ]
        await insert_alerts(conn, history)
    await MetricsStore(redis_client).save(snapshots)
    settings = load_settings({}, jwt_secret=SECRET, rate_limit_per_minute=10_000)
    app = create_app(settings, pool, redis_client, nats_client)
    server = TestServer(app)
    await server.start_server()
    yield str(server.make_url("/")), last_minute
    await server.close()
    await pool.close()


async def wait_until(page: Any, script: str, arg: Any = None, timeout: float = 10.0) -> None:
    """Poll ``script`` in the page until it returns true.

    Playwright's ``wait_for_function`` compiles its predicate with ``eval`` inside the page, which the
    dashboard's Content-Security-Policy rightly forbids; ``evaluate`` goes through the debugger protocol.
    """
    from playwright.async_api import Error as PlaywrightError

    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            if await page.evaluate(script, arg):
                return
        except PlaywrightError as exc:
            # The page navigated meanwhile (the dashboard reloads after signing in or out): ask again.
            if "context was destroyed" not in str(exc) and "navigat" not in str(exc):
                raise
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for: {script}"
        await asyncio.sleep(0.25)


def _ts(ms: int) -> object:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, tz=UTC)


async def test_dashboard_shows_live_alerts_metrics_and_chart(
    dashboard: tuple[str, int], nats_client: NATS, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright

    url, last_minute = dashboard
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = await browser.new_page(viewport={"width": 1600, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("requestfailed", lambda req: errors.append(f"request failed: {req.url}"))
        await page.goto(url + "#LINKUSDT")
        await page.wait_for_selector("#conn[data-state=live]", timeout=15_000)
        assert await page.locator("#screener-body tr[data-symbol]").count() == 7
        await page.wait_for_selector("#chart canvas", timeout=10_000)
        assert await page.locator("#rules input[type=checkbox]").count() == 20
        assert await page.locator("#alert-feed .alert-item").count() == 3

        alert = make_alert(
            "LINKUSDT",
            "futures_pioneer_bull",
            last_minute,
            price=8.95,
            metadata={"c5m": 1.42, "c15m": 2.31, "v5m": 1_830_000.0},
        )
        await publish_alert(nats_client, alert)
        newest = page.locator("#alert-feed .alert-item").first
        await newest.wait_for(timeout=10_000)
        await wait_until(page, "(id) => document.querySelector('#alert-feed .alert-item')?.dataset.id === id", alert.id)
        assert "Scout Bull" in await newest.inner_text()  # the product's name, not the rule id

        await page.fill("#filter", "av")
        assert await page.locator("#screener-body tr[data-symbol]").count() == 1
        await page.fill("#filter", "")
        await page.click("th[data-sort=v1d]")
        await page.wait_for_timeout(1800)  # let the fresh-alert highlight fade for a calm screenshot
        shot = tmp_path / "dashboard.png"
        await page.screenshot(path=str(shot))
        await browser.close()
    assert shot.stat().st_size > 20_000
    assert errors == []
    print(f"screenshot: {shot}")


@pytest.mark.e2e
async def test_dashboard_on_screener_up_receives_a_real_alert(tmp_path: Path) -> None:
    """The whole pipeline: `screener up` replays recorded klines; the open page gets a rule's alert live."""
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    from playwright.async_api import async_playwright

    from screener.embedded.servers import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCREENER_")}
    env.update(
        {
            "SCREENER_DATA_DIR": str(tmp_path / "state"),
            "SCREENER_GATEWAY_PORT": str(port),
            "SCREENER_REPLAY_SPEED": "600",
        }
    )
    repo = Path(__file__).resolve().parents[2]
    process = subprocess.Popen(
        [sys.executable, "-m", "screener.cli", "up"],
        cwd=repo,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{base}/health/ready", timeout=5) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        deadline = time.monotonic() + 180
        while not await asyncio.to_thread(ready):
            assert process.poll() is None, "screener up exited"
            assert time.monotonic() < deadline, "the gateway never became ready"
            await asyncio.sleep(1)
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            page = await browser.new_page(viewport={"width": 1600, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(base + "/")
            await page.wait_for_selector("#conn[data-state=live]", timeout=30_000)
            before = await page.eval_on_selector_all("#alert-feed .alert-item", "els => els.map(e => e.dataset.id)")
            # Metrics arrive live over protocol v2 and fill the table; then a rule fires and its alert is pushed.
            await wait_until(
                page, "() => document.querySelectorAll('#screener-body tr[data-symbol]').length >= 7", timeout=180
            )
            await wait_until(
                page,
                "(known) => { const first = document.querySelector('#alert-feed .alert-item');"
                " return !!first && !known.includes(first.dataset.id); }",
                before,
                timeout=420,
            )
            text = await page.locator("#alert-feed .alert-item").first.inner_text()
            await page.screenshot(path=str(tmp_path / "dashboard-live.png"))
            await browser.close()
        assert errors == []
        assert "_" not in text.split("\n")[1]  # the rule's product name is shown, not its id
        print(f"screenshot: {tmp_path / 'dashboard-live.png'}")
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
