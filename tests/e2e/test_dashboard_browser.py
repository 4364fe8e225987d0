"""Drive the dashboard in headless Chromium: it loads real data, receives live alerts, and is screenshotted.

The gateway runs on the test's real PostgreSQL, Redis and NATS. Candles are the recorded Binance klines
of data/klines; live alerts are CloudEvents published on the alerts subject through NATS, exactly as
the rules function publishes them. Besides the data paths the tests check what a first visitor meets:
every control reachable at laptop and phone widths, one time convention, a readable chart per interval,
alert metadata under the product's names, and counts that say what the rule switches hide.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import os
import shutil
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer
from nats.aio.client import Client as NATS

from functions.rules.ruleset import RuleSet
from functions.rules.store import seed_file_rules
from functions.rules.vocabulary import METRICS
from gateway.app import create_app
from screener.config import load_settings
from screener.db.partitions import PartitionCache
from screener.events.models import MINUTE_MS, WINDOWS, MetricsSnapshot, TimeframeMetrics, alert_id, minute_close_iso
from state.metrics_store import MetricsStore
from tests.e2e.reachability import unreachable_controls
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
NOW_MINUTE = int(time.time() * 1000) // MINUTE_MS * MINUTE_MS - 2 * MINUTE_MS
# What Surge 60 Bull V2 records (in a shuffled order): it reads BTC's 1h change too.
RICH_METADATA = {
    "v1d": 98_765_432.0,
    "c8h": 3.2,
    "BTCUSDT.c1h": 0.4,
    "c1h": 1.9,
    "v1h": 2_500_000.0,
    "c1d": 6.25,
    "v8h": 14_000_000.0,
    "rsi15m": 71.44,
}
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
            # Off by default: an anonymous visitor's feed holds it back and says so.
            make_alert("AVAXUSDT", "futures_whale_detector", last_minute - 90 * MINUTE_MS, price=9.0),
            # An alert of today (the recorded data is older): its time is shown without a date.
            make_alert("NEARUSDT", "futures_big_bull_60_v2", NOW_MINUTE, price=1.2, metadata=RICH_METADATA),
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
        assert await page.locator("#alert-feed .alert-item").count() == 4  # the Whale Detector's is held back

        alert = make_alert(
            "LINKUSDT",
            "futures_pioneer_bull",
            last_minute,
            price=8.95,
            metadata={"c5m": 1.42, "c15m": 2.31, "v5m": 1_830_000.0},
        )
        await publish_alert(nats_client, alert)
        live = page.locator(f"#alert-feed .alert-item[data-id='{alert.id}']")
        await live.wait_for(timeout=10_000)
        assert "Scout Bull" in await live.inner_text()  # the product's name, not the rule id
        # Metadata under the product's names, with units, changes before volumes.
        assert await live.locator(".meta .kv").all_inner_texts() == [
            "5m change +1.42%",
            "15m change +2.31%",
            "5m volume 1.83M USDT",
        ]
        rich = page.locator("#alert-feed .alert-item[data-symbol=NEARUSDT] .meta .kv")
        assert await rich.all_inner_texts() == [
            "1h change +1.90%",
            "BTC 1h change +0.40%",
            "8h change +3.20%",
            "24h change +6.25%",
            "1h volume 2.50M USDT",
            "8h volume 14.00M USDT",
            "24h volume 98.77M USDT",
            "RSI 15m 71.4",
        ]

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


async def _loaded(page: Any, url: str | None) -> None:
    """Open the dashboard on LINKUSDT (or reload it: no ``url``) and wait for its data to be shown."""
    if url is None:
        await page.reload()
    else:
        await page.goto(url + "#LINKUSDT")
    await page.wait_for_selector("#conn[data-state=live]", timeout=15_000)
    await page.wait_for_selector("#chart canvas", timeout=10_000)
    await wait_until(page, "() => document.querySelectorAll('#screener-body tr[data-symbol]').length === 7")
    await wait_until(page, "() => document.querySelectorAll('#rules input[type=checkbox]').length === 20")
    await wait_until(page, "() => !!document.getElementById('chart-box').dataset.visibleBars")


# The three widths the first-hour report names, then a wide desktop and the tablet sizes between the layouts.
VIEWPORTS = [
    ("laptop-1280x800", {"width": 1280, "height": 800}, False),
    ("laptop-1366x768", {"width": 1366, "height": 768}, False),
    ("phone-390x844", {"width": 390, "height": 844}, True),
    ("desktop-1600x900", {"width": 1600, "height": 900}, False),
    ("tablet-1024x768", {"width": 1024, "height": 768}, False),
    ("tablet-820x1180", {"width": 820, "height": 1180}, True),
]


LONG_EMAIL = "a.rather.long.address.for.a.phone.screen@example.com"
SIGN_UP = """async (email) => {
  const response = await fetch('/auth/register', {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ email, password: 'a dashboard password' }),
  });
  const session = await response.json();
  localStorage.setItem('screener.token', session.token);
  localStorage.setItem('screener.email', session.user.email);
}"""


async def test_dashboard_keeps_every_control_reachable_at_laptop_and_phone_widths(
    dashboard: tuple[str, int], tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright

    url, _ = dashboard
    shots = tmp_path / "screenshots"
    shots.mkdir()
    problems: dict[str, list[str]] = {}
    errors: list[str] = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        for name, viewport, mobile in VIEWPORTS:
            context = await browser.new_context(viewport=viewport, is_mobile=mobile, has_touch=mobile)
            page = await context.new_page()
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await _loaded(page, url)
            checked, found = await unreachable_controls(page)
            # 20 switches, 10 columns and their first cells, 6 intervals, the feed's prices, buttons, the filter.
            assert checked >= 55, f"{name}: only {checked} controls found"
            await page.click("#signin")
            in_dialog, dialog_found = await unreachable_controls(page, "#signin-dialog")
            assert in_dialog >= 5  # e-mail, password and three buttons
            await page.keyboard.press("Escape")
            problems[name] = found + [f"sign-in dialog: {problem}" for problem in dialog_found]
            await page.wait_for_timeout(1800)  # let the fresh-alert highlight fade for a calm screenshot
            await page.screenshot(path=str(shots / f"{name}.png"))
            if mobile:
                await page.screenshot(path=str(shots / f"{name}-full.png"), full_page=True)
            if name.startswith("phone"):  # signed in, the header's account button carries a long e-mail
                await page.evaluate(SIGN_UP, LONG_EMAIL)
                await _loaded(page, None)
                assert await page.inner_text("#signin") == LONG_EMAIL
                problems[f"{name} signed in"] = (await unreachable_controls(page))[1]
            await context.close()
        await browser.close()
    print(f"screenshots: {shots}")
    unreachable = [f"{name}: {problem}" for name, found in problems.items() for problem in found]
    assert not unreachable, "\n".join(unreachable)
    assert errors == []


def _feed_time(ms: int, zone: ZoneInfo) -> str:
    """Return what the feed's time cell shows: "HH:MM", and the date below it when not today."""
    instant = datetime.fromtimestamp(ms / 1000, tz=zone)
    now = datetime.now(tz=zone)
    if instant.date() == now.date():
        return f"{instant:%H:%M}"
    year = "" if instant.year == now.year else f" {instant.year}"
    return f"{instant:%H:%M}\n{instant.day} {instant:%b}{year}"


