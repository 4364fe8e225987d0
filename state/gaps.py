"""When each hole in a symbol's recent minutes was first seen, shared by all workers through Redis.

A hole (a minute missing between stored ones) is either a real gap or a candle still on its way in
another batch. The calculator waits a grace period from the first sighting, by any worker, before it
takes the hole as a gap (functions/calculator/function.py, docs/state.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from state import layout

# Holes stay in the 1d window for a day; remember them a little longer, then let the key expire.
RECORD_SECONDS = 2 * 24 * 3600

# Record the first sighting of each hole (ARGV[2..]) at ARGV[1]; return the latest first sighting.
_SIGHT = f"""
local newest = 0
for i = 2, #ARGV do
  redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[1])
  local seen = tonumber(redis.call('HGET', KEYS[1], ARGV[i]))
  if seen > newest then newest = seen end
end
redis.call('EXPIRE', KEYS[1], {RECORD_SECONDS})
return tostring(newest)
"""
_SIGHT_SHA = hashlib.sha1(_SIGHT.encode()).hexdigest()  # Redis names scripts by SHA-1


async def first_sightings(redis: aioredis.Redis, holes: Mapping[str, Collection[int]], now: float) -> float:
    """Record ``holes`` (symbol -> missing minutes) as seen at ``now``; return the latest first sighting.

    One round trip (one script call per symbol, in a pipeline).
    """
    symbols = [s for s in sorted(holes) if holes[s]]
    if not symbols:
        return float("-inf")
    for attempt in range(2):
        async with redis.pipeline(transaction=False) as pipe:
            for symbol in symbols:
                pipe.evalsha(_SIGHT_SHA, 1, layout.gap_key(symbol), repr(now), *sorted(holes[symbol]))
            replies = await pipe.execute(raise_on_error=False)
        if attempt == 0 and any(isinstance(r, NoScriptError) for r in replies):
            await redis.script_load(_SIGHT)
            continue
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return max(float(r) for r in replies)
    raise AssertionError("unreachable")
