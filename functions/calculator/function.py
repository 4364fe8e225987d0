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
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import nats.errors
import redis.asyncio as aioredis
import redis.exceptions
from cloudevents.core.base import BaseCloudEvent
from nats.js import JetStreamContext

from functions.calculator.compute import (
    MetricsArrays,
    compute_minute,
    snapshot_values,
    to_payloads,
)
from functions.calculator.positions import CANDLE_SEQUENCE_EXTENSION, candle_minute, last_published
from functions.calculator.restore import restore_snapshots
from screener.config import Settings
from screener.events.envelope import InvalidEvent, expect_type, make_event, parse_data
from screener.events.models import MINUTE_MS, Candle, InvalidCandle, metrics_event_id
from screener.names import (
    CONSUMER_CALCULATOR,
    EVENT_SOURCE_CALCULATOR,
    STREAM_CANDLES,
    SUBJECT_PREFIX_BY_TYPE,
    TYPE_CANDLE_CLOSED,
    TYPE_CANDLE_FORMING,
    TYPE_METRICS_COMPUTED,
    TYPE_METRICS_PROVISIONAL,
    ConsumerSpec,
)
from screener.runtime.function import Delivery, PartialBatch, TransientError
from screener.runtime.sequence import Pending, Position, Sequencer, newest_positions
from screener.tracing import traceparent_for
from state import layout
from state.candles import CandleStore, SymbolState
from state.metrics_store import MetricsStore, PackedSnapshot
from state.snapshot_codec import pack_rows
from state.warm_start import warm_start

log = logging.getLogger(__name__)

# How soon candles waiting for an earlier candle of their symbol (in another process) come back.
WAIT_RETRY_SECONDS = 0.2
# How long a batch waits for another batch of this process that holds earlier candles of its symbols.
IN_PROCESS_WAIT_SECONDS = 5.0
REDIS_RETRY_SECONDS = 1.0
# Symbols whose rings one round trip reads at start (bounded replies: about 14 MB).
PRELOAD_CHUNK = 100
# How often a running calculator checks that Redis still has its snapshots (one EXISTS-like SET NX):
# the gateway's table is back this soon after Redis restarts empty, not at the next minute.
RESTORE_CHECK_SECONDS = 1.0
_REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.BusyLoadingError)


def _sequencer(client: aioredis.Redis, js: JetStreamContext | None) -> Sequencer:
    """Order candles by their stream; recover lost positions from the metrics already published."""

    async def published_positions(symbols: Sequence[str]) -> dict[str, Position]:
        return await last_published(js, symbols) if js is not None else {}

    return Sequencer(
        client,
        "calculator",
        stream=STREAM_CANDLES.name,
        subject_prefix=SUBJECT_PREFIX_BY_TYPE[TYPE_CANDLE_CLOSED],
        js=js,
        minute_of=candle_minute,
        fallback=published_positions,
    )


