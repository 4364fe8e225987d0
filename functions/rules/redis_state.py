"""``FiringState`` in Redis: atomic decisions in a Lua script, the fast index behind ``recent()``.

Keys are hash-tagged by symbol (``screener:rules:{BTCUSDT}:fired:<rule>``) so that one symbol's
keys live in one Redis Cluster slot and a script can touch them together. Each key is a sorted set
of minutes (member and score: the minute's open time in ms), trimmed to the retention horizon.

The fired sets are the fast index of ``alert_history``: they are written by the same handler that
writes the history, before the input is acknowledged, and rebuilt from the table when Redis comes
back empty (``ensure_index``). The ``on_change`` "was true" sets cannot be rebuilt; after losing
Redis an ``on_change`` rule may fire once more for a predicate that was already true.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import asyncpg
import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from functions.rules.firing import Candidate, RecentQuery
from screener.events.models import MINUTE_MS

log = logging.getLogger(__name__)

KEY_PREFIX = "screener:rules"
INDEX_MARKER = f"{KEY_PREFIX}:index-built"

# KEYS[1]: fired minutes, KEYS[2]: minutes the predicate was true (on_change only)
# ARGV: minute, frequency, cooldown_ms, keep_from (oldest minute kept), ttl_seconds, previous minute
# Minutes travel as strings: Lua numbers would print large integers in exponent notation.
_DECIDE = """
local t = tonumber(ARGV[1])
local function tidy(key)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. ARGV[4])
  redis.call('EXPIRE', key, ARGV[5])
end
if ARGV[2] == 'on_change' then
  redis.call('ZADD', KEYS[2], ARGV[1], ARGV[1])
  tidy(KEYS[2])
end
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 1
end
local fire = 0
if ARGV[2] == 'cooldown' then
  local prev = redis.call('ZREVRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '-inf', 'LIMIT', 0, 1)
  if #prev == 0 or tonumber(prev[1]) <= t - tonumber(ARGV[3]) then fire = 1 end
elseif ARGV[2] == 'on_change' then
  if not redis.call('ZSCORE', KEYS[2], ARGV[6]) then fire = 1 end
else
  fire = 1
end
if fire == 1 then
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[1])
  tidy(KEYS[1])
end
return fire
"""


def fired_key(rule_type: str, symbol: str) -> str:
    """Return the key of the minutes ``rule_type`` fired at for ``symbol``."""
    return f"{KEY_PREFIX}:{{{symbol}}}:fired:{rule_type}"


def true_key(rule_type: str, symbol: str) -> str:
    """Return the key of the minutes ``rule_type``'s predicate was true for ``symbol`` (on_change)."""
    return f"{KEY_PREFIX}:{{{symbol}}}:true:{rule_type}"


class RedisFiringState:
    """Decide firings and answer ``recent()`` from Redis; ``retention_ms`` bounds what is kept."""

    def __init__(self, client: aioredis.Redis, retention_ms: int) -> None:
        self._client = client
        self._retention_ms = retention_ms
        self._ttl_seconds = max(3600, 2 * retention_ms // 1000)
        self._script: AsyncScript = client.register_script(_DECIDE)

    async def decide(self, candidates: Sequence[Candidate]) -> list[bool]:
        """Return, per candidate, whether it fires; record the firings (one round trip, EVALSHA)."""
        if not candidates:
            return []
        async with self._client.pipeline(transaction=False) as pipe:
            for c in candidates:
                await self._script(
                    keys=[fired_key(c.rule_type, c.symbol), true_key(c.rule_type, c.symbol)],
                    args=[
                        str(c.minute),
                        c.frequency,
                        str(c.cooldown_ms),
                        str(c.minute - self._retention_ms),
                        str(self._ttl_seconds),
                        str(c.minute - MINUTE_MS),
                    ],
                    client=pipe,
                )
            results = await pipe.execute()
        return [int(r) == 1 for r in results]

    async def recent(self, queries: Sequence[RecentQuery]) -> list[bool]:
        """Return, per query, whether the rule fired for the symbol in ``[start, end)``."""
        if not queries:
            return []
        async with self._client.pipeline(transaction=False) as pipe:
            for q in queries:
                pipe.zcount(fired_key(q.rule_type, q.symbol), str(q.start), f"({q.end}")
            counts = await pipe.execute()
        return [int(n) > 0 for n in counts]

    async def ensure_index(self, conn: asyncpg.Connection | asyncpg.Pool) -> int:
        """Rebuild the fired sets from ``alert_history`` if Redis lost them; return the rows loaded."""
        if await self._client.exists(INDEX_MARKER):
            return 0
        rows = await conn.fetch(
            """SELECT rule_type, symbol, (extract(epoch FROM minute) * 1000)::bigint AS minute
               FROM alert_history
               WHERE minute >= (SELECT max(minute) FROM alert_history) - make_interval(secs => $1)""",
            self._retention_ms / 1000,
        )
        async with self._client.pipeline(transaction=False) as pipe:
            for row in rows:
                key = fired_key(row["rule_type"], row["symbol"])
                pipe.zadd(key, {str(row["minute"]): row["minute"]})
                pipe.expire(key, self._ttl_seconds)
            pipe.set(INDEX_MARKER, "1")
            await pipe.execute()
        if rows:
            log.info("rebuilt the recent-alerts index from alert_history: %d alerts", len(rows))
        return len(rows)
