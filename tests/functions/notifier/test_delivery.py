"""One delivery against real local receivers: success, retries, backoff, 429, timeouts, drops."""

from __future__ import annotations

import json
import time
import uuid

import aiohttp
import pytest

from functions.notifier.delivery import RetryPolicy, deliver, parse_retry_after, send_test
from functions.notifier.formats import SIGNATURE_HEADER, TIMESTAMP_HEADER, OutgoingRequest, verify_signature
from functions.notifier.models import InvalidWebhook
from screener.outbound import OutboundPolicy
from tests.fakes.webhook_receivers import OK, RECEIVER_ALLOW, Drop, Hang, WebhookReceiver, retry_after, status
from tests.functions.notifier.helpers import RecordingSleep

FAST = RetryPolicy(max_attempts=3, timeout_seconds=2.0, backoff_base_seconds=1.0, backoff_factor=2.0)


def _request(receiver: WebhookReceiver, path: str) -> OutgoingRequest:
    return OutgoingRequest(receiver.url(path), b'{"hello":1}', {"Content-Type": "application/json"})


async def test_a_2xx_is_sent_in_one_attempt(receiver: WebhookReceiver, http: aiohttp.ClientSession) -> None:
    sleep = RecordingSleep()
    result = await deliver(http, lambda: _request(receiver, "/ok"), FAST, sleep=sleep)
    assert (result.status, result.attempts, result.http_status, result.error) == ("sent", 1, 200, None)
    assert sleep.delays == []
    assert receiver.received("/ok")[0].body == b'{"hello":1}'


async def test_500_is_retried_with_exponential_backoff(receiver: WebhookReceiver, http: aiohttp.ClientSession) -> None:
    receiver.script("/flaky", status(500), status(503), OK)
    sleep = RecordingSleep()
    attempts: list[tuple[int, int | None]] = []

    async def on_attempt(attempt: int, http_status: int | None, error: str | None) -> None:
        attempts.append((attempt, http_status))

    result = await deliver(http, lambda: _request(receiver, "/flaky"), FAST, sleep=sleep, on_attempt=on_attempt)
    assert (result.status, result.attempts, result.http_status) == ("sent", 3, 200)
    assert sleep.delays == [1.0, 2.0]
    assert attempts == [(1, 500), (2, 503), (3, 200)]
    assert len(receiver.received("/flaky")) == 3


async def test_three_failures_end_failed_with_the_last_error(
    receiver: WebhookReceiver, http: aiohttp.ClientSession
) -> None:
    receiver.script("/down", status(500, b"boom"))
    sleep = RecordingSleep()
    result = await deliver(http, lambda: _request(receiver, "/down"), FAST, sleep=sleep)
    assert (result.status, result.attempts, result.http_status) == ("failed", 3, 500)
    assert result.error == "HTTP 500: boom"
    assert sleep.delays == [1.0, 2.0]


async def test_429_waits_for_retry_after_instead_of_the_backoff(
    receiver: WebhookReceiver, http: aiohttp.ClientSession
) -> None:
    receiver.script("/limited", retry_after(7), OK)
    sleep = RecordingSleep()
    result = await deliver(http, lambda: _request(receiver, "/limited"), FAST, sleep=sleep)
    assert (result.status, result.attempts) == ("sent", 2)
    assert sleep.delays == [7.0]


async def test_429_with_telegram_retry_after_in_the_body(
    receiver: WebhookReceiver, http: aiohttp.ClientSession
) -> None:
    body = json.dumps({"ok": False, "error_code": 429, "parameters": {"retry_after": 3}}).encode()
    receiver.script("/bot/sendMessage", status(429, body), OK)
    sleep = RecordingSleep()
    result = await deliver(http, lambda: _request(receiver, "/bot/sendMessage"), FAST, sleep=sleep)
    assert result.ok
    assert sleep.delays == [3.0]


async def test_429_asking_for_too_long_gives_up(receiver: WebhookReceiver, http: aiohttp.ClientSession) -> None:
    receiver.script("/limited", retry_after(3600))
    sleep = RecordingSleep()
    result = await deliver(http, lambda: _request(receiver, "/limited"), FAST, sleep=sleep)
    assert (result.status, result.attempts, result.http_status) == ("failed", 1, 429)
    assert "Retry-After 3600s exceeds 60s" in (result.error or "")
    assert sleep.delays == []


async def test_a_4xx_other_than_429_is_not_retried(receiver: WebhookReceiver, http: aiohttp.ClientSession) -> None:
    receiver.script("/gone", status(404, b"Unknown Webhook"))
    result = await deliver(http, lambda: _request(receiver, "/gone"), FAST, sleep=RecordingSleep())
    assert (result.status, result.attempts, result.http_status) == ("failed", 1, 404)
    assert len(receiver.received("/gone")) == 1


