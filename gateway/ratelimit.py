"""Per-client-IP rate limit shared by every gateway replica through Redis (fixed one-minute window)."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import redis.asyncio as aioredis

# INCR and EXPIRE in one atomic step: a crash between them must not leave a key without expiry.
_SCRIPT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return count
"""
WINDOW_MS = 60_000
# Requests beyond this many in flight wait for a Redis connection instead of exhausting the pool.
MAX_CONCURRENT_CHECKS = 32
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Decision:
    """Whether a request may pass, and what to tell the client."""

    allowed: bool
    limit: int
    remaining: int
    retry_after_seconds: int


class RateLimiter:
    """Count requests per client key in Redis; allow ``limit`` per minute."""

    def __init__(self, redis: aioredis.Redis, limit: int, clock: Callable[[], float] = time.time) -> None:
        self._redis = redis
        self._limit = limit
        self._clock = clock
        self._script = redis.register_script(_SCRIPT)
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_CHECKS)

    async def hit(self, client: str) -> Decision:
        """Count one request of ``client`` and decide."""
        now_ms = int(self._clock() * 1000)
        window = now_ms // WINDOW_MS
        key = f"screener:ratelimit:{client}:{window}"
        async with self._slots:
            count = int(await self._script(keys=[key], args=[WINDOW_MS + 5000]))
        remaining = max(0, self._limit - count)
        until_next_window_ms = (window + 1) * WINDOW_MS - now_ms
        retry_after = max(1, -(-until_next_window_ms // 1000)) if count > self._limit else 0
        return Decision(count <= self._limit, self._limit, remaining, retry_after)


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Return the networks of trusted proxies given as addresses or CIDRs."""
    return tuple(ipaddress.ip_network(v.strip(), strict=False) for v in values if v.strip())


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def client_ip(peer: str | None, forwarded_for: str | None, trusted: tuple[IPNetwork, ...]) -> str:
    """Return the client's address.

    ``X-Forwarded-For`` is believed only when the direct peer is a trusted proxy; the list is read
    from the right, skipping trusted proxies, so a client cannot prepend a forged address.
    """
    address = _ip(peer or "")
    if address is None:
        return peer or "unknown"
    if not forwarded_for or not any(address in net for net in trusted):
        return str(address)
    for hop in reversed(forwarded_for.split(",")):
        hop_ip = _ip(hop)
        if hop_ip is None:
            break  # garbage in the chain: stop believing it at that point
        if not any(hop_ip in net for net in trusted):
            return str(hop_ip)
        address = hop_ip
    return str(address)
