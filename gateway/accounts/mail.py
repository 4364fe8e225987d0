"""The password-reset mail (decision 8), sent over SMTP with aiosmtplib."""

from __future__ import annotations

from dataclasses import dataclass, field
from email.message import EmailMessage
from urllib.parse import quote, unquote, urlsplit

import aiosmtplib

from screener.config import ConfigError

SEND_TIMEOUT_SECONDS = 15.0
_DEFAULT_PORTS = {"smtp": 25, "smtps": 465}


@dataclass(frozen=True)
class SmtpServer:
    """Where and how to send: ``smtps`` is TLS from the start, ``smtp`` upgrades with STARTTLS when offered."""

    host: str
    port: int
    implicit_tls: bool
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def describe(self) -> str:
        """Return the server without its credentials, for logs."""
        return f"{'smtps' if self.implicit_tls else 'smtp'}://{self.host}:{self.port}"


def parse_smtp_url(url: str) -> SmtpServer:
    """Return the server of ``SCREENER_SMTP_URL``; raise ``ConfigError`` naming the setting when malformed."""
    parts = urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ConfigError("SCREENER_SMTP_URL must look like smtp://[user:password@]host[:port] or smtps://...")
    try:
        port = parts.port or _DEFAULT_PORTS[parts.scheme]
    except ValueError:
        raise ConfigError("SCREENER_SMTP_URL has an invalid port") from None
    return SmtpServer(
        host=parts.hostname,
        port=port,
        implicit_tls=parts.scheme == "smtps",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


class ResetMailer:
    """Send the link ``<frontend origin>/reset-password?token=<raw token>`` that the web client's page reads."""

    def __init__(self, server: SmtpServer, sender: str, frontend_origin: str) -> None:
        self._server = server
        self._sender = sender
        self._origin = frontend_origin.rstrip("/")

    @property
    def server(self) -> SmtpServer:
        """Return the SMTP server mail goes through."""
        return self._server

    def reset_link(self, raw_token: str) -> str:
        """Return the link of the reset page for ``raw_token``."""
        return f"{self._origin}/reset-password?token={quote(raw_token, safe='')}"

    def reset_message(self, to: str, raw_token: str) -> EmailMessage:
        """Return the reset mail to ``to``."""
        message = EmailMessage()
        message["From"] = self._sender
        message["To"] = to
        message["Subject"] = "Reset your screener password"
        message.set_content(
            "Someone (hopefully you) asked to reset the password of this screener account.\n\n"
            f"Choose a new password here within the hour:\n{self.reset_link(raw_token)}\n\n"
            "The link works once. If you did not ask for it, ignore this mail: your password stays as it is.\n"
        )
        return message

    async def send_reset(self, to: str, raw_token: str) -> None:
        """Send the reset mail; raise ``aiosmtplib.SMTPException`` or ``OSError`` when the server refuses."""
        server = self._server
        await aiosmtplib.send(
            self.reset_message(to, raw_token),
            hostname=server.host,
            port=server.port,
            username=server.username,
            password=server.password,
            use_tls=server.implicit_tls,
            timeout=SEND_TIMEOUT_SECONDS,
        )
