"""The notifier end to end: real PostgreSQL, real local HTTP receivers, no broker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import aiohttp
import asyncpg
import pytest

from functions.notifier.delivery import RetryPolicy
from functions.notifier.formats import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
from functions.notifier.function import Notifier, create
from functions.notifier.models import DeliveryJob, DeliveryResult
from functions.notifier.store import PausePolicy
from functions.rules.history import AlertHistory
from screener.config import Settings
from screener.events.envelope import InvalidEvent, make_event
from screener.events.models import Alert
from screener.names import CONSUMER_NOTIFIER, EVENT_SOURCE_RULES, TYPE_ALERT_TRIGGERED, TYPE_METRICS_COMPUTED
from screener.runtime.function import Delivery
from tests.fakes.webhook_receivers import OK, RECEIVER_ALLOW, Hang, WebhookReceiver, status
from tests.functions.notifier.helpers import (
    MINUTE,
    FakeClock,
    RecordingSleep,
    add_webhook,
    deliveries,
    make_alert,
)

NotifierFactory = Callable[..., Notifier]


class Results:
    """Collect delivery outcomes as the notifier reports them, and wait for them."""

    def __init__(self) -> None:
        self.items: list[tuple[DeliveryJob, DeliveryResult]] = []
        self._changed = asyncio.Event()

    def __call__(self, job: DeliveryJob, result: DeliveryResult) -> None:
        self.items.append((job, result))
        self._changed.set()

    def for_webhook(self, webhook_id: uuid.UUID) -> list[DeliveryResult]:
        return [result for job, result in self.items if job.webhook.id == webhook_id]

    async def wait_for(self, webhook_id: uuid.UUID, count: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.for_webhook(webhook_id)) < count:
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sleep() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
def results() -> Results:
    return Results()


@pytest.fixture
async def make_notifier(
    postgres_dsn: str,
    http: aiohttp.ClientSession,
    clock: FakeClock,
    sleep: RecordingSleep,
    results: Results,
) -> AsyncIterator[NotifierFactory]:
    """Return a factory of started-on-demand notifiers on the test's database; close them all after."""
    made: list[Notifier] = []
    pool = await asyncpg.create_pool(postgres_dsn, min_size=1, max_size=4)

    def factory(**overrides: object) -> Notifier:
        options: dict[str, object] = {
            "pool": pool,
            "session": http,
            "retry": RetryPolicy(max_attempts=3, timeout_seconds=5.0),
            "sleep": sleep,
            "clock": clock,
            "on_result": results,
            "close_grace_seconds": 0.0,
        }
        options.update(overrides)
        notifier = Notifier(Settings(postgres_dsn=postgres_dsn, outbound_allow=RECEIVER_ALLOW), **options)  # type: ignore[arg-type]
        made.append(notifier)
        return notifier

    yield factory
    for notifier in made:
        await notifier.close()
    await pool.close()


def _batch(notifier: Notifier, *alerts: Alert) -> list[Delivery[Alert]]:
    batch = []
    for alert in alerts:
        event = make_event(
            event_type=TYPE_ALERT_TRIGGERED,
            source=EVENT_SOURCE_RULES,
            event_id=alert.id,
            subject=alert.symbol,
            data=alert,
        )
        batch.append(Delivery(event, notifier.parse(event)))
    return batch


async def _started(factory: NotifierFactory, **overrides: object) -> Notifier:
    notifier = factory(**overrides)
    await notifier.start()
    return notifier


def _alerts(count: int, rule_type: str = "futures_big_bull_60") -> list[Alert]:
    return [make_alert(rule_type, minute=MINUTE + i * 60_000) for i in range(count)]


# --- formats on the wire and the delivery log ------------------------------------------------------


