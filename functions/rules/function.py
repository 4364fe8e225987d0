"""The rules function: metrics snapshots in, alerts out (persisted in ``alert_history`` first).

Per batch: evaluate every enabled rule for every snapshot (``RuleEngine``), decide firings
atomically in Redis, insert the alerts into ``alert_history``, and return the alert events for the
adapter to publish. Any failure before the adapter acknowledges the batch leads to a redelivery,
which re-derives the same alert ids, so an alert is stored and published once in effect.

With billing on (``Settings.billing_enabled``), a user's own rules are a paid feature (client.md
decision 7): the rules of an owner without a live plan are not evaluated, so they neither fire nor
fill the owner's history. Plans end by the clock and by Whop's webhooks, which notify no worker, so
the owners' plans are read again every ``PLAN_REFRESH_SECONDS`` and at every reload.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg
import redis.asyncio as aioredis
import redis.exceptions
from cloudevents.core.base import BaseCloudEvent
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg

from functions.rules.budget import OwnerAlertBudget
from functions.rules.changes import RuleChanges
from functions.rules.config import RulesConfig
from functions.rules.engine import CrossSymbols, RuleEngine
from functions.rules.history import AlertHistory
from functions.rules.positions import load_positions, save_positions
from functions.rules.recompute import RingRecompute
from functions.rules.redis_state import RedisFiringState
from functions.rules.reload import RulesWatcher, connect_to
from functions.rules.store import load_config, reload_config
from screener.config import Settings
from screener.connections import connect_redis, create_pg_pool
from screener.db.plans import PLAN_REFRESH_SECONDS, entitled_owners, refresh_periodically
from screener.events import nats_binding
from screener.events.envelope import InvalidEvent, expect_type, make_event, parse_data
from screener.events.models import MINUTE_MS, Alert, MetricsSnapshot
from screener.names import (
    CONSUMER_RULES,
    EVENT_SOURCE_RULES,
    STREAM_METRICS,
    SUBJECT_PREFIX_BY_TYPE,
    TYPE_ALERT_TRIGGERED,
    TYPE_METRICS_COMPUTED,
    TYPE_METRICS_PROVISIONAL,
)
from screener.runtime.function import Delivery, PartialBatch, TransientError
from screener.runtime.sequence import Pending, Position, Sequencer, newest_positions
from screener.tracing import traceparent_for
from state.metrics_store import MetricsStore

log = logging.getLogger(__name__)

# How soon minutes waiting for an earlier minute of their symbol (in another process) come back.
WAIT_RETRY_SECONDS = 0.2

_TRANSIENT = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
)


class SnapshotStore(Protocol):
    """The part of ``state.metrics_store.MetricsStore`` the rules read for cross-symbol values."""

    async def at(self, symbol: str, minute: int) -> MetricsSnapshot | None:
        """Return ``symbol``'s snapshot of ``minute``, if stored."""
        ...

    async def latest_minute(self, symbol: str) -> int | None:
        """Return the newest minute stored for ``symbol``."""
        ...

    async def tracked_symbols(self) -> Collection[str]:
        """Return the symbols the calculator keeps state for."""
        ...


