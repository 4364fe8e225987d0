"""Several gateway processes behind one port (SO_REUSEPORT): each serves, each fans alerts out."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import aiohttp
from nats.aio.client import Client as NATS

from gateway.app import serve
from screener.embedded.servers import free_port
from tests.gateway.conftest import gateway_settings
from tests.gateway.helpers import make_alert, publish_alert

TIMEOUT = 10.0


async def until_ready(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise AssertionError(f"{url} never became ready")


async def test_two_gateways_share_one_port_and_both_deliver_alerts(
    postgres_dsn: str, redis_url: str, nats_url: str, nats_client: NATS, pool: Any
) -> None:
    port = free_port()
    settings = gateway_settings(
        gateway_port=port, gateway_reuse_port=True, postgres_dsn=postgres_dsn, redis_url=redis_url, nats_url=nats_url
    )
    stops = [asyncio.Event(), asyncio.Event()]
    first = asyncio.create_task(serve(settings, stops[0]))
    await until_ready(f"http://127.0.0.1:{port}/health/ready")
    second = asyncio.create_task(serve(settings, stops[1]))  # would fail with EADDRINUSE without SO_REUSEPORT
    try:
        await asyncio.sleep(0.5)
        assert not second.done(), second.exception() if second.done() else None
        async with aiohttp.ClientSession() as session:
            # The kernel spreads connections over both listeners; every one gets the alert all the same.
            sockets = [await session.ws_connect(f"ws://127.0.0.1:{port}/ws/alerts") for _ in range(16)]
            await asyncio.sleep(0.3)
            alert = make_alert("BTCUSDT")
            await publish_alert(nats_client, alert)
            for ws in sockets:
                message = await ws.receive(timeout=TIMEOUT)
                assert json.loads(message.data)["id"] == alert.id
            for ws in sockets:
                await ws.close()
    finally:
        for stop in stops:
            stop.set()
        await asyncio.gather(first, second, return_exceptions=True)