async def test_an_alert_reaches_discord_telegram_and_signed_json_and_is_logged_sent(
    make_notifier: NotifierFactory, pg: asyncpg.Connection, receiver: WebhookReceiver, clock: FakeClock
) -> None:
    discord = await add_webhook(pg, receiver.url("/discord"), kind="discord")
    telegram = await add_webhook(pg, receiver.url("/bot123/sendMessage"), kind="telegram", chat_id="42")
    signed = await add_webhook(pg, receiver.url("/json"), kind="http", secret="k3y")
    notifier = await _started(make_notifier)
    alert = make_alert()

    assert await notifier.handle(_batch(notifier, alert)) == []
    await notifier.wait_idle()

    (d,) = receiver.received("/discord")
    assert d.json()["embeds"][0]["title"] == "ETHUSDT · futures_big_bull_60"
    (t,) = receiver.received("/bot123/sendMessage")
    assert t.json()["chat_id"] == "42"
    assert t.json()["parse_mode"] == "HTML"
    (j,) = receiver.received("/json")
    assert j.json()["id"] == alert.id
    assert verify_signature(
        "k3y", j.body, j.headers[SIGNATURE_HEADER], j.headers[TIMESTAMP_HEADER], now=clock.now.timestamp()
    )
    log = await deliveries(pg)
    for webhook_id in (discord, telegram, signed):
        row = log[(webhook_id, alert.id)]
        assert (row["status"], row["attempts"], row["http_status"], row["last_error"]) == ("sent", 1, 200, None)
        assert row["sent_at"] == clock.now


async def test_a_failing_endpoint_is_logged_failed_with_attempts_and_last_error(
    make_notifier: NotifierFactory, pg: asyncpg.Connection, receiver: WebhookReceiver, sleep: RecordingSleep
) -> None:
    receiver.script("/down", status(500, b"boom"))
    webhook = await add_webhook(pg, receiver.url("/down"))
    notifier = await _started(make_notifier)
    alert = make_alert()

    await notifier.handle(_batch(notifier, alert))
    await notifier.wait_idle()

    row = (await deliveries(pg))[(webhook, alert.id)]
    assert (row["status"], row["attempts"], row["http_status"]) == ("failed", 3, 500)
    assert row["last_error"] == "HTTP 500: boom"
    assert row["sent_at"] is None
    assert sleep.delays == [1.0, 2.0]
    assert await pg.fetchval("SELECT failure_count FROM webhooks WHERE id = $1", webhook) == 1


async def test_a_retry_that_succeeds_is_logged_sent_with_its_attempts(
    make_notifier: NotifierFactory, pg: asyncpg.Connection, receiver: WebhookReceiver
) -> None:
    receiver.script("/flaky", status(502), OK)
    webhook = await add_webhook(pg, receiver.url("/flaky"))
    await pg.execute("UPDATE webhooks SET failure_count = 2 WHERE id = $1", webhook)
    notifier = await _started(make_notifier)
    alert = make_alert()

    await notifier.handle(_batch(notifier, alert))
    await notifier.wait_idle()

    row = (await deliveries(pg))[(webhook, alert.id)]
    assert (row["status"], row["attempts"], row["http_status"]) == ("sent", 2, 200)
    assert row["last_error"] == "HTTP 502: error"  # the log keeps what went wrong on the way
    assert await pg.fetchval("SELECT failure_count FROM webhooks WHERE id = $1", webhook) == 0


# --- never blocking the batch, never delaying others ----------------------------------------------


async def test_handle_returns_before_a_hanging_endpoint_answers(
    make_notifier: NotifierFactory, pg: asyncpg.Connection, receiver: WebhookReceiver
) -> None:
    receiver.script("/slow", Hang())
    webhook = await add_webhook(pg, receiver.url("/slow"))
    notifier = await _started(make_notifier)
    alert = make_alert()

    await notifier.handle(_batch(notifier, alert))
    await receiver.wait_count("/slow", 1)
    row = (await deliveries(pg))[(webhook, alert.id)]
    assert row["status"] == "pending"  # handle has returned, the request is still open

    receiver.release("/slow")
    await notifier.wait_idle()
    assert (await deliveries(pg))[(webhook, alert.id)]["status"] == "sent"