class StoreCrossSymbols:
    """Read other symbols' snapshots of the same minute from the metrics store.

    A tracked symbol whose snapshot of that minute is not there yet is waited for up to
    ``wait_seconds`` (the calculator may be a few milliseconds behind), then the batch is retried
    later (``TransientError``). An untracked symbol reads as null; so does one already past that
    minute without a snapshot, unless ``recompute`` finds the minute's candle in the rings (the
    store's short history evicted it) and computes the snapshot again.
    """

    def __init__(
        self,
        store: SnapshotStore,
        wait_seconds: float = 2.0,
        poll_seconds: float = 0.05,
        recompute: RingRecompute | None = None,
    ) -> None:
        self._store = store
        self._recompute = recompute
        self._wait = wait_seconds
        self._poll = poll_seconds

    async def fetch(self, symbols: Collection[str], minute: int) -> dict[str, MetricsSnapshot | None]:
        """Return each symbol's snapshot of ``minute`` or None; raise ``TransientError`` if one may come."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait
        found: dict[str, MetricsSnapshot | None] = {}
        pending = set(symbols)
        while True:
            for symbol in sorted(pending):
                snapshot = await self._store.at(symbol, minute)
                if snapshot is not None:
                    found[symbol] = snapshot
            pending -= found.keys()
            if not pending:
                return found
            tracked = set(await self._store.tracked_symbols())
            for symbol in sorted(pending):
                latest = await self._store.latest_minute(symbol) if symbol in tracked else None
                if symbol not in tracked:
                    found[symbol] = None
                elif latest is not None and latest >= minute:
                    # Past that minute: a gap (null), or evicted from the store's short history
                    # while the rules lag behind; then the rings still give the exact value.
                    again = await self._recompute.snapshot(symbol, minute) if self._recompute else None
                    found[symbol] = again
            pending -= found.keys()
            if not pending:
                return found
            if loop.time() >= deadline:
                raise TransientError(f"rules: metrics of {sorted(pending)} at minute {minute} not stored yet", 1.0)
            await asyncio.sleep(self._poll)


def alert_event(alert: Alert, traceparent: str | None = None) -> BaseCloudEvent:
    """Return the alert-triggered CloudEvent of ``alert`` (id = alert id, subject = symbol)."""
    return make_event(
        event_type=TYPE_ALERT_TRIGGERED,
        source=EVENT_SOURCE_RULES,
        event_id=alert.id,
        subject=alert.symbol,
        data=alert,
        time=datetime.fromtimestamp((alert.minute + MINUTE_MS) / 1000, tz=UTC),
        traceparent=traceparent,
    )


class RulesFunction:
    """Evaluate the rules on metrics events; persist and emit the alerts."""

    consumer = CONSUMER_RULES
    parses_json_bytes = True  # parse reads data only through parse_data (screener.runtime.function)

    def __init__(
        self,
        settings: Settings,
        *,
        pool: asyncpg.Pool | None = None,
        redis_client: aioredis.Redis | None = None,
        cross: CrossSymbols | None = None,
        watch: bool = True,
        plan_refresh_seconds: float = PLAN_REFRESH_SECONDS,
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._own_pool = pool is None
        self._redis = redis_client
        self._own_redis = redis_client is None
        self._cross = cross
        self._js: JetStreamContext | None = None
        self._sequencer: Sequencer | None = None
        self._watch = watch
        self._watcher: RulesWatcher | None = None
        self._plan_refresh_seconds = plan_refresh_seconds
        self._plans_task: asyncio.Task[None] | None = None
        # A reload and a plan refresh each replace the whole config: one at a time, so neither
        # puts back a config the other has just replaced.
        self._config_lock = asyncio.Lock()
        self._engine: RuleEngine | None = None
        self._firing: RedisFiringState | None = None
        self._budget: OwnerAlertBudget | None = None
        self._history = AlertHistory()
        # Minutes of one symbol must be decided in order (cooldowns, recent()); the adapter may run
        # batches concurrently, so evaluation is serialised here. Persistence is not.
        self._evaluation_lock = asyncio.Lock()
        self.alerts_emitted = 0
        self.alerts_inserted = 0
        self.reloads = 0

    @property
    def alerts_over_budget(self) -> int:
        """Return how many alerts of users' own rules were dropped over ``user_alerts_per_minute``."""
        return self._budget.dropped if self._budget is not None else 0

    @property
    def config(self) -> RulesConfig:
        """Return the rules configuration in force."""
        if self._engine is None:
            raise RuntimeError("RulesFunction used before start()")
        return self._engine.config

    async def start(self) -> None:
        """Connect, load the rules and start following their changes."""
        if self._pool is None:
            self._pool = await create_pg_pool(self._settings)
        if self._redis is None:
            self._redis = connect_redis(self._settings)
        if self._cross is None:
            store = MetricsStore(self._redis)
            self._cross = StoreCrossSymbols(store, recompute=RingRecompute(self._redis))
        self._sequencer = Sequencer(
            self._redis,
            "rules",
            stream=STREAM_METRICS.name,
            subject_prefix=SUBJECT_PREFIX_BY_TYPE[TYPE_METRICS_COMPUTED],
            js=self._js,
            minute_of=_metrics_minute,
            fallback=self._stored_positions,
        )
        self._firing = RedisFiringState(self._redis, self._settings.retention_hours * 3600 * 1000)
        self._budget = OwnerAlertBudget(self._redis, self._settings.user_alerts_per_minute)
        self._engine = RuleEngine(await self._gated(await load_config(self._pool)), self._firing, self._cross)
        await self._firing.ensure_index(self._pool)
        if self._watch and self._settings.postgres_dsn:
            self._watcher = RulesWatcher(connect_to(self._settings.postgres_dsn), self.reload)
            await self._watcher.start()
        if self._settings.billing_enabled:
            self._plans_task = asyncio.create_task(
                refresh_periodically(self.refresh_plans, self._plan_refresh_seconds), name="rules-plans"
            )
        log.info("rules: %d rules loaded, %d enabled", len(self.config.ruleset), len(self.config.enabled()))

    async def reload(self, changes: RuleChanges | None = None) -> None:
        """Read the changed rules and users' switches again (all of them by default); the next batch uses them."""
        if self._engine is None or self._pool is None:
            return
        async with self._config_lock:
            config = await reload_config(self._pool, self._engine.config, changes or RuleChanges.all())
            self._engine.config = await self._gated(config)  # a new rule may have a new owner
        self.reloads += 1
        log.info("rules: reloaded, %d rules enabled", len(self._engine.config.enabled()))

    async def refresh_plans(self) -> None:
        """Read again which rule owners have a live plan (billing on); from the next batch, only their own rules run."""
        if self._engine is None:
            return
        async with self._config_lock:
            self._engine.config = await self._gated(self._engine.config)

    async def _gated(self, config: RulesConfig) -> RulesConfig:
        """Return ``config`` leaving out the rules of owners without a live plan now (billing off: none)."""
        if not self._settings.billing_enabled or self._pool is None:
            return config
        owners = config.owners
        lapsed = owners - await entitled_owners(self._pool, owners, datetime.now(UTC))
        if lapsed != (self._engine.config.lapsed_owners if self._engine else frozenset()):
            log.info("rules: %d rule owners without a live plan, their rules not evaluated", len(lapsed))
        return config.gated(lapsed)

    async def close(self) -> None:
        """Stop the watcher and release the connections this function opened."""
        if self._plans_task is not None:
            self._plans_task.cancel()
            await asyncio.gather(self._plans_task, return_exceptions=True)
            self._plans_task = None
        if self._watcher is not None:
            await self._watcher.close()
            self._watcher = None
        if self._redis is not None and self._own_redis:
            await self._redis.aclose()
            self._redis = None
        if self._pool is not None and self._own_pool:
            await self._pool.close()
            self._pool = None

    def parse(self, event: BaseCloudEvent) -> MetricsSnapshot:
        """Return the metrics snapshot of ``event``; raise ``InvalidEvent`` for anything else."""
        expect_type(event, TYPE_METRICS_COMPUTED, TYPE_METRICS_PROVISIONAL)
        return parse_data(event, MetricsSnapshot)

    def bind_jetstream(self, js: JetStreamContext) -> None:
        """Read the METRICS stream through ``js`` to keep each symbol's minutes in order."""
        self._js = js

    async def _stored_positions(self, symbols: Sequence[str]) -> dict[str, Position]:
        return await load_positions(self._pool, symbols) if self._pool is not None else {}

    async def handle(self, batch: Sequence[Delivery[MetricsSnapshot]]) -> Sequence[BaseCloudEvent]:
        """Evaluate the batch's minutes that are next in each symbol's order; store and return their alerts.

        Each symbol's closed minutes are evaluated in stream order (``screener.runtime.sequence``):
        cooldowns and ``on_change`` depend on the minutes before, so a minute whose predecessor is
        not done yet waits (``PartialBatch``) and one already done is skipped.
        """
        if (
            self._engine is None
            or self._pool is None
            or self._firing is None
            or self._sequencer is None
            or self._budget is None
        ):
            raise RuntimeError("RulesFunction.handle called before start()")
        try:
            await self._firing.ensure_index(self._pool)
            async with self._evaluation_lock:
                # Live rules on a forming minute keep no order; closed minutes go in stream order.
                forming = [index for index, d in enumerate(batch) if d.payload.provisional]
                closed, waiting = await self._sequencer.take_in_order(
                    Pending(index, d.payload.symbol, d.payload.minute, d.sequence)
                    for index, d in enumerate(batch)
                    if not d.payload.provisional
                )
                taken = forming + closed
                evaluation = await self._engine.evaluate([batch[i].payload for i in taken])
            # A user's own rules share a budget per minute: their flood must not slow everyone's alerts.
            alerts = await self._budget.admit(evaluation.alerts)
            if alerts:
                async with self._pool.acquire() as conn:
                    self.alerts_inserted += await self._history.save(conn, alerts)
        except _TRANSIENT as exc:
            raise TransientError(f"rules: a server is unavailable: {exc!r}", delay_seconds=2.0) from exc
        traces = {(d.payload.symbol, d.payload.minute): traceparent_for(d) for d in batch}
        self.alerts_emitted += len(alerts)
        events = [alert_event(a, traces.get((a.symbol, a.minute))) for a in alerts]
        if waiting:
            raise PartialBatch(events, waiting, WAIT_RETRY_SECONDS)
        return events

    async def published(self, done: Sequence[Delivery[Any]]) -> None:
        """Record each symbol's newest closed minute whose alerts are now durable (Redis and PostgreSQL)."""
        if self._sequencer is None or self._pool is None:
            return
        newest = newest_positions(
            (d.payload.symbol, d.payload.minute, d.sequence)
            for d in done
            if isinstance(d.payload, MetricsSnapshot) and not d.payload.provisional
        )
        try:
            await save_positions(self._pool, newest)
            await self._sequencer.advance(newest)
        except _TRANSIENT as exc:
            raise TransientError(f"rules: a server is unavailable: {exc!r}", delay_seconds=2.0) from exc


def _metrics_minute(message: RawStreamMsg) -> int | None:
    """Return the minute of a stored closed-metrics message, or None if the rules reject it."""
    try:
        event = nats_binding.from_message(message.headers, message.data or b"")
        expect_type(event, TYPE_METRICS_COMPUTED)
        return parse_data(event, MetricsSnapshot).minute
    except InvalidEvent:
        return None


def create(settings: Settings) -> RulesFunction:
    """Return the rules function for ``screener run rules``."""
    return RulesFunction(settings)
