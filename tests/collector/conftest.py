"""Fixtures of the collector tests: recorded markets and the local Binance server."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from collector.clock import SimulatedClock
from collector.replay.market import ReplayMarket
from marketdata.klines import KlineSeries, read_folder
from screener.events.models import MINUTE_MS
from tests.fakes.binance_server import FakeBinance


@pytest.fixture(scope="session")
def series_2026(klines_dir: Path) -> dict[str, KlineSeries]:
    """Return the 12-column 2026-02 recording (7 symbols)."""
    return read_folder(klines_dir / "binance-um-2026-02")


@pytest.fixture(scope="session")
def market_50(series_2026: dict[str, KlineSeries]) -> ReplayMarket:
    """Return 50 virtual symbols built from the 2026-02 recording."""
    return ReplayMarket(series_2026, virtual_symbols=50)


def market_clock(market: ReplayMarket, days_in: int = 2) -> SimulatedClock:
    """Return a simulated clock a little after a minute boundary, ``days_in`` days into the recording."""
    return SimulatedClock(market.start_ms + days_in * 1440 * MINUTE_MS + 50)


FakeFactory = Callable[..., Coroutine[Any, Any, FakeBinance]]


async def until(condition: Callable[[], bool | Awaitable[bool]], seconds: float = 20.0) -> None:
    """Wait until ``condition()`` holds (checked every 20 ms) or fail after ``seconds``."""
    async with asyncio.timeout(seconds):
        while True:
            result = condition()
            if await result if inspect.isawaitable(result) else result:
                return
            await asyncio.sleep(0.02)


@pytest.fixture
async def fake_binance() -> AsyncIterator[FakeFactory]:
    """Yield a factory of started ``FakeBinance`` servers; they are stopped after the test."""
    servers: list[FakeBinance] = []

    async def factory(market: ReplayMarket, clock: SimulatedClock, **kwargs: Any) -> FakeBinance:
        server = FakeBinance(market, clock, **kwargs)
        await server.start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        await server.stop()
