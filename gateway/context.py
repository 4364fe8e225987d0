"""What every handler reaches through ``request.app[GATEWAY]``: settings, connections and services."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import asyncpg
import redis.asyncio as aioredis
from aiohttp import web
from nats.aio.client import Client as NATS

from gateway.auth import ANONYMOUS, Identity, TokenVerifier
from gateway.errors import ApiError, unauthorized
from gateway.fanout import Hub
from gateway.prom import Registry
from gateway.ratelimit import IPNetwork, RateLimiter
from gateway.switches import RuleSwitches
from screener.config import Settings
from screener.events.models import MetricsSnapshot

IDENTITY_KEY: web.RequestKey[Identity] = web.RequestKey("identity", Identity)
CLIENT_IP_KEY: web.RequestKey[str] = web.RequestKey("client_ip", str)
# Why a presented token was refused: public endpoints ignore it, ``require_user`` answers 401 with it.
TOKEN_ERROR_KEY: web.RequestKey[str] = web.RequestKey("token_error", str)
# A valid token whose account may not act (disabled, deleted, reset since): ``require_user`` raises it.
TOKEN_REFUSAL_KEY: web.RequestKey[ApiError] = web.RequestKey("token_refusal", ApiError)


class MetricsReader(Protocol):
    """The part of ``state.metrics_store.MetricsStore`` the gateway reads."""

    async def latest(self, symbols: list[str] | None = None) -> list[MetricsSnapshot]: ...

    async def tracked_symbols(self) -> list[str]: ...


@dataclass
class Gateway:
    """The gateway's collaborators, built once by ``create_app``."""

    settings: Settings
    pool: asyncpg.Pool
    redis: aioredis.Redis
    nc: NATS
    metrics: MetricsReader
    switches: RuleSwitches
    hub: Hub
    verifier: TokenVerifier
    limiter: RateLimiter
    registry: Registry
    trusted_proxies: tuple[IPNetwork, ...]


GATEWAY: web.AppKey[Gateway] = web.AppKey("gateway", Gateway)


def identity(request: web.Request) -> Identity:
    """Return the caller's identity (anonymous when no token was sent)."""
    found: Identity = request.get(IDENTITY_KEY, ANONYMOUS)
    return found


def require_user(request: web.Request) -> str:
    """Return the caller's user id; raise 401 when the request carries no valid token."""
    user_id = identity(request).user_id
    if user_id is None:
        refusal = request.get(TOKEN_REFUSAL_KEY)
        if refusal is not None:
            raise refusal
        refused = request.get(TOKEN_ERROR_KEY)
        if refused is not None:
            raise unauthorized(refused)
        raise unauthorized("this endpoint needs a token: send 'Authorization: Bearer <JWT>'", missing=True)
    return user_id
