"""Accounts tests: a gateway with a generous auth limit, and a real SMTP server (aiosmtpd) that keeps the mail."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.gateway.conftest import GatewayFactory

Client = TestClient[web.Request, web.Application]
FRONTEND = "https://app.example.test"


@dataclass
class Inbox:
    """The mail a local SMTP server received, as parsed messages."""

    messages: list[EmailMessage] = field(default_factory=list)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Keep one message (aiosmtpd's handler hook)."""
        assert isinstance(envelope.content, bytes)
        parsed = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        async with self.arrived:
            self.messages.append(parsed)
            self.arrived.notify_all()
        return "250 Message accepted"

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[EmailMessage]:
        """Return the messages once at least ``count`` have arrived."""
        async with asyncio.timeout(timeout), self.arrived:
            await self.arrived.wait_for(lambda: len(self.messages) >= count)
        return list(self.messages)


@pytest.fixture
async def smtp() -> AsyncIterator[tuple[str, Inbox]]:
    """Serve SMTP on a free local port; yield (``smtp://`` URL, inbox)."""
    inbox = Inbox()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(inbox, hostname="localhost"), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"smtp://127.0.0.1:{port}", inbox
    server.close()
    await server.wait_closed()


@pytest.fixture
async def accounts_gw(make_gateway: GatewayFactory) -> Client:
    """Return a gateway whose auth limit stays out of the way (its own tests lower it)."""
    return await make_gateway(auth_rate_limit_per_minute=100_000)


@pytest.fixture
async def mail_gw(make_gateway: GatewayFactory, smtp: tuple[str, Inbox]) -> tuple[Client, Inbox]:
    """Return a gateway that mails password resets to the local SMTP server, and that server's inbox."""
    url, inbox = smtp
    client = await make_gateway(
        auth_rate_limit_per_minute=100_000, smtp_url=url, mail_from="screener@example.test", frontend_origin=FRONTEND
    )
    return client, inbox
