"""A token bucket per destination, so one user's burst of alerts cannot flood their endpoint."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """Allow ``rate_per_minute`` sends a minute on average, in bursts of up to ``burst``.

    ``reserve`` never blocks: it takes a token now or books the next free one and returns how long
    the caller must wait for it, so the caller decides whether the wait is worth it.
    """

    def __init__(self, rate_per_minute: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic):
        if rate_per_minute <= 0:
            raise ValueError(f"rate_per_minute must be > 0, got {rate_per_minute}")
        self._rate = rate_per_minute / 60.0
        self._capacity = float(burst if burst is not None else rate_per_minute)
        self._clock = clock
        self._tokens = self._capacity
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now

    def wait_time(self) -> float:
        """Return the seconds until a token is free (0 when one is free now); take nothing."""
        self._refill()
        return max(0.0, (1.0 - self._tokens) / self._rate)

    def reserve(self) -> float:
        """Take a token and return the seconds to wait before using it (0 when one was free)."""
        wait = self.wait_time()
        self._tokens -= 1.0
        return wait