async def test_a_slow_endpoint_does_not_delay_another_users_alerts(
    make_notifier: NotifierFactory, pg: asyncpg.Connection, receiver: WebhookReceiver, results: Results
) -> None:
    receiver.script("/slow", Hang())
    slow = await add_webhook(pg, receiver.url("/slow"), user_id="bob")
    fast = await add_webhook(pg, receiver.url("/fast"), user_id="alice")
    notifier = await _started(make_notifier)
    alerts = _alerts(3)

    for alert in alerts:  # three batches, as the worker would hand them over
        await notifier.handle(_batch(notifier, alert))
    await results.wait_for(fast, 3)

    # Every fast delivery finished while the slow endpoint still held its first request.
    assert [r.status for r in results.for_webhook(fast)] == ["sent"] * 3
    assert results.for_webhook(slow) == []
    await receiver.wait_count("/slow", 1)
    assert len(receiver.received("/slow")) == 1  # its later alerts wait in its own lane

    receiver.release("/slow")
    await notifier.wait_idle()
    assert [r.status for r in results.for_webhook(slow)] == ["sent"] * 3
    # Each destination gets its alerts in order.
    assert [r.json()["id"] for r in receiver.received("/slow")] == [a.id for a in alerts]


async def test_a_timing_out_endpoint_fails_without_holding_up_others(
    make_notifier: NotifierFactory, pg: asyncpg.Connection, receiver: WebhookReceiver, results: Results
) -> None:
    receiver.script("/slow", Hang())
    slow = await add_webhook(pg, receiver.url("/slow"), user_id="bob")
    fast = await add_webhook(pg, receiver.url("/fast"), user_id="alice")
    notifier = await _started(make_notifier, retry=RetryPolicy(max_attempts=2, timeout_seconds=0.3))
    alert = make_alert()

    await notifier.handle(_batch(notifier, alert))
    await notifier.wait_idle()

    assert results.for_webhook(fast)[0].status == "sent"
    (slow_result,) = results.for_webhook(slow)
    assert (slow_result.status, slow_result.attempts, slow_result.error) == ("failed", 2, "timed out after 0.3s")
    fast_done = next(i for i, (job, _) in enumerate(results.items) if job.webhook.id == fast)
    slow_done = next(i for i, (job, _) in enumerate(results.items) if job.webhook.id == slow)
    assert fast_done < slow_done


# --- exactly one send per (webhook, alert) ---------------------------------------------------------


async def test_a_redelivered_alert_is_not_sent_twice(
    make_notifier: NotifierFactory, pg: asyncpg.Connection, receiver: WebhookReceiver
) -> None:
    webhook = await add_webhook(pg, receiver.url("/hook"))
    notifier = await _started(make_notifier)
    alert = make_alert()

    await notifier.handle(_batch(notifier, alert, alert))  # duplicated within a batch
    await notifier.wait_idle()
    await notifier.handle(_batch(notifier, alert))  # and redelivered later
    await notifier.wait_idle()
    again = await _started(make_notifier)  # or to another replica
    await again.handle(_batch(again, alert))
    await again.wait_idle()

    assert len(receiver.received("/hook")) == 1
    row = (await deliveries(pg))[(webhook, alert.id)]
    assert (row["status"], row["attempts"]) == ("sent", 1)


async def test_a_redelivery_while_the_first_send_is_in_flight_does_not_double_send(
    make_notifier: NotifierFactory, pg: asyncpg.Connection, receiver: WebhookReceiver
) -> None:
    receiver.script("/slow", Hang())
    await add_webhook(pg, receiver.url("/slow"))
    notifier = await _started(make_notifier)
    other = await _started(make_notifier)
    alert = make_alert()

    await notifier.handle(_batch(notifier, alert))
    await receiver.wait_count("/slow", 1)
    await notifier.handle(_batch(notifier, alert))
    await other.handle(_batch(other, alert))
    receiver.release("/slow")
    await notifier.wait_idle()
    await other.wait_idle()

    assert len(receiver.received("/slow")) == 1


