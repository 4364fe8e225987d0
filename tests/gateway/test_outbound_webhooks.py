"""Webhooks cannot reach inside the network: URLs are checked when stored, tested and delivered.

The gateway here runs with the default outbound policy (``outbound_allow=[]``) unless a test allows
the local receiver explicitly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.routes.webhooks import TEST_SENDS_PER_MINUTE
from tests.fakes.webhook_receivers import RECEIVER_ALLOW, WebhookReceiver, running_receiver, status
from tests.gateway.conftest import GatewayFactory
from tests.gateway.helpers import auth

Client = TestClient[web.Request, web.Application]
INTERNAL_URLS = [
    "http://169.254.169.254/latest/meta-data/",
    "http://0x7f000001/",
    "http://2130706433/",
    "http://0177.0.0.1/",
    "http://[::1]:6379/",
    "http://[::ffff:127.0.0.1]:5432/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://localhost:4222/",
    "http://10.0.0.1/",
    "https://hooks.example:99999/x",
    "https://hooks.example/x\r\nX-Evil: 1",
]


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    """Yield a running local webhook receiver."""
    async with running_receiver() as running:
        yield running


def _hook(url: str) -> dict[str, object]:
    return {"name": "n", "webhook_type": "http", "webhook_url": url}


@pytest.mark.parametrize("url", INTERNAL_URLS)
async def test_internal_urls_are_refused_at_create_and_update(make_gateway: GatewayFactory, url: str) -> None:
    gw = await make_gateway(outbound_allow=[])
    created = await gw.post("/api/webhooks", json=_hook(url), headers=auth())
    body = await created.json()
    assert created.status == 400, body
    assert "'webhook_url'" in body["message"]
    ok = await gw.post("/api/webhooks", json=_hook("https://hooks.example/h"), headers=auth())
    assert ok.status == 201
    hook_id = (await ok.json())["id"]
    updated = await gw.put(f"/api/webhooks/{hook_id}", json={"webhook_url": url}, headers=auth())
    assert updated.status == 400 and "'webhook_url'" in (await updated.json())["message"]


async def test_the_test_endpoint_refuses_a_stored_internal_url_without_connecting(
    make_gateway: GatewayFactory, receiver: WebhookReceiver
) -> None:
    # Stored while the receiver's address was allowed; the policy changed since (another replica).
    allowing = await make_gateway(outbound_allow=RECEIVER_ALLOW)
    created = await allowing.post("/api/webhooks", json=_hook(receiver.url("/h")), headers=auth())
    hook_id = (await created.json())["id"]
    strict = await make_gateway(outbound_allow=[])
    tested = await strict.post(f"/api/webhooks/{hook_id}/test", headers=auth())
    assert tested.status == 400 and "'webhook_url'" in (await tested.json())["message"]
    assert receiver.received() == []


async def test_the_test_endpoint_reports_the_status_never_the_body(gw: Client, receiver: WebhookReceiver) -> None:
    receiver.script("/h", status(500, b"redis_version:7.2.4 secret-internal-banner"))
    created = await gw.post("/api/webhooks", json=_hook(receiver.url("/h")), headers=auth())
    hook_id = (await created.json())["id"]
    tested = await gw.post(f"/api/webhooks/{hook_id}/test", headers=auth())
    text = await tested.text()
    assert tested.status == 502
    assert "HTTP 500" in text
    assert "redis_version" not in text and "secret" not in text
    receiver.script("/h", status(200, b"private answer"))
    sent = await gw.post(f"/api/webhooks/{hook_id}/test", headers=auth())
    assert sent.status == 200
    assert await sent.json() == {"id": hook_id, "status": "sent", "http_status": 200}


async def test_a_closed_port_and_an_open_one_look_alike_to_the_test_endpoint(make_gateway: GatewayFactory) -> None:
    # Without the allow setting neither is even tried: the port scanner of issue 13 is gone.
    gw = await make_gateway(outbound_allow=[])
    for port in (1, 6379):
        created = await gw.post("/api/webhooks", json=_hook(f"http://127.0.0.1:{port}/"), headers=auth())
        assert created.status == 400


async def test_test_deliveries_are_capped_per_user(gw: Client, receiver: WebhookReceiver) -> None:
    receiver.script("/h", status(200, b"ok"))
    hooks = []
    for _ in range(2):  # the cap is the user's, whichever webhook is tested
        created = await gw.post("/api/webhooks", json=_hook(receiver.url("/h")), headers=auth("tester"))
        hooks.append((await created.json())["id"])
    sent = [
        (await gw.post(f"/api/webhooks/{hooks[i % 2]}/test", headers=auth("tester"))).status
        for i in range(TEST_SENDS_PER_MINUTE + 1)
    ]
    assert sent == [200] * TEST_SENDS_PER_MINUTE + [429]
    assert len(receiver.received()) == TEST_SENDS_PER_MINUTE
    other = await gw.post("/api/webhooks", json=_hook(receiver.url("/h")), headers=auth("someone-else"))
    other_id = (await other.json())["id"]
    assert (await gw.post(f"/api/webhooks/{other_id}/test", headers=auth("someone-else"))).status == 200
