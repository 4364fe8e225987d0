"""Replay recorded klines as if the exchange were closing minutes now.

Each timeline minute's candles of every symbol are published together (as Binance's minute
boundary closes them all at once), at real time, a speed factor (60: a minute per second), or as
fast as JetStream acknowledges ("max": the publish acknowledgements are the backpressure).

A replay that looks live (``live=True``, its timeline shifted to the present) never emits a minute
before it has closed on the wall clock: it plays at its speed until it reaches now, then in real time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from collector.clock import Clock
from collector.emitter import CandleEmitter
from collector.replay.market import ReplayMarket
from screener.events.models import MINUTE_MS

log = logging.getLogger(__name__)


class ReplaySpeedError(ValueError):
    """``replay_speed`` is neither a positive number, ``realtime`` nor ``max``."""


def parse_speed(value: str) -> float | None:
    """Return the speed factor of ``value`` ("60", "realtime" = 1, "max" = None: no pacing)."""
    text = value.strip().lower()
    if text == "max":
        return None
    if text == "realtime":
        return 1.0
    text = text.removesuffix("x")
    try:
        speed = float(text)
    except ValueError:
        raise ReplaySpeedError(f"replay speed {value!r}: expected a number, 'realtime' or 'max'") from None
    if not speed > 0:
        raise ReplaySpeedError(f"replay speed {value!r}: must be > 0")
    return speed


@dataclass
class ReplayStats:
    """What a replay has emitted so far."""

    minutes: int = 0
    candles: int = 0
    last_minute: int | None = None


class ReplaySource:
    """Emit a ``ReplayMarket`` minute by minute from ``start_ms``."""

    def __init__(
        self,
        market: ReplayMarket,
        emitter: CandleEmitter,
        clock: Clock,
        *,
        speed: float | None,
        loop: bool = True,
        start_ms: int | None = None,
        live: bool = False,
    ) -> None:
        self.market = market
        self.stats = ReplayStats()
        self._emitter = emitter
        self._clock = clock
        self._speed = speed
        self._loop = loop
        self._next = market.start_ms if start_ms is None else start_ms
        self._live = live

    @property
    def next_minute(self) -> int:
        """Return the open time of the next minute to emit."""
        return self._next

    def _finished(self) -> bool:
        return not self._loop and self._next > self.market.last_ms

    async def run(self, max_minutes: int | None = None) -> ReplayStats:
        """Emit minutes until the recording ends (without loop) or ``max_minutes`` were emitted."""
        interval = None if self._speed is None else 60.0 / self._speed
        started = self._clock.monotonic()
        emitted_here = 0
        while not self._finished() and (max_minutes is None or emitted_here < max_minutes):
            if interval is not None:
                lag = self._clock.monotonic() - (started + emitted_here * interval)
                if lag > interval:
                    # The pipeline is slower than the asked speed: go on from here rather than
                    # bursting later to catch up.
                    started += lag
                await self._clock.sleep(started + emitted_here * interval - self._clock.monotonic())
            if self._live:
                # Caught up with the present: wait for the minute to close, as the exchange would.
                until_closed_ms = self._next + MINUTE_MS - self._clock.now_ms()
                if until_closed_ms > 0:
                    await self._clock.sleep(until_closed_ms / 1000)
            await self.emit_next()
            emitted_here += 1
            if self.stats.minutes % 1440 == 0:
                log.info("replay: %d minutes, %d candles, next %d", self.stats.minutes, self.stats.candles, self._next)
        return self.stats

    async def emit_next(self) -> int:
        """Emit the next timeline minute of every symbol; return how many candles were published."""
        minute = self._next
        published = await self._emitter.emit_closed(self.market.candles_at(minute))
        self._next = minute + MINUTE_MS
        self.stats.minutes += 1
        self.stats.candles += published
        self.stats.last_minute = minute
        return published


def resume_minute(market: ReplayMarket, stored_max: int | None, warmed_until: int) -> int:
    """Return where a replay starts: after the newest stored minute, else after the warm-up."""
    if stored_max is None:
        return warmed_until
    return max(stored_max + MINUTE_MS, market.start_ms)