def _one_line(ms: int, zone: ZoneInfo) -> str:
    """Return the page's one-line form of an instant: "HH:MM" today, "28 Feb HH:MM" on other days."""
    parts = _feed_time(ms, zone).split("\n")
    return parts[0] if len(parts) == 1 else f"{parts[1]} {parts[0]}"


async def test_dashboard_shows_every_time_in_utc_or_local_time_as_chosen(
    dashboard: tuple[str, int], tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright

    url, last_minute = dashboard
    utc, tokyo = ZoneInfo("UTC"), ZoneInfo("Asia/Tokyo")
    avax_close = last_minute - 120 * MINUTE_MS + MINUTE_MS
    near_close = NOW_MINUTE + MINUTE_MS
    updated = last_minute + MINUTE_MS
    last_bar = last_minute // (5 * MINUTE_MS) * (5 * MINUTE_MS)
    avax = "#alert-feed .alert-item[data-symbol=AVAXUSDT] .time"
    near = "#alert-feed .alert-item[data-symbol=NEARUSDT] .time"
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        context = await browser.new_context(viewport={"width": 1600, "height": 900}, timezone_id="Asia/Tokyo")
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await _loaded(page, url)

        # UTC by default, though the browser lives in Tokyo; a date wherever the instant is not today.
        assert await page.inner_text("#tz") == "UTC"
        assert await page.inner_text(avax) == _feed_time(avax_close, utc)
        assert "\n" in await page.inner_text(avax)
        assert await page.inner_text(near) == _feed_time(near_close, utc)
        assert await page.inner_text("#stat-updated") == f"data as of {_one_line(updated, utc)} UTC"
        assert await page.inner_text("#chart-legend .legend-time") == f"{_one_line(last_bar, utc)} UTC"

        # The user's choice: local time, on every time of the page, the chart's too; remembered.
        await page.click("#tz")
        assert await page.inner_text("#tz") == "GMT+9"
        assert await page.inner_text(avax) == _feed_time(avax_close, tokyo)
        assert await page.inner_text(near) == _feed_time(near_close, tokyo)
        assert await page.inner_text("#stat-updated") == f"data as of {_one_line(updated, tokyo)} GMT+9"
        assert await page.inner_text("#chart-legend .legend-time") == f"{_one_line(last_bar, tokyo)} GMT+9"
        box = await page.locator("#chart").bounding_box()
        assert box is not None
        await page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
        hovered = await page.inner_text("#chart-legend .legend-time")
        assert hovered.endswith(" GMT+9") and hovered != f"{_one_line(last_bar, tokyo)} GMT+9"
        assert await page.evaluate("() => localStorage.getItem('screener.timeZone')") == "local"
        shot = tmp_path / "chart-local-time.png"
        await page.screenshot(path=str(shot), clip=await page.locator(".chart-panel").bounding_box())
        print(f"screenshot: {shot}")

        await _loaded(page, None)
        assert await page.get_attribute("#tz", "data-zone") == "local"
        assert await page.inner_text(avax) == _feed_time(avax_close, tokyo)
        await page.click("#tz")
        assert await page.inner_text(avax) == _feed_time(avax_close, utc)
        await browser.close()
    assert errors == []


# The least history each interval's request must cover, so there is something to scroll back to.
MIN_SPAN_MS = {"1m": 12, "5m": 24, "15m": 72, "1h": 14 * 24, "4h": 30 * 24, "1d": 180 * 24}


async def test_dashboard_chart_asks_each_interval_for_history_and_shows_a_readable_span(
    dashboard: tuple[str, int], nats_client: NATS, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright

    url, last_minute = dashboard
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = await browser.new_page(viewport={"width": 1280, "height": 800})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        asked: list[dict[str, list[str]]] = []
        page.on("request", lambda r: asked.append(parse_qs(urlsplit(r.url).query)) if "/api/klines" in r.url else None)
        await _loaded(page, url)

        # A busy symbol: a dozen alerts in two hours. Their labels are thinned, never piled up.
        rules = ["futures_pioneer_bull", "futures_bottom_hunter", "futures_5_big_bull", "futures_top_hunter"]
        for k in range(12):
            minute = last_minute - (k * 10 + 1) * MINUTE_MS
            await publish_alert(nats_client, make_alert("LINKUSDT", rules[k % 4], minute, price=8.8))
        await wait_until(page, "() => Number(document.getElementById('chart-box').dataset.markers) >= 12")
        markers = int(await page.get_attribute("#chart-box", "data-markers") or 0)
        labels = int(await page.get_attribute("#chart-box", "data-labels") or 0)
        assert 1 <= labels < markers
        await page.screenshot(
            path=str(tmp_path / "chart-5m-busy.png"), clip=await page.locator(".chart-panel").bounding_box()
        )
        print(f"screenshot: {tmp_path / 'chart-5m-busy.png'}")

        for interval, hours in MIN_SPAN_MS.items():
            asked.clear()
            await page.click(f"#intervals button[data-interval='{interval}']")
            await wait_until(page, "(i) => document.getElementById('chart-box').dataset.interval === i", interval)
            assert asked, f"no klines request for {interval}"
            query = asked[-1]
            assert query["symbol"] == ["LINKUSDT"] and query["interval"] == [interval]
            limit = int(query["limit"][0])
            minutes = {"1m": 1, "5m": 5, "15m": 15, "1h": 60, "4h": 240, "1d": 1440}[interval]
            assert 1 <= limit <= 1500 and limit * minutes >= hours * 60, (interval, limit)
            visible = int(await page.get_attribute("#chart-box", "data-visible-bars") or 0)
            width = (await page.locator("#chart").bounding_box() or {"width": 0})["width"]
            assert 1 <= visible <= width / 4, (interval, visible, width)  # at least 4 px per candle
            if interval in ("1m", "5m"):  # two days of data: a readable span, not all of them squeezed in
                assert visible >= 60, (interval, visible)
            panel = await page.locator(".chart-panel").bounding_box()
            await page.screenshot(path=str(tmp_path / f"chart-{interval}.png"), clip=panel)
        await browser.close()
    assert errors == []


async def test_dashboard_says_which_alerts_the_rule_switches_hide(dashboard: tuple[str, int]) -> None:
    from playwright.async_api import async_playwright

    url, last_minute = dashboard
    whale = alert_id("futures_whale_detector", "AVAXUSDT", last_minute - 90 * MINUTE_MS)
    top_raid = alert_id("futures_top_hunter", "AVAXUSDT", last_minute - 120 * MINUTE_MS)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = await browser.new_page(viewport={"width": 1600, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await _loaded(page, url)

        # Four rules ship off (rules.md): the Whale Detector's alert is held back, and the page says so.
        assert await page.inner_text("#stat-alerts") == "4 alerts · 1 hidden"
        assert await page.inner_text("#feed-hidden summary") == "4 rules off · 1 alert hidden"
        await page.click("#feed-hidden summary")
        detail = await page.inner_text("#feed-hidden-detail")
        assert "Whale Detector (off by default)" in detail and "Capitulation Catcher (off by default)" in detail
        assert await page.locator(f"#alert-feed [data-id='{whale}']").count() == 0
        assert await page.locator(".rule:has([data-rule=futures_whale_detector]) .tag").inner_text() == "off by default"

        await page.click(".rule:has([data-rule=futures_whale_detector]) .switch")
        await page.locator(f"#alert-feed [data-id='{whale}']").wait_for(timeout=5_000)
        assert await page.inner_text("#stat-alerts") == "5 alerts"
        assert await page.inner_text("#feed-hidden summary") == "3 rules off"
        assert "reach the live feed only when you sign in" in await page.inner_text("#feed-hidden-detail")

        await page.click(".rule:has([data-rule=futures_top_hunter]) .switch")
        await wait_until(page, "(id) => !document.querySelector(`#alert-feed [data-id='${id}']`)", top_raid)
        assert await page.inner_text("#stat-alerts") == "4 alerts · 1 hidden"
        assert await page.inner_text("#feed-hidden summary") == "4 rules off · 1 alert hidden"
        assert "Top Raid, " in await page.inner_text("#feed-hidden-detail")
        await browser.close()
    assert errors == []


async def test_dashboard_names_every_metric_a_rule_can_record(dashboard: tuple[str, int]) -> None:
    """Every metric name of the rule language (and another symbol's) gets a label and a unit, never its raw key."""
    from playwright.async_api import async_playwright

    url, _ = dashboard
    names = sorted(METRICS)
    emitted = {m.label for r in seed_file_rules() for m in RuleSet.build(seed_file_rules()).read_metrics(r.rule_type)}
    assert emitted <= {*names, "BTCUSDT.c1h"}
    keys = [*names, "BTCUSDT.c1h", "ETHUSDT.v5m"]
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = await browser.new_page()
        await page.goto(url)
        described = await page.evaluate(
            """async (keys) => {
                 const { describeMetadata } = await import('/static/metadata.js');
                 return describeMetadata(Object.fromEntries(keys.map((k, i) => [k, 1 + i])), 'LINKUSDT');
               }""",
            keys,
        )
        await browser.close()
    assert sorted(d["key"] for d in described) == sorted(keys)
    for item in described:
        assert " " in item["label"] and item["label"] != item["key"], item  # a name of words, not the key
        assert "undefined" not in item["label"] + item["text"], item
    labels = {d["key"]: f"{d['label']} {d['text']}" for d in described}
    assert labels["c5m"] == f"5m change +{1 + keys.index('c5m'):.2f}%"
    assert labels["v1d"].startswith("24h volume") and labels["v1d"].endswith(" USDT")
    assert labels["bv1h"].endswith(" LINK") and labels["ETHUSDT.v5m"].startswith("ETH 5m volume")
    assert labels["rsi15m"].startswith("RSI 15m ") and labels["c14d"].startswith("14d change")
    assert labels["cov5m"].endswith("%") and labels["vr1h"].endswith("×")
    order = [d["key"] for d in described]
    assert order.index("c5m") < order.index("c15m") < order.index("c1d") < order.index("v5m") < order.index("rsi15m")
    assert order.index("c1h") + 1 == order.index("BTCUSDT.c1h")


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
            rule_name = await page.locator("#alert-feed .alert-item .rule-name").first.inner_text()
            await page.screenshot(path=str(tmp_path / "dashboard-live.png"))
            await browser.close()
        assert errors == []
        assert rule_name and "_" not in rule_name  # the rule's product name is shown, not its id
        print(f"screenshot: {tmp_path / 'dashboard-live.png'}")
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