class Calculator:
    """Compute metrics.md's metrics for every candle event; a ``screener.runtime.function.Function``."""

    consumer: ConsumerSpec = CONSUMER_CALCULATOR
    parses_json_bytes = True  # parse reads data only through parse_data (screener.runtime.function)

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        postgres: asyncpg.Pool | None = None,
        postgres_dsn: str | None = None,
        owns_connections: bool = False,
    ) -> None:
        """Keep state in ``redis``; rebuild missing state from PostgreSQL when one is given.

        PostgreSQL is ``postgres``, or a pool opened on ``postgres_dsn`` at start (warm start).
        """
        self._redis = redis
        self._postgres = postgres
        self._postgres_dsn = postgres_dsn
        self._owns = owns_connections
        self.candles = CandleStore(redis, mirror=True)
        self.metrics = MetricsStore(redis)
        self.rejected = 0
        self.late_for_carry = 0  # minutes older than their symbol's carried state (docs/state.md)
        self.sequencer = _sequencer(redis, None)
        self._js: JetStreamContext | None = None
        self._restore_watch: asyncio.Task[None] | None = None
        # symbol -> the batches of this process holding its candles, in fetch order; each batch's event
        # is set once its outputs are published (or it failed).
        self._holders: dict[str, list[asyncio.Event]] = {}
        # id of a delivery -> the event of the batch that holds it (released by ``published``).
        self._held_by: dict[int, asyncio.Event] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> Calculator:
        """Return a calculator on the servers of ``settings`` (PostgreSQL optional: no warm start)."""
        from screener.connections import connect_redis

        return cls(
            connect_redis(settings),
            postgres_dsn=settings.postgres_dsn,
            owns_connections=True,
        )

    async def start(self) -> None:
        """Check Redis; put back lost snapshots; load the rings of every symbol with metrics into the mirror.

        Snapshots Redis lost are saved again from the metrics events already published
        (``functions.calculator.restore``): here, and while running within ``RESTORE_CHECK_SECONDS``
        of Redis coming back empty, so the gateway's table is not empty until the next minute.
        Loading the rings makes the first minute after a (re)start ship only candles, like every other
        (about 140 KB per symbol). Rings Redis lacks are rebuilt from PostgreSQL up to the symbol's last
        durable minute, never further: the recorder may have stored minutes this calculator has not
        computed yet, and rings pushed past them would change what those minutes read. Symbols with no
        durable minute are rebuilt by their first batch.
        """
        await self._redis.ping()
        if self._postgres is None and self._postgres_dsn:
            self._postgres = await asyncpg.create_pool(self._postgres_dsn, min_size=1, max_size=2)
        if self._js is not None:
            # Unconditionally: a calculator killed while restoring left the mark without the snapshots.
            await self.metrics.claim_restore()
            restored = await self._restore(self._js)
            self._restore_watch = asyncio.create_task(self._watch_restore(self._js, pending=not restored))
        tracked = await self.metrics.tracked_symbols()
        for start in range(0, len(tracked), PRELOAD_CHUNK):
            try:
                await self._write([], also=tracked[start : start + PRELOAD_CHUNK])
            except TransientError as exc:
                log.info("calculator: not preloading yet (%s); the first batch rebuilds them", exc)
        if tracked:
            log.info("calculator: %d symbols' rings loaded", len(tracked))

    async def close(self) -> None:
        """Stop watching Redis; close the connections this calculator opened."""
        if self._restore_watch is not None:
            self._restore_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._restore_watch
            self._restore_watch = None
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

    def bind_jetstream(self, js: JetStreamContext) -> None:
        """Read the streams through ``js``: successors of a symbol's candles, positions lost with Redis."""
        self.sequencer = _sequencer(self._redis, js)
        self._js = js

    async def _restore(self, js: JetStreamContext) -> bool:
        """Save every symbol's last published snapshot again (no event, no position moved); return success."""
        started = time.monotonic()
        try:
            restored = await restore_snapshots(self.metrics, js)
        except (*_REDIS_DOWN, nats.errors.Error) as exc:
            log.info("calculator: snapshots not restored yet (%r); trying again", exc)
            return False
        if restored:
            elapsed = time.monotonic() - started
            log.info(
                "calculator: %d symbols' latest snapshots restored from the METRICS stream in %.3f s", restored, elapsed
            )
        return True

    async def _watch_restore(self, js: JetStreamContext, pending: bool) -> None:
        """Restore the snapshots whenever Redis has lost them (its restore mark gone), until cancelled.

        ``pending``: a restore failed and is due again whatever the mark says.
        """
        while True:
            await asyncio.sleep(RESTORE_CHECK_SECONDS)
            try:
                if await self.metrics.claim_restore() or pending:
                    pending = not await self._restore(js)
            except _REDIS_DOWN as exc:
                log.debug("calculator: Redis unavailable for the restore check: %r", exc)  # claimed once it is back
            except Exception:  # the loop boundary: keep watching, the batches do not depend on it
                log.exception("calculator: the snapshot restore check failed")

    async def handle(self, batch: Sequence[Delivery[Candle]]) -> Sequence[BaseCloudEvent]:
        """Store the closed candles next in each symbol's order, compute and save their metrics; return them.

        A symbol's candles are taken in stream order (``screener.runtime.sequence``): a candle whose
        predecessor is not done yet waits (``PartialBatch``), one already done is skipped, so every
        minute is computed from exactly the minutes before it, whatever the delivery order.
        """
        symbols = {d.payload.symbol for d in batch if d.payload.closed}
        # Before any await: batches of this process queue per symbol in the order they were fetched
        # (the stream's order), so one never overtakes another that holds earlier minutes of its symbols.
        mine = asyncio.Event()
        earlier = {event for symbol in symbols for event in self._holders.get(symbol, ())}
        for symbol in symbols:
            self._holders.setdefault(symbol, []).append(mine)
        for delivery in batch:
            self._held_by[id(delivery)] = mine
        try:
            if earlier:
                try:
                    async with asyncio.timeout(IN_PROCESS_WAIT_SECONDS):
                        await asyncio.gather(*(event.wait() for event in earlier))
                except TimeoutError:
                    for event in earlier:
                        self._release(event)  # its publish failed (NATS away): stop queueing behind it
            # No candle more than the rings' margin past the last durable minute is written: a batch
            # killed before it publishes is computed again from the same rings (state written is not
            # output published), so it must not have pushed them past what its first minute reads.
            taken, waiting = await self.sequencer.take_in_order(
                (
                    Pending(index, d.payload.symbol, d.payload.open_time, d.sequence)
                    for index, d in enumerate(batch)
                    if d.payload.closed
                ),
                horizon_minutes=layout.MARGIN_MINUTES,
            )
            output = _Output()
            for segment in _segments(sorted((batch[i].payload for i in taken), key=lambda c: c.open_time)):
                states = await self._write(segment)
                self._compute_closed(segment, states, output)
            forming = [d.payload for d in batch if not d.payload.closed]
            if forming:
                await self._compute_forming(forming, output)
            await self.metrics.save_packed(output.packed)
        except _REDIS_DOWN as exc:
            self._release(mine)
            raise TransientError(f"calculator: Redis is unavailable: {exc!r}", REDIS_RETRY_SECONDS) from exc
        except BaseException:
            self._release(mine)
            raise
        if not taken:
            self._release(mine)  # nothing of ours for later batches to wait for
        events = self._events(output.payloads, batch)
        if waiting:
            raise PartialBatch(events, waiting, WAIT_RETRY_SECONDS)
        return events

    async def published(self, done: Sequence[Delivery[Any]]) -> None:
        """Record each symbol's newest candle whose metrics are now durable; wake batches waiting on it."""
        newest = newest_positions(
            (d.payload.symbol, d.payload.open_time, d.sequence)
            for d in done
            if isinstance(d.payload, Candle) and d.payload.closed
        )
        try:
            await self.sequencer.advance(newest)
        except _REDIS_DOWN as exc:
            raise TransientError(f"calculator: Redis is unavailable: {exc!r}", REDIS_RETRY_SECONDS) from exc
        finally:
            for event in {self._held_by[id(d)] for d in done if id(d) in self._held_by}:
                self._release(event)

    def _release(self, event: asyncio.Event) -> None:
        """Wake the batches queued behind ``event``'s batch and forget it."""
        event.set()
        for symbol in [s for s, queue in self._holders.items() if event in queue]:
            queue = self._holders[symbol]
            queue.remove(event)
            if not queue:
                del self._holders[symbol]
        for key in [k for k, held in self._held_by.items() if held is event]:
            del self._held_by[key]

    async def _write(self, candles: Sequence[Candle], also: Sequence[str] = ()) -> dict[str, SymbolState]:
        """Write ``candles`` into their symbols' rings; return the state of those symbols and of ``also``'s.

        A symbol whose rings Redis lacks (first start, flush) is rebuilt from PostgreSQL before anything
        of it is written (``_heal``): rings are never created for a batch alone, so a worker killed
        between creating them and rebuilding them cannot leave rings that look whole and are not.
        """
        wanted = {c.symbol for c in candles} | set(also)
        states = await self.candles.write(candles, also=also, create=self._postgres is None)
        missing = sorted(wanted - states.keys())
        if not missing:
            return states
        return {**states, **(await self._heal(missing, [c for c in candles if c.symbol in missing]))}

    async def _heal(self, missing: Sequence[str], candles: Sequence[Candle]) -> dict[str, SymbolState]:
        """Rebuild the rings of the ``missing`` symbols from PostgreSQL, then write their ``candles``.

        The rebuilt rings must hold every minute up to the symbol's position (its metrics were
        published, so the minutes after it are computed from them). If the recorder has not stored
        them yet, the rings are dropped again and the batch retried. Minutes the recorder already
        stored beyond the batch's newest are computed later, from the stream, so they are not loaded.
        """
        assert self._postgres is not None
        positions = await self.sequencer.positions(missing)
        until: dict[str, int] = {}
        first: dict[str, int] = {}
        for candle in candles:
            until[candle.symbol] = max(until.get(candle.symbol, 0), candle.open_time)
            first[candle.symbol] = min(first.get(candle.symbol, candle.open_time), candle.open_time)
        for symbol, position in positions.items():
            if position is not None:
                until[symbol] = max(until.get(symbol, 0), position.minute)
        # A symbol never computed gets the stored bars closed before the bar of its first minute;
        # later bars are built from its minutes. Anchored at the end of its first batch instead,
        # its rings would depend on how the stream fell into batches, which varies with timing.
        bars_as_of = {s: minute for s, minute in first.items() if positions.get(s) is None}
        # A symbol with neither is not loaded: nothing says how far it may go (its first batch will).
        if until:
            async with self._postgres.acquire() as conn:
                await warm_start(self._redis, conn, sorted(until), force=True, until=until, bars_as_of=bars_as_of)
        self.candles.forget()
        # A symbol PostgreSQL has never seen gets new rings with its batch's candles; one with no
        # candles here (a forming minute, a preload) stays absent until its first closed minute.
        healed = await self.candles.write(candles, also=missing, create=bool(candles))
        behind = [
            s
            for s in missing
            if (p := positions.get(s)) is not None and not (s in healed and healed[s].holds(p.minute))
        ]
        if behind:
            await self._redis.delete(*(key for s in behind for key in layout.state_keys(s)))
            self.candles.forget()
            raise TransientError(f"calculator: PostgreSQL does not hold the candles of {behind} yet", 1.0)
        return healed

    def _compute_closed(self, closed: Sequence[Candle], states: dict[str, SymbolState], output: _Output) -> None:
        late = late_for_carried_state(closed, states)
        if late:
            self.late_for_carry += len(late)
            log.warning(
                "calculator: %d minutes (first %s) came after the carried RSI and MACD state took in their bars "
                "(more than %d minutes late): those timeframes differ from TA-Lib's until a warm start rebuilds it",
                len(late),
                late[0],
                layout.MARGIN_MINUTES,
            )
        by_minute: dict[int, set[str]] = defaultdict(set)
        for candle in closed:
            by_minute[candle.open_time].add(candle.symbol)
        for minute in sorted(by_minute):
            group = [states[s] for s in sorted(by_minute[minute])]
            arrays = compute_minute(minute, group)
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
        states = await self._write([], also=sorted(latest))
        by_minute: dict[int, dict[str, Candle]] = defaultdict(dict)
        for symbol, candle in latest.items():
            state = states.get(symbol)
            newest = state.latest_minute() if state is not None else None
            # A forming minute that is already closed (or older) would only show stale numbers.
            if state is not None and (newest is None or candle.open_time > newest):
                by_minute[candle.open_time][symbol] = candle
        for minute, candles in sorted(by_minute.items()):
            group = [states[s] for s in sorted(candles)]
            arrays = compute_minute(minute, group, forming=candles)
            if arrays is not None:
                output.add(arrays, provisional=True)

    def _events(self, payloads: Sequence[dict[str, Any]], batch: Sequence[Delivery[Candle]]) -> list[BaseCloudEvent]:
        trace_by_key = {(d.payload.symbol, d.payload.open_time, d.payload.closed): traceparent_for(d) for d in batch}
        # A closed minute's event names its candle's place in the stream: a position lost with Redis
        # is recovered from the last metrics event (functions.calculator.positions).
        sequence_of = {(d.payload.symbol, d.payload.open_time): d.sequence for d in batch if d.payload.closed}
        events: list[BaseCloudEvent] = []
        for payload in payloads:
            symbol, minute, provisional = payload["symbol"], payload["minute"], payload["provisional"]
            sequence = 0 if provisional else sequence_of.get((symbol, minute), 0)
            events.append(
                make_event(
                    event_type=TYPE_METRICS_PROVISIONAL if provisional else TYPE_METRICS_COMPUTED,
                    source=EVENT_SOURCE_CALCULATOR,
                    event_id=metrics_event_id(symbol, minute, provisional),
                    subject=symbol,
                    data=payload,
                    time=datetime.fromtimestamp((minute + MINUTE_MS) / 1000, tz=UTC),
                    traceparent=trace_by_key.get((symbol, minute, not provisional)),
                    extensions={CANDLE_SEQUENCE_EXTENSION: str(sequence)} if sequence else None,
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
        if arrays.seeded_on_last_bars:
            # Never in order (docs/state.md, "Carried indicators"): a minute far behind its rings.
            log.warning(
                "calculator: minute %d: %d series' RSI and MACD seeded on their last bars, not carried",
                arrays.minute,
                arrays.seeded_on_last_bars,
            )
        self.payloads += to_payloads(arrays, provisional=provisional)
        rows = pack_rows(arrays.minute, snapshot_values(arrays))
        self.packed += [
            PackedSnapshot(symbol, arrays.minute, provisional, row)
            for symbol, row in zip(arrays.symbols, rows, strict=True)
        ]


def late_for_carried_state(candles: Sequence[Candle], states: Mapping[str, SymbolState]) -> list[tuple[str, int]]:
    """Return the (symbol, minute) of ``candles`` whose 1m bar the symbol's carried state had already taken in.

    The state takes in bars a margin behind the newest minute written (docs/state.md, "Carried
    indicators"); a minute older than that, new to the rings, is not in it. The calculator's runs
    and the Sequencer's horizon keep redeliveries within the margin, so only a minute more than the
    margin late is reported.
    """
    late = []
    for candle in candles:
        state = states.get(candle.symbol)
        if state is not None and candle.open_time // MINUTE_MS <= state.carry[layout.carry_offset(0)]:
            late.append((candle.symbol, candle.open_time))
    return late


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
