"""The notifier function: route each alert to its users' webhooks and deliver it in the background.

``handle`` never waits for an HTTP endpoint. For a batch of alerts it finds the recipients
(``store.find_recipients``), writes a ``pending`` row per (webhook, alert) and queues a job on the
webhook's lane (``dispatcher``); then it returns, and the worker acknowledges the batch. The
pending rows are the durable record: a delivery that a crash interrupts stays ``pending`` with a
lease that runs out, and a running notifier re-drives it (``redrive``, at start and every
``redrive_every_seconds``), reading the alert back from ``alert_history``. A clean ``close`` hands
its unfinished rows back at once.

Per job, on its lane: an alert that waited more than ``max_queue_seconds`` behind a slow endpoint
is ``skipped`` as stale; so is one for a paused webhook, and one whose rate limit (a token bucket
per webhook, ``webhook_rate_per_minute``) would make it wait more than ``max_rate_wait_seconds``;
otherwise the request is sent with retries (``delivery.deliver``) and
the outcome logged. A failed alert counts against the webhook and enough of them in a row pause it
(``store.PausePolicy``); a delivered one clears the count.

With billing on (``Settings.billing_enabled``), only owners with a live plan are recipients, and a
re-driven delivery whose owner's plan ended meanwhile is ``skipped`` (``screener.db.plans.entitled_owners``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg
from cloudevents.core.base import BaseCloudEvent

from functions.notifier import store
from functions.notifier.delivery import RetryPolicy, Sleep, deliver
from functions.notifier.dispatcher import Dispatcher
from functions.notifier.formats import build_request
from functions.notifier.models import DeliveryJob, DeliveryKey, DeliveryResult
from functions.notifier.ratelimit import TokenBucket
from functions.notifier.store import PausePolicy
from screener.config import Settings
from screener.connections import create_pg_pool
from screener.db.plans import disabled_owners, entitled_owners
from screener.events.envelope import InvalidEvent, expect_type, parse_data
from screener.events.models import Alert
from screener.names import CONSUMER_NOTIFIER, TYPE_ALERT_TRIGGERED
from screener.outbound import OutboundPolicy
from screener.runtime.function import Delivery, TransientError

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    """Return the current time, timezone-aware (the notifier's default wall clock)."""
    return datetime.now(tz=UTC)


@dataclass
class _Destination:
    """What this process knows about one webhook beyond its row: its rate bucket and latest health."""

    bucket: TokenBucket
    failure_count: int = 0
    paused_until: datetime | None = None
    health_seen_at: float = field(default=float("-inf"))  # monotonic instant of the health above


class Notifier:
    """Deliver alerts from the alerts stream to the users' webhooks (see the module docstring)."""

    consumer = CONSUMER_NOTIFIER

    def __init__(
        self,
        settings: Settings,
        *,
        pool: asyncpg.Pool | None = None,
        session: aiohttp.ClientSession | None = None,
        retry: RetryPolicy | None = None,
        pause: PausePolicy | None = None,
        rate_per_minute: float | None = None,
        rate_burst: float | None = None,
        max_rate_wait_seconds: float = 60.0,
        max_queue_seconds: float = 300.0,
        lease_seconds: float = 900.0,
        close_grace_seconds: float = 5.0,
        redrive_limit: int = 10_000,
        redrive_every_seconds: float = 60.0,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        on_result: Callable[[DeliveryJob, DeliveryResult], None] | None = None,
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._owns_pool = pool is None
        self._session = session
        self._owns_session = session is None
        self._outbound = OutboundPolicy.from_setting(settings.outbound_allow)
        self._retry = retry or RetryPolicy(timeout_seconds=settings.webhook_timeout_seconds)
        self._pause = pause or PausePolicy()
        self._rate_per_minute = rate_per_minute or float(settings.webhook_rate_per_minute)
        self._rate_burst = rate_burst
        self._max_rate_wait = max_rate_wait_seconds
        self._max_queue = max_queue_seconds
        self._lease = timedelta(seconds=lease_seconds)
        longest = max_queue_seconds + max_rate_wait_seconds + self._retry.worst_case_seconds()
        if lease_seconds <= longest:
            # A live delivery must never look abandoned, or another notifier would send it again.
            raise ValueError(
                f"lease_seconds {lease_seconds:g} must exceed the longest a delivery can take ({longest:g}s)"
            )
        self._close_grace = close_grace_seconds
        self._redrive_limit = redrive_limit
        self._redrive_every = redrive_every_seconds
        self._redrive_task: asyncio.Task[None] | None = None
        self._sleep = sleep
        self._clock = clock
        self._monotonic = monotonic
        self._on_result = on_result
        self._destinations: dict[uuid.UUID, _Destination] = {}
        self._dispatcher: Dispatcher[DeliveryJob, uuid.UUID, DeliveryKey] = Dispatcher(
            self._deliver_job, lambda job: job.webhook.id, lambda job: job.key
        )

    # --- the Function contract ---------------------------------------------------------------------

    async def start(self) -> None:
        """Open the database pool and HTTP session; re-drive deliveries a dead process left pending."""
        if self._pool is None:
            self._pool = await create_pg_pool(self._settings)
        if self._session is None:
            # No connection limit: a pool cap would let slow endpoints starve the fast ones. Every
            # connection checks the addresses it resolves against the outbound policy.
            self._session = self._outbound.client_session(limit=0)
        await self.redrive()
        self._redrive_task = asyncio.create_task(self._redrive_periodically(), name="notifier-redrive")

    async def close(self) -> None:
        """Let running deliveries finish briefly, hand the rest back as pending, release connections."""
        if self._redrive_task is not None:
            self._redrive_task.cancel()
            await asyncio.gather(self._redrive_task, return_exceptions=True)
            self._redrive_task = None
        unfinished = await self._dispatcher.close(self._close_grace)
        if unfinished and self._pool is not None:
            await store.release(self._pool, [job.key for job in unfinished], self._clock(), self._lease)
            log.info("notifier: handed back %d unfinished deliveries", len(unfinished))
        if self._owns_session and self._session is not None:
            await self._session.close()
        if self._owns_pool and self._pool is not None:
            await self._pool.close()

    def parse(self, event: BaseCloudEvent) -> Alert:
        """Return the alert an alert event carries; raise ``InvalidEvent`` for anything else."""
        expect_type(event, TYPE_ALERT_TRIGGERED)
        alert = parse_data(event, Alert)
        try:
            uuid.UUID(alert.id)
        except ValueError:
            raise InvalidEvent(f"alert id {alert.id!r} is not a UUID", event.get_id()) from None
        return alert

    async def handle(self, batch: Sequence[Delivery[Alert]]) -> Sequence[BaseCloudEvent]:
        """Log a pending delivery per recipient webhook and queue it; emit nothing."""
        alerts = list({d.payload.id: d.payload for d in batch}.values())
        try:
            jobs = await store.find_recipients(
                self._db, alerts, self._monotonic(), paid_only=self._settings.billing_enabled, now=self._clock()
            )
            owned = await store.claim_new(self._db, [job.key for job in jobs], self._clock(), self._lease)
        except Exception as exc:
            if store.is_unavailable(exc):
                raise TransientError(f"notifier: database unavailable: {exc}") from exc
            raise
        for job in jobs:
            if job.key in owned:
                self._dispatcher.submit(job)
        return []

    # --- operations --------------------------------------------------------------------------------

    async def wait_idle(self) -> None:
        """Return once every queued delivery has finished (tests and graceful shutdown)."""
        await self._dispatcher.wait_idle()

    async def redrive(self) -> int:
        """Queue the pending deliveries whose lease ran out; return how many were queued."""
        claims = await store.claim_stale(
            self._db, self._clock(), self._lease, self._redrive_limit, observed_at=self._monotonic()
        )
        jobs, unusable = claims.jobs, list(claims.unusable)
        if self._settings.billing_enabled and jobs:
            # A plan may have ended while the delivery waited for a dead process's lease to run out.
            allowed = await entitled_owners(self._db, (job.webhook.user_id for job in jobs), self._clock())
            unusable += [(job.key, "the owner's plan has ended") for job in jobs if job.webhook.user_id not in allowed]
            jobs = [job for job in jobs if job.webhook.user_id in allowed]
        elif jobs:
            blocked = await disabled_owners(self._db, (job.webhook.user_id for job in jobs))
            unusable += [(job.key, "the owner's account is disabled") for job in jobs if job.webhook.user_id in blocked]
            jobs = [job for job in jobs if job.webhook.user_id not in blocked]
        for key, reason in unusable:
            await store.record_result(self._db, key, DeliveryResult("skipped", 0, None, reason), self._clock())
        if claims.missing:
            log.warning("notifier: %d pending deliveries wait for their alert in alert_history", len(claims.missing))
        queued = sum(self._dispatcher.submit(job) for job in jobs)
        if queued:
            log.info("notifier: re-driving %d pending deliveries", queued)
        return queued

    async def _redrive_periodically(self) -> None:
        """Re-drive, while running, the deliveries of a dead process once their lease has run out.

        A killed notifier is replaced within seconds (``screener up``, Kubernetes), long before the
        lease of its unfinished deliveries runs out: the check at start alone would leave them
        pending until some later start, if one ever comes.
        """
        while True:
            await asyncio.sleep(self._redrive_every)  # real time: ``self._sleep`` paces the retries
            try:
                await self.redrive()
            except Exception as exc:  # the loop boundary: the next round tries again
                if not store.is_unavailable(exc):
                    log.exception("notifier: re-driving pending deliveries failed")
                    continue
                log.warning("notifier: re-driving pending deliveries failed: database unavailable: %s", exc)

    # --- one delivery --------------------------------------------------------------------------------

    @property
    def _db(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the notifier is not started")
        return self._pool

    def _destination(self, webhook_id: uuid.UUID) -> _Destination:
        found = self._destinations.get(webhook_id)
        if found is None:
            bucket = TokenBucket(self._rate_per_minute, self._rate_burst, clock=self._monotonic)
            found = self._destinations[webhook_id] = _Destination(bucket)
        return found

    def _paused_until(self, job: DeliveryJob, destination: _Destination) -> datetime | None:
        # Whichever is newer decides: the row read with the alert, or what this lane last wrote.
        if destination.health_seen_at > job.observed_at:
            return destination.paused_until
        return job.webhook.paused_until

    async def _deliver_job(self, job: DeliveryJob) -> None:
        destination = self._destination(job.webhook.id)
        queued = self._monotonic() - job.observed_at
        if queued > self._max_queue:
            # Behind a slow endpoint an alert goes stale; it also must not outlive its lease.
            await self._finish(job, DeliveryResult("skipped", 0, None, f"stale: queued {queued:.0f}s for this webhook"))
            return
        paused_until = self._paused_until(job, destination)
        if paused_until is not None and paused_until > self._clock():
            await self._finish(
                job, DeliveryResult("skipped", 0, None, f"webhook paused until {paused_until:%Y-%m-%dT%H:%M:%SZ}")
            )
            return
        wait = destination.bucket.wait_time()
        if wait > self._max_rate_wait:
            error = f"rate limited: over {self._rate_per_minute:g}/min for this webhook"
            await self._finish(job, DeliveryResult("skipped", 0, None, error))
            return
        if wait > 0:
            await self._sleep(wait)
        destination.bucket.reserve()

        async def on_attempt(attempt: int, http_status: int | None, error: str | None) -> None:
            if error is not None:
                await store.record_attempt(
                    self._db, job.key, attempt=attempt, http_status=http_status, error=error, now=self._clock()
                )

        result = await deliver(
            self._http,
            lambda: build_request(job.webhook, job.alert, self._clock().timestamp(), job.rule_name),
            self._retry,
            sleep=self._sleep,
            on_attempt=on_attempt,
            outbound=self._outbound,
        )
        await self._finish(job, result)
        await self._update_health(job, destination, result)

    async def _finish(self, job: DeliveryJob, result: DeliveryResult) -> None:
        await store.record_result(self._db, job.key, result, self._clock())
        if self._on_result is not None:
            self._on_result(job, result)
        level = logging.DEBUG if result.status == "sent" else logging.WARNING
        log.log(
            level,
            "webhook %s alert %s: %s after %d attempt(s) %s",
            *job.key,
            result.status,
            result.attempts,
            result.error or "",
        )

    async def _update_health(self, job: DeliveryJob, destination: _Destination, result: DeliveryResult) -> None:
        if result.ok:
            known_failures = (
                destination.failure_count if destination.health_seen_at > job.observed_at else job.webhook.failure_count
            )
            # Only write when there is something to clear: every UPDATE of webhooks fires its trigger.
            if known_failures or self._paused_until(job, destination) is not None:
                await store.record_success(self._db, job.webhook.id)
            destination.failure_count, destination.paused_until = 0, None
        else:
            health = await store.record_failure(self._db, job.webhook.id, self._pause, self._clock())
            destination.failure_count, destination.paused_until = health.failure_count, health.paused_until
            if health.paused_until is not None and health.failure_count >= self._pause.after_failures:
                log.warning(
                    "webhook %s paused until %s after %d failed alerts",
                    job.webhook.id,
                    health.paused_until,
                    health.failure_count,
                )
        destination.health_seen_at = self._monotonic()

    @property
    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("the notifier is not started")
        return self._session


def create(settings: Settings) -> Notifier:
    """Return the notifier for ``settings``."""
    return Notifier(settings)
