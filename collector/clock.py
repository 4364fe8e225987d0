"""The collector's clock, injected so tests can replay simulated market time."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from screener.events.models import MINUTE_MS


class Clock(Protocol):
    """Two timestamps: wall time (epoch ms, the exchange's time axis) and a monotonic clock for deadlines."""

    def now_ms(self) -> int:
        """Return the current wall time in epoch milliseconds (UTC)."""
        ...

    def monotonic(self) -> float:
        """Return seconds of a monotonic clock, for timeouts and throttles."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of the monotonic clock."""
        ...


class SystemClock:
    """The real clock."""

    def now_ms(self) -> int:
        """Return the current wall time in epoch milliseconds."""
        return time.time_ns() // 1_000_000

    def monotonic(self) -> float:
        """Return ``time.monotonic()``."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """Sleep for ``seconds``."""
        await asyncio.sleep(max(0.0, seconds))


class SimulatedClock(SystemClock):
    """Wall time that moves only when told to (tests replay market time); deadlines stay real."""

    def __init__(self, now_ms: int) -> None:
        self._now_ms = now_ms

    def now_ms(self) -> int:
        """Return the simulated wall time."""
        return self._now_ms

    def set(self, now_ms: int) -> None:
        """Move the simulated wall time to ``now_ms`` (never backwards)."""
        if now_ms < self._now_ms:
            raise ValueError(f"simulated time cannot go back from {self._now_ms} to {now_ms}")
        self._now_ms = now_ms


def last_closed_minute(now_ms: int) -> int:
    """Return the open time of the newest minute that has fully closed at ``now_ms``."""
    return (now_ms // MINUTE_MS) * MINUTE_MS - MINUTE_MS
