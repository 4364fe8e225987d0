"""Binance USD-M REST, paced under the request-weight limit (events.md).

The server counts request weight per wall-clock minute and per IP and reports it in
``X-MBX-USED-WEIGHT-1M``. This client keeps its own estimate (what it sent in the window, raised by
what the server reports) and waits for the next window before a request would cross 90% of the limit. A 429 means
"slow down": the client waits ``Retry-After`` (or an exponential back-off) and retries. A 418 means
the IP is banned: every request of the client stops until ``Retry-After`` has passed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from collector.clock import Clock

log = logging.getLogger(__name__)

WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
WEIGHT_LIMIT = 2400
EXCHANGE_INFO_WEIGHT = 1
TICKER_ALL_WEIGHT = 40
KLINES_MAX_LIMIT = 1500


class BinanceRestError(Exception):
    """A REST request failed for good; the message names the path and the status."""


def klines_weight(limit: int) -> int:
    """Return the request weight of ``GET /fapi/v1/klines`` with ``limit`` (Binance's bands)."""
    if limit < 100:
        return 1
    if limit < 500:
        return 2
    if limit <= 1000:
        return 5
    return 10


@dataclass
class RestStats:
    """What the client has done, for logs and tests."""

    requests: int = 0
    weight_sent: int = 0
    throttled: int = 0  # 429 answers
    banned: int = 0  # 418 answers
    paced_seconds: float = 0.0
    max_used_weight: int = 0


class WeightGovernor:
    """Keep the used request weight of the current window under a budget.

    Binance's window is the wall-clock minute, so windows here are aligned to ``wall()`` too. The
    server's count (``X-MBX-USED-WEIGHT-1M``) only ever raises the estimate: answers arrive out of
    order, and an older answer must not make room that requests already in flight have taken.
    """

    def __init__(
        self,
        clock: Clock,
        limit: int = WEIGHT_LIMIT,
        window_seconds: float = 60.0,
        budget: float = 0.9,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._wall = wall
        self._budget = int(limit * budget)
        self._window = window_seconds
        self._window_id = -1
        self._used = 0
        self._in_flight = 0
        self._blocked_until = 0.0
        self.stats = RestStats()

    def window(self) -> int:
        """Return the id of the current weight window."""
        return int(self._wall() // self._window)

    async def acquire(self, weight: int, *, background: bool = False) -> None:
        """Wait until ``weight`` more fits under the budget and no ban or back-off runs.

        A ``background`` request (bar seeding) may use only half of the budget, so that filling gaps
        of the live minutes never waits behind it for a new window.
        """
        budget = self._budget // 2 if background else self._budget
        while True:
            # No await between the check and the update: the event loop makes this atomic.
            now = self._clock.monotonic()
            if now < self._blocked_until:
                await self._pause(self._blocked_until - now)
                continue
            window = self.window()
            if window != self._window_id:
                # Requests still in flight may be counted in the new window by the server.
                self._window_id, self._used = window, self._in_flight
            if self._used + weight <= budget or (self._used == 0 and not background):
                self._used += weight
                self._in_flight += weight
                self.stats.weight_sent += weight
                return
            # A little past the boundary, so both clocks agree the new window has begun.
            await self._pause((window + 1) * self._window - self._wall() + 0.05)

    async def _pause(self, seconds: float) -> None:
        self.stats.paced_seconds += seconds
        await self._clock.sleep(seconds)

    def observe(self, weight: int, used: int | None) -> None:
        """Settle a request of ``weight`` with the server's count (``X-MBX-USED-WEIGHT-1M``), if any.

        The count is taken for the window current on arrival: when the answer straddles a boundary
        that over-estimates, which only delays the next request.
        """
        self._in_flight -= weight
        window = self.window()
        if window != self._window_id:
            self._window_id, self._used = window, self._in_flight
        if used is not None:
            self.stats.max_used_weight = max(self.stats.max_used_weight, used)
            self._used = max(self._used, used)

    def block(self, seconds: float) -> None:
        """Stop every request for ``seconds`` (429 back-off, 418 ban)."""
        self._blocked_until = max(self._blocked_until, self._clock.monotonic() + seconds)


class BinanceRest:
    """The few public endpoints the collector needs."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        clock: Clock,
        *,
        weight_limit: int = WEIGHT_LIMIT,
        window_seconds: float = 60.0,
        max_attempts: int = 8,
        timeout_seconds: float = 10.0,
    ) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._clock = clock
        self._max_attempts = max_attempts
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self.governor = WeightGovernor(clock, weight_limit, window_seconds)

    @property
    def stats(self) -> RestStats:
        """Return the request counters."""
        return self.governor.stats

    async def get(self, path: str, params: dict[str, Any] | None, weight: int, *, background: bool = False) -> Any:
        """GET ``path`` with pacing and retries; return the decoded JSON."""
        url = f"{self._base}{path}"
        for attempt in range(1, self._max_attempts + 1):
            await self.governor.acquire(weight, background=background)
            self.stats.requests += 1
            settled = False
            try:
                async with self._session.get(url, params=params, timeout=self._timeout) as response:
                    used = response.headers.get(WEIGHT_HEADER, "")
                    self.governor.observe(weight, int(used) if used.isdigit() else None)
                    settled = True
                    if response.status == 200:
                        return await response.json(content_type=None)
                    retry_after = _retry_after(response.headers.get("Retry-After"))
                    body = (await response.text())[:200]
            except (aiohttp.ClientError, TimeoutError) as exc:
                if not settled:
                    self.governor.observe(weight, None)
                delay = min(30.0, 0.5 * 2**attempt)
                log.warning("GET %s failed (%s); retry %d in %.1fs", path, exc, attempt, delay)
                await self._clock.sleep(delay)
                continue
            if response.status == 418:
                self.stats.banned += 1
                delay = retry_after if retry_after is not None else 120.0
                log.error("GET %s: 418, IP banned; every request stops for %.0fs (Retry-After)", path, delay)
                self.governor.block(delay)
            elif response.status == 429:
                self.stats.throttled += 1
                delay = retry_after if retry_after is not None else min(60.0, 2.0**attempt)
                log.warning("GET %s: 429, request weight exceeded; backing off %.1fs", path, delay)
                self.governor.block(delay)
            elif response.status >= 500:
                await self._clock.sleep(min(30.0, 0.5 * 2**attempt))
            else:
                raise BinanceRestError(f"GET {path} {params}: HTTP {response.status}: {body}")
        raise BinanceRestError(f"GET {path} {params}: gave up after {self._max_attempts} attempts")

    async def exchange_info(self) -> dict[str, Any]:
        """Return ``GET /fapi/v1/exchangeInfo``."""
        result: dict[str, Any] = await self.get("/fapi/v1/exchangeInfo", None, EXCHANGE_INFO_WEIGHT)
        return result

    async def tickers_24h(self) -> list[dict[str, Any]]:
        """Return ``GET /fapi/v1/ticker/24hr`` for every symbol."""
        result: list[dict[str, Any]] = await self.get("/fapi/v1/ticker/24hr", None, TICKER_ALL_WEIGHT)
        return result

    async def klines(
        self,
        symbol: str,
        interval: str,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 500,
        background: bool = False,
    ) -> list[list[Any]]:
        """Return rows of ``GET /fapi/v1/klines`` (the last one may be the forming kline)."""
        limit = max(1, min(limit, KLINES_MAX_LIMIT))
        params: dict[str, Any] = {"symbol": symbol, "interval": interval, "limit": limit}
        if start_ms is not None:
            params["startTime"] = start_ms
        if end_ms is not None:
            params["endTime"] = end_ms
        result: list[list[Any]] = await self.get("/fapi/v1/klines", params, klines_weight(limit), background=background)
        return result


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
