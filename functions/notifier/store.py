"""The notifier's SQL: who gets an alert, the delivery log, and each webhook's health.

Who receives an alert on their webhooks (rules.md, "Behaviour every rule shares"):

1. the alert's audience names the candidates: only ``audience.owner`` for a user's own rule;
   otherwise every user when ``audience.public``, else the users listed in ``audience.users``;
2. a candidate receives it when their personal setting for the rule is on *now*: the boolean
   ``user_settings.rules[rule_type]`` when present, else the rule's ``alert_rules.default_on``
   (else on, for a rule whose row is gone, since the audience already said yes);
3. and only on webhooks that are enabled, whose ``rule_types`` / ``symbols`` filters (NULL = all)
   admit the alert, and, for Telegram, that have a ``chat_id``;
4. a webhook of scope ``watchlist`` only gets alerts whose symbol is on its user's watchlist: an
   entry matches the pair or its base asset, case-insensitively (``BTC`` matches BTCUSDT);
5. with billing on (``paid_only``), only webhooks whose owner may use the paid features now: an
   account that is not disabled and is an admin, ``active``, on a running trial or ``canceled`` with
   time left (``screener.db.plans``, the gateway's ``plans.entitled``). An owner without an account row
   receives nothing: the gateway makes the row at their first call, and decides their plan then.
   With billing off, every owner except a disabled account (an owner without a row included).

The delivery log ``webhook_deliveries`` has one row per (webhook, alert). A row is written
``pending`` before anything is sent, then ends ``sent``, ``failed`` or ``skipped``; a final row is
never sent again, which is what makes a redelivered alert harmless. A ``pending`` row's
``updated_at`` is a lease: the process delivering it refreshes it on every attempt, and a pending
row whose lease has run out belongs to a process that died and is re-driven by the next one.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from functions.notifier.models import DeliveryJob, DeliveryKey, DeliveryResult, InvalidWebhook, Webhook
from screener.db.plans import disabled_owners, entitled_owners
from screener.events.models import Alert, AlertAudience, base_asset, minute_close_iso

# asyncpg.Pool and asyncpg.Connection both offer fetch/execute.
Executor = Any

_WEBHOOK_COLUMNS = "w.id, w.user_id, w.kind, w.url, w.secret, w.chat_id, w.failure_count, w.paused_until"

RECIPIENTS_SQL = f"""
WITH a AS (
    SELECT * FROM unnest($1::int[], $2::text[], $3::text[], $4::text[], $5::boolean[], $8::text[])
        AS a(idx, rule_type, symbol, owner, public, base)
), listed AS (
    SELECT * FROM unnest($6::int[], $7::text[]) AS l(idx, user_id)
)
SELECT a.idx, r.name AS rule_name, {_WEBHOOK_COLUMNS}
FROM a
JOIN webhooks w
  ON w.enabled
 AND (w.rule_types IS NULL OR a.rule_type = ANY (w.rule_types))
 AND (w.symbols IS NULL OR a.symbol = ANY (w.symbols))
 AND (w.kind <> 'telegram' OR w.chat_id IS NOT NULL)
 AND (w.scope = 'all' OR EXISTS (
        SELECT 1 FROM watchlist wl WHERE wl.user_id = w.user_id AND upper(wl.symbol) IN (a.symbol, a.base)))
LEFT JOIN alert_rules r ON r.rule_type = a.rule_type
LEFT JOIN user_settings s ON s.user_id = w.user_id
WHERE CASE
        WHEN a.owner IS NOT NULL THEN w.user_id = a.owner
        ELSE a.public OR EXISTS (SELECT 1 FROM listed l WHERE l.idx = a.idx AND l.user_id = w.user_id)
      END
  AND COALESCE(
        CASE WHEN jsonb_typeof(s.rules -> a.rule_type) = 'boolean' THEN (s.rules -> a.rule_type)::boolean END,
        r.default_on,
        true)
ORDER BY a.idx, w.id
"""

CLAIM_NEW_SQL = """
INSERT INTO webhook_deliveries (webhook_id, alert_id, status, attempts, updated_at)
SELECT t.webhook_id, t.alert_id, 'pending', 0, $3
FROM unnest($1::uuid[], $2::uuid[]) AS t(webhook_id, alert_id)
WHERE EXISTS (SELECT 1 FROM webhooks w WHERE w.id = t.webhook_id)
ON CONFLICT (webhook_id, alert_id) DO UPDATE SET updated_at = EXCLUDED.updated_at
    WHERE webhook_deliveries.status = 'pending' AND webhook_deliveries.updated_at < $4