async def test_a_hanging_endpoint_times_out_and_is_retried(
    receiver: WebhookReceiver, http: aiohttp.ClientSession
) -> None:
    receiver.script("/slow", Hang())
    policy = RetryPolicy(max_attempts=2, timeout_seconds=0.2)
    sleep = RecordingSleep()
    result = await deliver(http, lambda: _request(receiver, "/slow"), policy, sleep=sleep)
    assert (result.status, result.attempts, result.http_status) == ("failed", 2, None)
    assert result.error == "timed out after 0.2s"
    assert len(receiver.received("/slow")) == 2


async def test_a_dropped_connection_is_retried(receiver: WebhookReceiver, http: aiohttp.ClientSession) -> None:
    receiver.script("/drop", Drop(), OK)
    sleep = RecordingSleep()
    result = await deliver(http, lambda: _request(receiver, "/drop"), FAST, sleep=sleep)
    assert (result.status, result.attempts) == ("sent", 2)
    assert sleep.delays == [1.0]


async def test_an_unreachable_port_fails_after_all_attempts(http: aiohttp.ClientSession) -> None:
    request = OutgoingRequest("http://127.0.0.1:9/hook", b"{}", {})
    result = await deliver(http, lambda: request, FAST, sleep=RecordingSleep())
    assert (result.status, result.attempts) == ("failed", 3)
    assert "ClientConnectorError" in (result.error or "")


async def test_redirects_are_not_followed(receiver: WebhookReceiver, http: aiohttp.ClientSession) -> None:
    receiver.script("/moved", status(302))
    result = await deliver(http, lambda: _request(receiver, "/moved"), FAST, sleep=RecordingSleep())
    assert (result.status, result.http_status, result.attempts) == ("failed", 302, 1)


def test_retry_after_parses_seconds_and_http_dates() -> None:
    assert parse_retry_after("12", now=0) == 12.0
    assert parse_retry_after("Thu, 01 Jan 1970 00:01:40 GMT", now=40.0) == 60.0
    assert parse_retry_after("soon", now=0) is None
    assert parse_retry_after(None, now=0) is None


async def test_send_test_delivers_a_signed_sample_alert(receiver: WebhookReceiver, http: aiohttp.ClientSession) -> None:
    row = {"id": uuid.uuid4(), "user_id": "alice", "kind": "http", "url": receiver.url("/mine"), "secret": "k"}
    result = await send_test(http, row)
    assert result.ok
    (request,) = receiver.received("/mine")
    assert request.json()["rule_type"] == "test"
    assert verify_signature(
        "k", request.body, request.headers[SIGNATURE_HEADER], request.headers[TIMESTAMP_HEADER], now=time.time()
    )


async def test_send_test_reports_the_endpoint_answer_after_one_attempt(
    receiver: WebhookReceiver, http: aiohttp.ClientSession
) -> None:
    receiver.script("/broken", status(500, b"nope"))
    row = {"id": uuid.uuid4(), "user_id": "alice", "kind": "discord", "url": receiver.url("/broken")}
    result = await send_test(http, row)
    assert (result.status, result.attempts, result.http_status, result.error) == ("failed", 1, 500, "HTTP 500: nope")


async def test_send_test_rejects_a_telegram_webhook_without_chat(http: aiohttp.ClientSession) -> None:
    row = {"id": uuid.uuid4(), "user_id": "alice", "kind": "telegram", "url": "http://127.0.0.1:9/x"}
    with pytest.raises(InvalidWebhook, match="chat_id"):
        await send_test(http, row)


async def test_a_refused_destination_fails_at_once_without_a_request(receiver: WebhookReceiver) -> None:
    sleep = RecordingSleep()
    policy = OutboundPolicy()  # the default: loopback is not a public address
    async with policy.client_session() as session:
        result = await deliver(session, lambda: _request(receiver, "/inside"), FAST, sleep=sleep, outbound=policy)
    assert (result.status, result.attempts, result.http_status) == ("failed", 1, None)
    assert result.error is not None and result.error.startswith("destination refused")
    assert sleep.delays == [] and receiver.received() == []
    allowed = OutboundPolicy.from_setting(RECEIVER_ALLOW)
    async with allowed.client_session() as session:
        sent = await deliver(session, lambda: _request(receiver, "/inside"), FAST, sleep=sleep, outbound=allowed)
    assert sent.status == "sent"
