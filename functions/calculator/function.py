"""The calculator: closed candles in, metrics events out, state and snapshots kept in Redis.

One batch costs a constant number of Redis round trips: one pipeline writes every candle and reads
each symbol's state back (``state.candles``; only what changed since this worker's copy), one saves
the snapshots (``state.metrics_store``). Metrics are computed once per distinct minute of the batch,
vectorised across that minute's symbols. docs/state.md explains the layout and the determinism rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import numpy as np
import redis.asyncio as aioredis
from cloudevents.core.base import BaseCloudEvent

from functions.calculator.compute import (
    IndicatorCache,
    MetricsArrays,
    compute_minute,
    snapshot_values,
    to_payloads,
)
from screener.config import Settings
from screener.events.envelope import InvalidEvent, expect_type, make_event, parse_data
from screener.events.models import MINUTE_MS, Candle, InvalidCandle, metrics_event_id
from screener.names import (
    CONSUMER_CALCULATOR,
    EVENT_SOURCE_CALCULATOR,
    TYPE_CANDLE_CLOSED,
    TYPE_CANDLE_FORMING,
    TYPE_METRICS_COMPUTED,
    TYPE_METRICS_PROVISIONAL,
    ConsumerSpec,
)
from screener.runtime.function import Delivery, TransientError
from screener.tracing import traceparent_for
from state import layout
from state.candles import CandleStore, SymbolState
from state.gaps import first_sightings
from state.metrics_store import MetricsStore, PackedSnapshot
from state.snapshot_codec import pack_rows
from state.warm_start import warm_start

log = logging.getLogger(__name__)

# How soon a batch waiting for minutes in flight is retried.
GAP_RETRY_SECONDS = 0.25
# Symbols whose rings one round trip reads at start (bounded replies: about 14 MB).
PRELOAD_CHUNK = 100
# How long a batch with recent holes waits for another batch of this process to bring them.
INTAKE_WAIT_SECONDS = 0.1


class Calculator:
    """Compute metrics.md's metrics for every candle event; a ``screener.runtime.function.Function``."""

    consumer: ConsumerSpec = CONSUMER_CALCULATOR

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        postgres: asyncpg.Pool | None = None,
        postgres_dsn: str | None = None,
        owns_connections: bool = False,
        gap_grace_seconds: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Keep state in ``redis``; rebuild missing state from PostgreSQL when one is given.

        PostgreSQL is ``postgres``, or a pool opened on ``postgres_dsn`` at start (warm start).
        ``clock`` is wall-clock seconds (shared by workers through Redis, so not monotonic).
        """
        self._redis = redis
        self._gap_grace_seconds = gap_grace_seconds
        self._clock = clock
        self._postgres = postgres
        self._postgres_dsn = postgres_dsn
        self._owns = owns_connections
        self.candles = CandleStore(redis, mirror=True)
        self.metrics = MetricsStore(redis)
        self.rejected = 0
        self.indicator_cache = IndicatorCache()
        # (symbol, minute) -> set once a batch of this process has written that candle.
        self._unwritten: dict[tuple[str, int], asyncio.Event] = {}
        # Set (and replaced) whenever a batch registers the candles it is about to write.
        self._intake = asyncio.Event()

    @classmethod
    def from_settings(cls, settings: Settings) -> Calculator:
        """Return a calculator on the servers of ``settings`` (PostgreSQL optional: no warm start)."""
        from screener.connections import connect_redis

        return cls(
            connect_redis(settings),
            postgres_dsn=settings.postgres_dsn,
            owns_connections=True,
            gap_grace_seconds=settings.calculator_gap_grace_seconds,
        )

    async def start(self) -> None:
        """Check Redis; rebuild from PostgreSQL the state of recent symbols that Redis lacks.

        Then read the rings of every symbol with metrics into this worker's mirror, so the first
        minute after a (re)start ships only candles, like every other (about 140 KB per symbol).
        """
        await self._redis.ping()
        if self._postgres is None and self._postgres_dsn:
            self._postgres = await asyncpg.create_pool(self._postgres_dsn, min_size=1, max_size=2)
        if self._postgres is not None:
            async with self._postgres.acquire() as conn:
                await warm_start(self._redis, conn)
        tracked = await self.metrics.tracked_symbols()
        for start in range(0, len(tracked), PRELOAD_CHUNK):
            # Rings this read had to create (lost from Redis) are rebuilt, as in a batch.
            await self._heal(await self.candles.write([], also=tracked[start : start + PRELOAD_CHUNK]))
        if tracked:
            log.info("calculator: %d symbols' rings loaded", len(tracked))

    async def close(self) -> None:
        """Close the connections this calculator opened."""
        if self._owns:
            await self._redis.aclose()
            if self._postgres is not None:
                await self._postgres.close()

    def parse(self, event: BaseCloudEvent) -> Candle:
        """Return the candle of a closed or forming candle event; raise ``InvalidEvent`` if it breaks the rules."""
        event_type = expect_type(event, TYPE_CANDLE_CLOSED, TYPE_CANDLE_FORMING)
        candle = parse_data(event, Candle)
        closed = event_type == TYPE_CANDLE_CLOSED
        if candle.closed != closed:
            candle = candle.model_copy(update={"closed": closed})
        try:
            return candle.validate_market_rules()
        except InvalidCandle as exc:
            self.rejected += 1
            raise InvalidEvent(exc.reason, event.get_id()) from None

    async def handle(self, batch: Sequence[Delivery[Candle]]) -> Sequence[BaseCloudEvent]:
        """Store the closed candles, compute each (symbol, minute)'s metrics, save and return them."""
        closed = sorted((d.payload for d in batch if d.payload.closed), key=lambda c: c.open_time)
        forming = [d.payload for d in batch if not d.payload.closed]
        output = _Output()
        segments = _segments(closed)
        written = [asyncio.Event() for _ in segments]
        pending = {
            (c.symbol, c.open_time): done for segment, done in zip(segments, written, strict=True) for c in segment
        }
        self._unwritten.update(pending)
        self._intake.set()  # wake batches waiting for minutes this one brings (_wait_for_predecessors)
        self._intake = asyncio.Event()
        try:
            for segment, done in zip(segments, written, strict=True):
                states = await self._heal(await self.candles.write(segment))
                done.set()
                states = await self._wait_for_predecessors(segment, states)
                self._compute_closed(segment, states, output)
        finally:
            for key, done in pending.items():
                if self._unwritten.get(key) is done:
                    del self._unwritten[key]
        if forming:
            await self._compute_forming(forming, output)
        await self.metrics.save_packed(output.packed)
        return self._events(output.payloads, batch)

    async def _heal(self, states: dict[str, SymbolState]) -> dict[str, SymbolState]:
        """Rebuild from PostgreSQL the symbols whose rings this batch had to create (Redis was flushed)."""
        created = sorted(s for s, state in states.items() if state.created)
        if not created or self._postgres is None:
            return states
        async with self._postgres.acquire() as conn:
            await warm_start(self._redis, conn, created, force=True)
        self.candles.forget()
        return {**states, **(await self.candles.read(created))}

    async def _wait_for_predecessors(
        self, candles: Sequence[Candle], states: dict[str, SymbolState]
    ) -> dict[str, SymbolState]:
        """Return the states once no minute of the candles' day windows may still be on its way.

        With several batches in flight (two workers, one worker's concurrent fetches, messages a
        client fetched and holds, redeliveries) minute t of a symbol can be computed while an earlier
        minute is still on its way; its metrics would then differ from a single worker's. Any hole in
        the day before t, after the oldest minute stored, is such a suspect. A hole that a batch of
        this process is about to write is awaited here (and a new hole gets ``INTAKE_WAIT_SECONDS``
        for such a batch to show up); for the others the batch is retried (``TransientError``) until
        they fill or every one has been open for ``gap_grace_seconds`` (first sighting by any
        worker, kept in Redis), and then they are taken as gaps.
        """
        holes = _holes(candles, states)
        awaited: set[asyncio.Event] = set()
        looked_for_intake = False
        while holes:
            ours = {self._unwritten[key] for key in _keys(holes) if key in self._unwritten}
            if ours - awaited:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._gap_grace_seconds):
                        for written in ours - awaited:
                            await written.wait()
                awaited |= ours
                states = {**states, **(await self.candles.read(sorted(holes)))}
                holes = _holes(candles, states)
                continue
            now = self._clock()
            if now - await first_sightings(self._redis, holes, now) >= self._gap_grace_seconds:
                break  # open for long enough: gaps
            if not looked_for_intake:
                # Another loop of this process may have fetched those minutes a moment ago and be
                # about to register them (two fetches of one burst): a short wait saves a redelivery.
                looked_for_intake = True
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(INTAKE_WAIT_SECONDS):
                        await self._intake.wait()
                continue
            count = sum(len(m) for m in holes.values())
            raise TransientError(f"{count} minutes before this batch may still be in flight", GAP_RETRY_SECONDS)
        return states

    def _compute_closed(self, closed: Sequence[Candle], states: dict[str, SymbolState], output: _Output) -> None:
        by_minute: dict[int, set[str]] = defaultdict(set)
        for candle in closed:
            by_minute[candle.open_time].add(candle.symbol)
        for minute in sorted(by_minute):
            group = [states[s] for s in sorted(by_minute[minute])]
            arrays = compute_minute(minute, group, cache=self.indicator_cache)
            computed = arrays.symbols if arrays is not None else []
            if len(computed) < len(group):
                # The symbol's ring had already moved more than a margin past this minute.
                missing = sorted(by_minute[minute] - set(computed))
                log.warning("calculator: minute %d is older than the rings of %s; no metrics", minute, missing)
            if arrays is not None:
                output.add(arrays, provisional=False)

    async def _compute_forming(self, forming: Sequence[Candle], output: _Output) -> None:
        latest: dict[str, Candle] = {}
        for candle in forming:
            held = latest.get(candle.symbol)
            if held is None or candle.open_time >= held.open_time:
                latest[candle.symbol] = candle
        # Read through the mirror: a forming candle comes every second or so per symbol.
        states = await self._heal(await self.candles.write([], also=sorted(latest)))
        by_minute: dict[int, dict[str, Candle]] = defaultdict(dict)
        for symbol, candle in latest.items():
            state = states.get(symbol)
            newest = state.latest_minute() if state is not None else None
            # A forming minute that is already closed (or older) would only show stale numbers.
            if state is not None and (newest is None or candle.open_time > newest):
                by_minute[candle.open_time][symbol] = candle
        for minute, candles in sorted(by_minute.items()):
            group = [states[s] for s in sorted(candles)]
            arrays = compute_minute(minute, group, forming=candles, cache=self.indicator_cache)
            if arrays is not None:
                output.add(arrays, provisional=True)

    def _events(self, payloads: Sequence[dict[str, Any]], batch: Sequence[Delivery[Candle]]) -> list[BaseCloudEvent]:
        trace_by_key = {(d.payload.symbol, d.payload.open_time, d.payload.closed): traceparent_for(d) for d in batch}
        events: list[BaseCloudEvent] = []
        for payload in payloads:
            symbol, minute, provisional = payload["symbol"], payload["minute"], payload["provisional"]
            events.append(
                make_event(
                    event_type=TYPE_METRICS_PROVISIONAL if provisional else TYPE_METRICS_COMPUTED,
                    source=EVENT_SOURCE_CALCULATOR,
                    event_id=metrics_event_id(symbol, minute, provisional),
                    subject=symbol,
                    data=payload,
                    time=datetime.fromtimestamp((minute + MINUTE_MS) / 1000, tz=UTC),
                    traceparent=trace_by_key.get((symbol, minute, not provisional)),
                )
            )
        return events


