"""REST pacing: used weight stays under the limit, 429 backs off, 418 stops every request until Retry-After."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from collector.binance.backfill import seed_bars
from collector.binance.rest import BinanceRest, BinanceRestError, WeightGovernor, klines_weight
from collector.binance.symbols import fetch_symbols
from collector.clock import SimulatedClock
from collector.replay.market import ReplayMarket
from screener.events.models import MINUTE_MS
from tests.collector.conftest import FakeFactory, market_clock
from tests.fakes.binance_server import FakeBinance


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def started(
    market_50: ReplayMarket, fake_binance: FakeFactory, **options: object
) -> tuple[FakeBinance, SimulatedClock]:
    clock = market_clock(market_50)
    return await fake_binance(market_50, clock, **options), clock


def test_klines_weight_follows_binance_bands() -> None:
    assert [klines_weight(n) for n in (1, 99, 100, 499, 500, 1000, 1001, 1500)] == [1, 1, 2, 2, 5, 5, 10, 10]


async def test_requests_are_paced_under_the_weight_limit(
    market_50: ReplayMarket, fake_binance: FakeFactory, session: aiohttp.ClientSession
) -> None:
    server, clock = await started(market_50, fake_binance, weight_limit=40, weight_window_seconds=1.0)
    rest = BinanceRest(session, server.rest_url, clock, weight_limit=40, window_seconds=1.0)
    symbol = market_50.symbols[0]
    started_at = time.monotonic()
    results = await asyncio.gather(*(rest.klines(symbol, "1m", limit=500) for _ in range(16)))  # 16 x 5 = 80
    assert all(len(rows) == 500 for rows in results)
    assert time.monotonic() - started_at >= 1.0  # had to wait for a new window
    assert [c.status for c in server.rest_calls] == [200] * 16
    assert server.violations == []
    assert rest.stats.max_used_weight <= 40


async def test_429_backs_off_for_retry_after_and_then_succeeds(
    market_50: ReplayMarket, fake_binance: FakeFactory, session: aiohttp.ClientSession
) -> None:
    server, clock = await started(market_50, fake_binance)
    rest = BinanceRest(session, server.rest_url, clock)
    server.throttle(1, retry_after=1)
    started_at = time.monotonic()
    info = await rest.exchange_info()
    assert time.monotonic() - started_at >= 1.0
    assert len(info["symbols"]) == 53
    assert rest.stats.throttled == 1
    assert [c.status for c in server.rest_calls] == [429, 200]


async def test_418_stops_every_request_until_retry_after(
    market_50: ReplayMarket, fake_binance: FakeFactory, session: aiohttp.ClientSession
) -> None:
    server, clock = await started(market_50, fake_binance)
    rest = BinanceRest(session, server.rest_url, clock)
    server.ban(1.2)
    started_at = time.monotonic()
    results = await asyncio.gather(*(rest.klines(s, "1m", limit=5) for s in market_50.symbols[:5]))
    assert time.monotonic() - started_at >= 1.0
    assert all(len(rows) == 5 for rows in results)
    statuses = [c.status for c in server.rest_calls]
    # Only the requests already in flight met the ban; nothing new was sent until Retry-After passed.
    banned = statuses.count(418)
    assert 1 <= banned <= 5 and rest.stats.banned == banned
    assert statuses == [418] * banned + [200] * 5


async def test_a_client_error_is_raised_with_the_path(
    market_50: ReplayMarket, fake_binance: FakeFactory, session: aiohttp.ClientSession
) -> None:
    server, clock = await started(market_50, fake_binance)
    rest = BinanceRest(session, server.rest_url, clock)
    with pytest.raises(BinanceRestError, match=r"/fapi/v1/klines .*HTTP 400"):
        await rest.klines("NOPEUSDT", "1m")


async def test_klines_rows_end_with_the_forming_minute_and_bars_are_seeded_closed(
    market_50: ReplayMarket, fake_binance: FakeFactory, session: aiohttp.ClientSession
) -> None:
    server, clock = await started(market_50, fake_binance)
    rest = BinanceRest(session, server.rest_url, clock)
    symbol = market_50.symbols[0]
    rows = await rest.klines(symbol, "1m", limit=3)
    forming = clock.now_ms() // MINUTE_MS * MINUTE_MS
    assert [r[0] for r in rows] == [forming - 2 * MINUTE_MS, forming - MINUTE_MS, forming]
    bars = await seed_bars(rest, [symbol], clock.now_ms())
    intervals = {b.interval for b in bars}
    assert intervals == {"5m", "15m", "1h", "4h", "8h", "1d"}
    assert all(b.open_time + {"5m": 5, "15m": 15, "1h": 60, "4h": 240, "8h": 480, "1d": 1440}[b.interval]
               * MINUTE_MS <= clock.now_ms() for b in bars)  # fmt: skip
    assert sum(1 for b in bars if b.interval == "1h") == 48  # two days of recording before the clock
    assert len([c for c in server.rest_calls if c.path == "/fapi/v1/klines"]) == 1 + 6


async def test_fetch_symbols_asks_exchange_info_and_the_tickers_for_a_top_n(
    market_50: ReplayMarket, fake_binance: FakeFactory, session: aiohttp.ClientSession
) -> None:
    server, clock = await started(market_50, fake_binance)
    rest = BinanceRest(session, server.rest_url, clock)
    assert await fetch_symbols(rest) == sorted(market_50.symbols)
    top = await fetch_symbols(rest, top_n=5)
    assert len(top) == 5
    assert [c.path for c in server.rest_calls][-2:] == ["/fapi/v1/exchangeInfo", "/fapi/v1/ticker/24hr"]
    assert sum(c.weight for c in server.rest_calls if c.path == "/fapi/v1/ticker/24hr") == 40


class StepClock(SimulatedClock):
    """Monotonic and wall time that move only when the governor sleeps."""

    def __init__(self) -> None:
        super().__init__(0)
        self.t = 1000.0

    def monotonic(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)


async def test_background_requests_leave_half_the_budget_to_gap_fills() -> None:
    clock = StepClock()
    governor = WeightGovernor(clock, limit=40, window_seconds=60.0, wall=lambda: clock.t)
    for _ in range(3):  # background may use 18 of the 36 budgeted: three requests of weight 5
        await governor.acquire(5, background=True)
    assert clock.t == 1000.0
    await governor.acquire(5)  # a gap fill still goes at once
    await governor.acquire(5)
    assert clock.t == 1000.0
    for _ in range(5):
        governor.observe(5, None)  # the five answers arrive
    await governor.acquire(5, background=True)  # the fourth background request waits for the next window
    assert clock.t > 1000.0 and int(clock.t // 60) == int(1000.0 // 60) + 1
