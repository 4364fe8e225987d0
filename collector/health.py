"""What the collector's health endpoint says (``screener.health``).

Ready once it streams (the live source's first backfill is done, or the replay's warm-up). Alive while
closed candles keep coming: every minute closes a candle for every symbol, so a collector that has
published none for ``collector_stale_seconds`` is stuck (a connection silently dead beyond its own
checks, a publish loop wedged) and the kubelet restarts it. Before it streams it is alive: the first
backfill or warm-up may take minutes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from collector.emitter import EmitterStats


class CollectorHealth:
    """The collector as a ``screener.health.HealthSource``."""

    name = "collector"

    def __init__(self, stats: EmitterStats, stale_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        """Judge liveness from the emitter's ``stats``; ``clock`` is the emitter's (monotonic)."""
        self._stats = stats
        self._stale_seconds = stale_seconds
        self._clock = clock
        self._streaming_since: float | None = None

    def streaming(self) -> None:
        """Record that the collector streams from now on."""
        self._streaming_since = self._clock()

    def alive(self) -> tuple[bool, str]:
        """Return False once no closed candle came for ``stale_seconds`` while streaming."""
        if self._streaming_since is None:
            return True, "starting: backfill or warm-up"
        idle = self._idle_seconds()
        if idle > self._stale_seconds:
            return False, f"no closed candle published for {idle:.0f} s (limit {self._stale_seconds:.0f} s)"
        return True, f"last closed candle {idle:.0f} s ago"

    @property
    def ready(self) -> bool:
        """Return whether the collector streams."""
        return self._streaming_since is not None

    def counters(self) -> dict[str, Any]:
        """Return the emitter's counters and how long ago the last closed candle went out."""
        idle = self._idle_seconds() if self._streaming_since is not None else None
        return {
            "closed": self._stats.closed,
            "forming": self._stats.forming,
            "invalid": self._stats.invalid,
            "seconds_since_last_closed": idle,
        }

    def _idle_seconds(self) -> float:
        assert self._streaming_since is not None
        last = self._stats.last_closed_at
        since = self._streaming_since if last is None else max(last, self._streaming_since)
        return self._clock() - since
