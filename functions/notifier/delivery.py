"""Send one request to one destination: bounded attempts, exponential backoff, 429 ``Retry-After``.

A 2xx is success. 429, 408, 5xx, a timeout or a dropped connection are worth another attempt; any
other answer (400, 401, 403, 404, a redirect) will not get better by retrying and ends the delivery
at once. Redirects are not followed: a webhook URL is user input and must not be bounced elsewhere.
Every URL passes the outbound-address policy (``screener.outbound``) before each attempt; a refused
destination fails at once, without a retry.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp

from functions.notifier.formats import OutgoingRequest, build_request
from functions.notifier.models import DeliveryResult, Webhook
from screener.events.models import MINUTE_MS, Alert, alert_id, minute_close_iso
from screener.outbound import OutboundPolicy, OutboundRefused

Sleep = Callable[[float], Awaitable[None]]
# Called after every attempt with (attempt number, HTTP status or None, error or None).
AttemptHook = Callable[[int, int | None, str | None], Awaitable[None]]
_ERROR_BODY_CHARS = 200


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try one delivery: attempts, per-attempt timeout, backoff and Retry-After caps."""

    max_attempts: int = 3
    timeout_seconds: float = 5.0
    backoff_base_seconds: float = 1.0
    backoff_factor: float = 2.0
    backoff_max_seconds: float = 30.0
    max_retry_after_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")

    def worst_case_seconds(self) -> float:
        """Return the longest one delivery can take: every attempt timing out, every wait at its cap."""
        waits = max(self.max_retry_after_seconds, self.backoff_max_seconds) * (self.max_attempts - 1)
        return self.max_attempts * self.timeout_seconds + waits

    def backoff(self, attempt: int) -> float:
        """Return the delay after failed attempt ``attempt`` (1-based): base, base*factor, ..."""
        return float(min(self.backoff_max_seconds, self.backoff_base_seconds * self.backoff_factor ** (attempt - 1)))


@dataclass(frozen=True)
class AttemptOutcome:
    """What one HTTP attempt produced."""

    http_status: int | None
    error: str | None
    retryable: bool
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        """Return whether the destination accepted the request."""
        return self.error is None


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Return the seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def _telegram_retry_after(body: bytes) -> float | None:
    # The Bot API also says it in the body: {"ok": false, "parameters": {"retry_after": 5}}.
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    retry_after = parsed.get("parameters", {}).get("retry_after") if isinstance(parsed, dict) else None
    return float(retry_after) if isinstance(retry_after, int | float) else None


async def post_once(
    session: aiohttp.ClientSession,
    request: OutgoingRequest,
    timeout_seconds: float,
    outbound: OutboundPolicy | None = None,
) -> AttemptOutcome:
    """POST ``request`` once and classify the answer; never raise for a network failure.

    With ``outbound`` the URL is checked first; a session from ``OutboundPolicy.client_session``
    checks every resolved address again when it connects.
    """
    try:
        if outbound is not None:
            outbound.check_url(request.url)
        async with session.post(
            request.url,
            data=request.body,
            headers=dict(request.headers),
            timeout=aiohttp.ClientTimeout(total=timeout_seconds),
            allow_redirects=False,
        ) as response:
            body = await response.content.read(4096)
            status = response.status
            if 200 <= status < 300:
                return AttemptOutcome(status, None, retryable=False)
            text = body[:_ERROR_BODY_CHARS].decode("utf-8", "replace")
            error = f"HTTP {status}: {text}".strip()
            if status == 429:
                retry_after = parse_retry_after(response.headers.get("Retry-After"), time.time())
                if retry_after is None:
                    retry_after = _telegram_retry_after(body)
                return AttemptOutcome(status, error, retryable=True, retry_after=retry_after)
            return AttemptOutcome(status, error, retryable=status == 408 or status >= 500)
    except OutboundRefused as exc:
        return AttemptOutcome(None, f"destination refused: {exc}", retryable=False)
    except TimeoutError:
        return AttemptOutcome(None, f"timed out after {timeout_seconds:g}s", retryable=True)
    except aiohttp.InvalidURL as exc:
        return AttemptOutcome(None, f"invalid URL: {exc}", retryable=False)
    except aiohttp.ClientError as exc:
        return AttemptOutcome(None, f"{type(exc).__name__}: {exc}", retryable=True)


async def deliver(
    session: aiohttp.ClientSession,
    build: Callable[[], OutgoingRequest],
    policy: RetryPolicy,
    *,
    sleep: Sleep = asyncio.sleep,
    on_attempt: AttemptHook | None = None,
    outbound: OutboundPolicy | None = None,
) -> DeliveryResult:
    """Deliver the request ``build`` returns (rebuilt per attempt, for a fresh signed timestamp).

    Make up to ``policy.max_attempts`` attempts; wait ``Retry-After`` after a 429 that gives one
    (giving up when it exceeds ``max_retry_after_seconds``), else the exponential backoff.
    """
    outcome = AttemptOutcome(None, "not attempted", retryable=False)
    for attempt in range(1, policy.max_attempts + 1):
        outcome = await post_once(session, build(), policy.timeout_seconds, outbound)
        if on_attempt is not None:
            await on_attempt(attempt, outcome.http_status, outcome.error)
        if outcome.ok:
            return DeliveryResult("sent", attempt, outcome.http_status)
        if not outcome.retryable or attempt == policy.max_attempts:
            return DeliveryResult("failed", attempt, outcome.http_status, outcome.error)
        delay = policy.backoff(attempt) if outcome.retry_after is None else outcome.retry_after
        if delay > policy.max_retry_after_seconds:
            error = f"{outcome.error} (Retry-After {delay:g}s exceeds {policy.max_retry_after_seconds:g}s)"
            return DeliveryResult("failed", attempt, outcome.http_status, error)
        await sleep(delay)
    raise AssertionError("unreachable: the loop returns on its last attempt")


def sample_alert(now_ms: int) -> Alert:
    """Return the alert a test delivery sends: plausible values, clearly marked as a test."""
    minute = now_ms - now_ms % MINUTE_MS - MINUTE_MS
    return Alert(
        id=alert_id("test", "BTCUSDT", minute),
        symbol="BTCUSDT",
        rule_type="test",
        description="Test notification: this webhook is set up correctly.",
        timestamp=minute_close_iso(minute),
        price=65000.0,
        metadata={"c5m": 1.25, "c1h": 2.5, "v5m": 1_250_000.0},
        minute=minute,
    )


async def send_test(
    session: aiohttp.ClientSession,
    webhook_row: Webhook | Mapping[str, Any],
    *,
    policy: RetryPolicy | None = None,
    clock: Callable[[], float] = time.time,
    outbound: OutboundPolicy | None = None,
) -> DeliveryResult:
    """Send a sample alert to one webhook now (``POST /api/webhooks/{id}/test``); log nothing.

    One attempt by default, so the user sees the endpoint's real answer at once. Raise
    ``InvalidWebhook`` for a row that cannot be delivered to.
    """
    webhook = webhook_row if isinstance(webhook_row, Webhook) else Webhook.from_row(webhook_row)
    alert = sample_alert(int(clock() * 1000))
    chosen = policy or RetryPolicy(max_attempts=1)
    return await deliver(session, lambda: build_request(webhook, alert, clock(), "Test"), chosen, outbound=outbound)