RETURNING webhook_id, alert_id
"""

CLAIM_STALE_SQL = f"""
WITH claimed AS (
    UPDATE webhook_deliveries d SET updated_at = $1
    WHERE (d.webhook_id, d.alert_id) IN (
        SELECT webhook_id, alert_id FROM webhook_deliveries
        WHERE status = 'pending' AND updated_at < $2
        ORDER BY updated_at LIMIT $3
        FOR UPDATE SKIP LOCKED)
    RETURNING d.webhook_id, d.alert_id
)
SELECT c.webhook_id, c.alert_id, w.enabled, r.name AS rule_name,
       h.symbol, h.rule_type, h.description, h.minute, h.price, h.metadata, h.audience, {_WEBHOOK_COLUMNS}
FROM claimed c
JOIN webhooks w ON w.id = c.webhook_id
LEFT JOIN LATERAL (SELECT * FROM alert_history ah WHERE ah.id = c.alert_id LIMIT 1) h ON true
LEFT JOIN alert_rules r ON r.rule_type = h.rule_type
"""


@dataclass(frozen=True)
class PausePolicy:
    """When a dead endpoint is paused, and for how long.

    After ``after_failures`` consecutive failed alerts the webhook is paused for ``base_seconds``;
    each further failed alert (the first one after a pause ends is a probe) doubles the pause, up
    to ``max_seconds``. One delivered alert resets the count and lifts the pause.
    """

    after_failures: int = 5
    base_seconds: float = 300.0
    max_seconds: float = 86_400.0

    def pause_seconds(self, failure_count: int) -> float | None:
        """Return the pause after ``failure_count`` consecutive failures, or None for no pause."""
        if failure_count < self.after_failures:
            return None
        return float(min(self.max_seconds, self.base_seconds * 2 ** min(failure_count - self.after_failures, 40)))


@dataclass(frozen=True)
class WebhookHealth:
    """A webhook's failure count and pause after an update."""

    failure_count: int
    paused_until: datetime | None


async def find_recipients(
    db: Executor,
    alerts: Sequence[Alert],
    observed_at: float = 0.0,
    *,
    paid_only: bool = False,
    now: datetime | None = None,
) -> list[DeliveryJob]:
    """Return one job per (alert, webhook) that should receive it (rules in the module docstring).

    ``paid_only`` (billing on): only webhooks whose owner has a live plan at ``now`` (default: the
    database's clock).
    """
    if not alerts:
        return []
    listed = [(i, user) for i, alert in enumerate(alerts) for user in alert.audience.users]
    rows = await db.fetch(
        RECIPIENTS_SQL,
        list(range(len(alerts))),
        [a.rule_type for a in alerts],
        [a.symbol for a in alerts],
        [a.audience.owner for a in alerts],
        [a.audience.public for a in alerts],
        [i for i, _ in listed],
        [user for _, user in listed],
        [base_asset(a.symbol) for a in alerts],
    )
    if paid_only and rows:
        allowed = await entitled_owners(db, (row["user_id"] for row in rows), now or await db.fetchval("SELECT now()"))
        rows = [row for row in rows if row["user_id"] in allowed]
    elif rows:
        # Billing off gates no plan, but a disabled account must not keep sending through its webhooks.
        blocked = await disabled_owners(db, (row["user_id"] for row in rows))
        rows = [row for row in rows if row["user_id"] not in blocked]
    return [DeliveryJob(Webhook.from_row(row), alerts[row["idx"]], row["rule_name"], observed_at) for row in rows]


async def claim_new(db: Executor, keys: Iterable[DeliveryKey], now: datetime, lease: timedelta) -> set[DeliveryKey]:
    """Write ``pending`` rows for ``keys``; return the keys this caller now owns.

    Owned are the new rows and pending rows whose lease ran out; a final row (sent, failed,
    skipped) or a pending row another process is delivering is not returned.
    """
    unique = list(dict.fromkeys(keys))
    if not unique:
        return set()
    rows = await db.fetch(CLAIM_NEW_SQL, [k[0] for k in unique], [k[1] for k in unique], now, now - lease)
    return {(row["webhook_id"], row["alert_id"]) for row in rows}


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _alert_from_history(row: Any) -> Alert:
    minute_ms = int(row["minute"].timestamp() * 1000)
    return Alert(
        id=str(row["alert_id"]),
        symbol=row["symbol"],
        rule_type=row["rule_type"],
        description=row["description"],
        timestamp=minute_close_iso(minute_ms),
        price=row["price"],
        metadata=_json(row["metadata"]) or {},
        minute=minute_ms,
        audience=AlertAudience.model_validate(_json(row["audience"]) or {}),
    )


@dataclass(frozen=True)
class StaleClaims:
    """Pending rows taken over from a process that died, sorted by what to do with them."""

    jobs: list[DeliveryJob]
    unusable: list[tuple[DeliveryKey, str]]  # the webhook was switched off or broken meanwhile: skip, why
    missing: list[DeliveryKey]  # the alert is not (yet) in alert_history: leave pending