class _Output:
    """What a batch emits: event payloads, and the same snapshots packed for Redis."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []
        self.packed: list[PackedSnapshot] = []

    def add(self, arrays: MetricsArrays, provisional: bool) -> None:
        """Add one minute's metrics of many symbols."""
        self.payloads += to_payloads(arrays, provisional=provisional)
        rows = pack_rows(arrays.minute, snapshot_values(arrays))
        self.packed += [
            PackedSnapshot(symbol, arrays.minute, provisional, row)
            for symbol, row in zip(arrays.symbols, rows, strict=True)
        ]


def _keys(holes: dict[str, set[int]]) -> list[tuple[str, int]]:
    return [(symbol, minute) for symbol, minutes in holes.items() for minute in minutes]


def _holes(candles: Sequence[Candle], states: dict[str, SymbolState]) -> dict[str, set[int]]:
    """Return, per symbol, the minutes missing from the day before each candle, after the oldest stored."""
    by_minute: dict[int, list[str]] = defaultdict(list)
    for candle in candles:
        by_minute[candle.open_time].append(candle.symbol)
    span = layout.LONGEST_WINDOW_MINUTES - 1
    holes: dict[str, set[int]] = defaultdict(set)
    for minute, symbols in by_minute.items():
        minutes = minute - np.arange(span, 0, -1, dtype=np.int64) * MINUTE_MS
        # The minutes t - 1439 .. t - 1 are ring slots in a row (modulo the capacity): two slices.
        first = int(minutes[0] // MINUTE_MS) % layout.CAPACITY
        held = np.concatenate([states[s].candles[:, layout.OPEN_TIME] for s in symbols]).reshape(len(symbols), -1)
        held = np.concatenate((held[:, first:], held[:, :first]), axis=1)[:, :span]
        present = held == minutes.astype(np.float64)
        oldest = np.argmax(present, axis=1)
        count = np.count_nonzero(present, axis=1)
        # A row has a hole when fewer minutes are stored than lie between its oldest one and t.
        for row in np.flatnonzero((count > 0) & (count < span - oldest)).tolist():
            missing = ~present[row, oldest[row] :]
            holes[symbols[row]].update(minutes[oldest[row] :][missing].tolist())
    return holes


def _segments(candles: Sequence[Candle]) -> list[list[Candle]]:
    """Split time-sorted candles into runs spanning at most MARGIN_MINUTES.

    Each run is written and computed before the next is written, so no minute is computed from rings
    that later minutes of the same batch have pushed more than the margin ahead (determinism).
    """
    runs: list[list[Candle]] = []
    for candle in candles:
        if runs and candle.open_time - runs[-1][0].open_time < layout.MARGIN_MINUTES * MINUTE_MS:
            runs[-1].append(candle)
        else:
            runs.append([candle])
    return runs


def create(settings: Settings) -> Calculator:
    """Return a calculator on the Redis (and, when set, the PostgreSQL) of ``settings``."""
    return Calculator.from_settings(settings)
