"""Pace outgoing WebSocket messages under Binance's limit of 10 incoming messages per second."""

from __future__ import annotations

import asyncio

from collector.clock import Clock

# Binance counts every message a client sends (SUBSCRIBE, pongs, ...) against 10/s per
# connection; 5/s leaves room for clock skew and bursts at the server.
DEFAULT_MESSAGES_PER_SECOND = 5.0


class MessagePacer:
    """Let at most ``rate`` messages per second through, evenly spaced."""

    def __init__(self, clock: Clock, rate: float = DEFAULT_MESSAGES_PER_SECOND) -> None:
        self._clock = clock
        self._interval = 1.0 / rate
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        """Return when the next message may be sent."""
        async with self._lock:
            now = self._clock.monotonic()
            if now < self._next:
                await self._clock.sleep(self._next - now)
                now = self._clock.monotonic()
            self._next = max(now, self._next) + self._interval