async def claim_stale(
    db: Executor, now: datetime, lease: timedelta, limit: int, observed_at: float = 0.0
) -> StaleClaims:
    """Take over pending rows whose lease ran out, with their alerts from ``alert_history``."""
    rows = await db.fetch(CLAIM_STALE_SQL, now, now - lease, limit)
    jobs: list[DeliveryJob] = []
    unusable: list[tuple[DeliveryKey, str]] = []
    missing: list[DeliveryKey] = []
    for row in rows:
        key = (row["webhook_id"], row["alert_id"])
        if row["symbol"] is None:
            missing.append(key)
        elif not row["enabled"]:
            unusable.append((key, "webhook disabled"))
        else:
            try:
                webhook = Webhook.from_row(row)
            except InvalidWebhook as exc:
                unusable.append((key, str(exc)))
                continue
            jobs.append(DeliveryJob(webhook, _alert_from_history(row), row["rule_name"], observed_at))
    return StaleClaims(jobs, unusable, missing)


async def release(db: Executor, keys: Iterable[DeliveryKey], now: datetime, lease: timedelta) -> None:
    """Give pending rows back (their lease already expired), so the next process re-drives them at once."""
    unique = list(dict.fromkeys(keys))
    if unique:
        await db.execute(
            """UPDATE webhook_deliveries d SET updated_at = $3
               FROM unnest($1::uuid[], $2::uuid[]) AS t(webhook_id, alert_id)
               WHERE d.webhook_id = t.webhook_id AND d.alert_id = t.alert_id AND d.status = 'pending'""",
            [k[0] for k in unique],
            [k[1] for k in unique],
            now - lease - timedelta(seconds=1),
        )


async def record_attempt(
    db: Executor, key: DeliveryKey, *, attempt: int, http_status: int | None, error: str | None, now: datetime
) -> None:
    """Log an attempt on a pending row (and renew its lease)."""
    await db.execute(
        """UPDATE webhook_deliveries SET attempts = $3, http_status = $4, last_error = $5, updated_at = $6
           WHERE webhook_id = $1 AND alert_id = $2 AND status = 'pending'""",
        key[0],
        key[1],
        attempt,
        http_status,
        error,
        now,
    )


async def record_result(db: Executor, key: DeliveryKey, result: DeliveryResult, now: datetime) -> None:
    """Write a delivery's final status; a row already ``sent`` is never downgraded.

    A delivery that succeeded after a failed attempt keeps that attempt's error in ``last_error``.
    """
    await db.execute(
        """UPDATE webhook_deliveries
           SET status = $3, attempts = $4, http_status = $5, last_error = COALESCE($6, last_error), updated_at = $7,
               sent_at = CASE WHEN $3 = 'sent' THEN $7 ELSE sent_at END
           WHERE webhook_id = $1 AND alert_id = $2 AND status <> 'sent'""",
        key[0],
        key[1],
        result.status,
        result.attempts,
        result.http_status,
        result.error,
        now,
    )


async def record_failure(db: Executor, webhook_id: uuid.UUID, policy: PausePolicy, now: datetime) -> WebhookHealth:
    """Count one more failed alert for ``webhook_id``; pause it per ``policy``; return its health."""
    # Right-hand sides read the row's old values, so failure_count + 1 is the new count.
    row = await db.fetchrow(
        """UPDATE webhooks SET
               failure_count = failure_count + 1,
               paused_until = CASE WHEN failure_count + 1 >= $2
                   THEN $3::timestamptz + make_interval(
                       secs => LEAST($5::float8, $4::float8 * power(2, LEAST(failure_count + 1 - $2, 40))))
                   ELSE paused_until END
           WHERE id = $1
           RETURNING failure_count, paused_until""",
        webhook_id,
        policy.after_failures,
        now,
        policy.base_seconds,
        policy.max_seconds,
    )
    return WebhookHealth(0, None) if row is None else WebhookHealth(row["failure_count"], row["paused_until"])


async def record_success(db: Executor, webhook_id: uuid.UUID) -> None:
    """Reset ``webhook_id``'s failure count and lift its pause."""
    await db.execute(
        """UPDATE webhooks SET failure_count = 0, paused_until = NULL
           WHERE id = $1 AND (failure_count <> 0 OR paused_until IS NOT NULL)""",
        webhook_id,
    )


def is_unavailable(exc: BaseException) -> bool:
    """Return whether a database error means "not reachable now" (worth a retry) rather than a bug."""
    return isinstance(exc, OSError | asyncpg.PostgresConnectionError | asyncpg.CannotConnectNowError)