async def test_a_failed_delivery_is_final_on_redelivery(
    make_notifier: NotifierFactory, pg: asyncpg.Connection, receiver: WebhookReceiver
) -> None:
    receiver.script("/hook", status(404))
    await add_webhook(pg, receiver.url("/hook"))
    notifier = await _started(make_notifier)
    alert = make_alert()

    await notifier.handle(_batch(notifier, alert))
    await notifier.wait_idle()
    await notifier.handle(_batch(notifier, alert))
    await notifier.wait_idle()

    assert len(receiver.received("/hook")) == 1


async def test_an_alert_stuck_behind_a_slow_endpoint_goes_stale(
    make_notifier: NotifierFactory, pg: asyncpg.Connection, receiver: WebhookReceiver
) -> None:
    receiver.script("/slow", Hang())
    webhook = await add_webhook(pg, receiver.url("/slow"))
    monotonic = [1000.0]
    notifier = await _started(make_notifier, max_queue_seconds=300, monotonic=lambda: monotonic[0])
    first, second = _alerts(2)

    await notifier.handle(_batch(notifier, first, second))
    await receiver.wait_count("/slow", 1)
    monotonic[0] += 301
    receiver.release("/slow")
    await notifier.wait_idle()

    log = await deliveries(pg)
    assert log[(webhook, first.id)]["status"] == "sent"
    assert (log[(webhook, second.id)]["status"], log[(webhook, second.id)]["last_error"]) == (
        "skipped",
        "stale: queued 301s for this webhook",
    )
    assert len(receiver.received("/slow")) == 1


def test_the_lease_must_outlast_the_longest_delivery() -> None:
    with pytest.raises(ValueError, match="lease_seconds 300 must exceed"):
        Notifier(Settings(), lease_seconds=300)


# --- rate limit and pause -------------------------------------------------------------------------


async def test_the_rate_limit_skips_alerts_that_would_wait_too_long(
    make_notifier: NotifierFactory, pg: asyncpg.Connection, receiver: WebhookReceiver
) -> None:
    limited = await add_webhook(pg, receiver.url("/limited"), user_id="alice")
    other = await add_webhook(pg, receiver.url("/other"), user_id="bob")
    notifier = await _started(make_notifier, rate_per_minute=2, max_rate_wait_seconds=0.0, monotonic=lambda: 1000.0)
    alerts = _alerts(5)

    await notifier.handle(_batch(notifier, *alerts))
    await notifier.wait_idle()

    log = await deliveries(pg)
    statuses = [log[(limited, a.id)]["status"] for a in alerts]
    assert statuses == ["sent", "sent", "skipped", "skipped", "skipped"]
    assert log[(limited, alerts[2].id)]["last_error"] == "rate limited: over 2/min for this webhook"
    assert len(receiver.received("/limited")) == 2
    # The bucket is per destination: the first webhook's sends took nothing from the other's.
    assert [log[(other, a.id)]["status"] for a in alerts] == statuses


async def test_the_rate_limit_spaces_out_alerts_within_the_wait_budget(
    make_notifier: NotifierFactory, pg: asyncpg.Connection, receiver: WebhookReceiver, sleep: RecordingSleep
) -> None:
    await add_webhook(pg, receiver.url("/hook"))
    notifier = await _started(make_notifier, rate_per_minute=60, rate_burst=1, monotonic=lambda: 1000.0)
    alerts = _alerts(3)

    await notifier.handle(_batch(notifier, *alerts))
    await notifier.wait_idle()

    assert sleep.delays == [pytest.approx(1.0), pytest.approx(2.0)]
    assert [r.json()["id"] for r in receiver.received("/hook")] == [a.id for a in alerts]


