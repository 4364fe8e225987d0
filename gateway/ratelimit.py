"""Rate limit per user or per client IP, shared by every gateway replica through Redis.

client.md, decision 10: a sliding window, not a fixed one. Each key keeps the instants of its
admitted requests of the last minute in a sorted set, so no 60-second span ever admits more than
``limit`` requests; a fixed window would let a client send ``2 * limit`` across a minute boundary.

Open connections are counted per process (``ConnectionCounter``): the TCP cap per address
(``gateway.server``) and the WebSocket cap per user or IP (``gateway.ws``) both hold their counts in one.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import redis.asyncio as aioredis

# One atomic step: drop instants older than the window, count, admit (add this instant) or refuse.
# Returns {admitted (0/1), count after, oldest instant still in the window}. A refused request is
# not recorded, so a client that backs off is admitted again as soon as its oldest request ages out.
_SCRIPT = """
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
local admitted = 0
if count < limit then
    redis.call('ZADD', KEYS[1], now, ARGV[4])
    count = count + 1
    admitted = 1
end
redis.call('PEXPIRE', KEYS[1], window + 1000)
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {admitted, count, tonumber(oldest[2] or now)}
"""
WINDOW_MS = 60_000
# Requests beyond this many in flight wait for a Redis connection instead of exhausting the pool.
MAX_CONCURRENT_CHECKS = 32
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# The IPv6 prefix one client is counted by (the customary size of one site's or host's allocation).
IPV6_CLIENT_PREFIX = 64


@dataclass(frozen=True)
class Decision:
    """Whether a request may pass, and what to tell the client."""

    allowed: bool
    limit: int
    remaining: int
    retry_after_seconds: int


class RateLimiter:
    """Admit at most ``limit`` requests per client key in any 60-second span (Redis sorted sets)."""

    def __init__(self, redis: aioredis.Redis, limit: int, clock: Callable[[], float] = time.time) -> None:
        self._redis = redis
        self._limit = limit
        self._clock = clock
        self._script = redis.register_script(_SCRIPT)
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_CHECKS)
        # Members must be unique per request: two requests in the same millisecond are two entries.
        self._serial = itertools.count()
        self._process = f"{os.getpid():x}.{id(self):x}"

    async def hit(self, client: str) -> Decision:
        """Count one request of ``client`` (``ip:<addr>`` or ``user:<id>``) and decide."""
        now_ms = int(self._clock() * 1000)
        key = f"screener:ratelimit:{client}"
        member = f"{now_ms}:{self._process}:{next(self._serial)}"
        async with self._slots:
            admitted, count, oldest = await self._script(keys=[key], args=[now_ms, WINDOW_MS, self._limit, member])
        remaining = max(0, self._limit - int(count))
        if admitted:
            return Decision(True, self._limit, remaining, 0)
        # The next slot frees when the oldest admitted request leaves the window.
        wait_ms = int(oldest) + WINDOW_MS - now_ms
        return Decision(False, self._limit, 0, max(1, -(-wait_ms // 1000)))


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Return the networks of trusted proxies given as addresses or CIDRs."""
    return tuple(ipaddress.ip_network(v.strip(), strict=False) for v in values if v.strip())


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def client_bucket(ip: str) -> str:
    """Return what a client address is limited as: an IPv4 address itself, an IPv6 address its /64.

    An IPv6 host is normally given a whole /64 and may use any address in it, so counting single
    IPv6 addresses would give one client 2**64 rate limits and connection caps. An IPv4-mapped
    address counts as its IPv4 address.
    """
    address = _ip(ip)
    if not isinstance(address, ipaddress.IPv6Address):
        return ip
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, IPV6_CLIENT_PREFIX), strict=False))


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


class ConnectionCounter:
    """Open connections per holder (a user, or an anonymous client's IP), each held under a cap."""

    def __init__(self) -> None:
        self._open: dict[str, int] = {}

    def acquire(self, holder: str, cap: int) -> bool:
        """Count one more connection of ``holder``; return False (counting nothing) when it has ``cap``."""
        held = self._open.get(holder, 0)
        if held >= cap:
            return False
        self._open[holder] = held + 1
        return True

    def release(self, holder: str) -> None:
        """Count one connection of ``holder`` less."""
        held = self._open.get(holder, 0) - 1
        if held > 0:
            self._open[holder] = held
        else:
            self._open.pop(holder, None)