async def test_a_dead_endpoint_is_paused_with_a_growing_pause_then_recovers(
    make_notifier: NotifierFactory, pg: asyncpg.Connection, receiver: WebhookReceiver, clock: FakeClock
) -> None:
    receiver.script("/dead", status(500))
    webhook = await add_webhook(pg, receiver.url("/dead"))
    policy = PausePolicy(after_failures=2, base_seconds=60, max_seconds=3600)
    notifier = await _started(make_notifier, pause=policy, retry=RetryPolicy(max_attempts=2))
    alerts = _alerts(6)

    async def send(alert: Alert) -> str:
        await notifier.handle(_batch(notifier, alert))
        await notifier.wait_idle()
        return str((await deliveries(pg))[(webhook, alert.id)]["status"])

    async def health() -> tuple[int, timedelta | None]:
        row = await pg.fetchrow("SELECT failure_count, paused_until FROM webhooks WHERE id = $1", webhook)
        return row["failure_count"], None if row["paused_until"] is None else row["paused_until"] - clock.now

    assert await send(alerts[0]) == "failed"
    assert await health() == (1, None)
    assert await send(alerts[1]) == "failed"
    assert await health() == (2, timedelta(seconds=60))
    assert await send(alerts[2]) == "skipped"  # paused: not even tried
    assert len(receiver.received("/dead")) == 4

    clock.now += timedelta(seconds=61)
    assert await send(alerts[3]) == "failed"  # the probe after the pause fails: pause doubles
    assert await health() == (3, timedelta(seconds=120))
    assert len(receiver.received("/dead")) == 6

    receiver.script("/dead", OK)
    clock.now += timedelta(seconds=121)
    assert await send(alerts[4]) == "sent"
    assert await health() == (0, None)
    assert await send(alerts[5]) == "sent"


async def test_a_pause_decided_mid_batch_skips_the_rest_of_that_batch(
    make_notifier: NotifierFactory, pg: asyncpg.Connection, receiver: WebhookReceiver
) -> None:
    receiver.script("/dead", status(503))
    webhook = await add_webhook(pg, receiver.url("/dead"))
    notifier = await _started(make_notifier, pause=PausePolicy(after_failures=2), retry=RetryPolicy(max_attempts=1))
    alerts = _alerts(5)

    await notifier.handle(_batch(notifier, *alerts))
    await notifier.wait_idle()

    log = await deliveries(pg)
    assert [log[(webhook, a.id)]["status"] for a in alerts] == ["failed", "failed", "skipped", "skipped", "skipped"]
    assert str(log[(webhook, alerts[2].id)]["last_error"]).startswith("webhook paused until ")
    assert len(receiver.received("/dead")) == 2


# --- crash recovery ----------------------------------------------------------------------------------


async def test_pending_deliveries_left_by_a_crash_are_redriven_on_start(
    make_notifier: NotifierFactory, pg: asyncpg.Connection, receiver: WebhookReceiver, clock: FakeClock
) -> None:
    webhook = await add_webhook(pg, receiver.url("/hook"), kind="http")
    disabled = await add_webhook(pg, receiver.url("/off"), enabled=False)
    broken = await add_webhook(pg, receiver.url("/tg"), kind="telegram")  # its chat id was removed
    crashed, fresh, unknown = _alerts(3)
    for alert in (crashed, fresh):
        await AlertHistory().save(pg, [alert])
    lease = timedelta(seconds=600)
    rows = [
        (webhook, crashed, clock.now - lease - timedelta(seconds=5)),  # its owner died
        (webhook, fresh, clock.now - timedelta(seconds=5)),  # someone is delivering it right now
        (webhook, unknown, clock.now - lease - timedelta(seconds=5)),  # alert not in history yet
        (disabled, crashed, clock.now - lease - timedelta(seconds=5)),
        (broken, crashed, clock.now - lease - timedelta(seconds=5)),
    ]
    for webhook_id, alert, updated_at in rows:
        await pg.execute(
            "INSERT INTO webhook_deliveries (webhook_id, alert_id, status, updated_at) VALUES ($1, $2, 'pending', $3)",
            webhook_id,
            uuid.UUID(alert.id),
            updated_at,
        )

    notifier = await _started(make_notifier, lease_seconds=600)
    await notifier.wait_idle()

    (request,) = receiver.received("/hook")
    assert request.json() == {**crashed.public_view(), "delivery_id": request.json()["delivery_id"]}
    log = await deliveries(pg)
    assert log[(webhook, crashed.id)]["status"] == "sent"
    assert log[(webhook, fresh.id)]["status"] == "pending"
    assert log[(webhook, unknown.id)]["status"] == "pending"
    assert (log[(disabled, crashed.id)]["status"], log[(disabled, crashed.id)]["last_error"]) == (
        "skipped",
        "webhook disabled",
    )
    assert log[(broken, crashed.id)]["status"] == "skipped"
    assert "needs a chat_id" in log[(broken, crashed.id)]["last_error"]
    assert receiver.received("/tg") == []


async def test_a_running_notifier_redrives_what_a_killed_one_left_once_its_lease_runs_out(
    make_notifier: NotifierFactory, pg: asyncpg.Connection, receiver: WebhookReceiver, clock: FakeClock
) -> None:
    webhook = await add_webhook(pg, receiver.url("/hook"), kind="http")
    alert = make_alert()
    await AlertHistory().save(pg, [alert])
    # A notifier was killed seconds ago in the middle of this delivery; its replacement is up at once.
    await pg.execute(
        "INSERT INTO webhook_deliveries (webhook_id, alert_id, status, updated_at) VALUES ($1, $2, 'pending', $3)",
        webhook,
        uuid.UUID(alert.id),
        clock.now - timedelta(seconds=5),
    )
    notifier = await _started(make_notifier, lease_seconds=600, redrive_every_seconds=0.05)
    await notifier.wait_idle()
    assert receiver.received("/hook") == []  # the lease still runs: its owner might be sending it

    clock.now += timedelta(seconds=600)  # the lease has run out, and no notifier starts again
    await receiver.wait_count("/hook", 1)
    await notifier.wait_idle()
    assert (await deliveries(pg))[(webhook, alert.id)]["status"] == "sent"


async def test_close_hands_unfinished_deliveries_to_the_next_notifier(
    make_notifier: NotifierFactory, pg: asyncpg.Connection, receiver: WebhookReceiver
) -> None:
    receiver.script("/hook", Hang())
    webhook = await add_webhook(pg, receiver.url("/hook"))
    alert = make_alert()
    await AlertHistory().save(pg, [alert])
    first = await _started(make_notifier)

    await first.handle(_batch(first, alert))
    await receiver.wait_count("/hook", 1)
    await first.close()  # grace 0: the hanging send is cancelled and handed back
    assert (await deliveries(pg))[(webhook, alert.id)]["status"] == "pending"

    receiver.script("/hook", OK)
    second = await _started(make_notifier)
    await second.wait_idle()
    assert (await deliveries(pg))[(webhook, alert.id)]["status"] == "sent"
    assert len(receiver.received("/hook")) == 2


# --- the Function contract ---------------------------------------------------------------------------


def test_parse_rejects_events_that_are_not_alerts() -> None:
    notifier = create(Settings())
    assert notifier.consumer == CONSUMER_NOTIFIER
    metrics = make_event(event_type=TYPE_METRICS_COMPUTED, source="/x", event_id="m", subject="BTCUSDT", data={})
    with pytest.raises(InvalidEvent, match="unexpected event type"):
        notifier.parse(metrics)
    bad_id = make_alert().model_copy(update={"id": "not-a-uuid"})
    event = make_event(event_type=TYPE_ALERT_TRIGGERED, source="/x", event_id="a", subject="ETHUSDT", data=bad_id)
    with pytest.raises(InvalidEvent, match="not a UUID"):
        notifier.parse(event)
    broken = make_event(event_type=TYPE_ALERT_TRIGGERED, source="/x", event_id="b", subject="ETHUSDT", data={"id": 1})
    with pytest.raises(InvalidEvent, match="invalid Alert"):
        notifier.parse(broken)


async def test_an_alert_nobody_subscribed_to_writes_nothing(
    make_notifier: NotifierFactory, pg: asyncpg.Connection
) -> None:
    notifier = await _started(make_notifier)
    assert await notifier.handle(_batch(notifier, make_alert())) == []
    await notifier.wait_idle()
    assert await pg.fetchval("SELECT count(*) FROM webhook_deliveries") == 0
