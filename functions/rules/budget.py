"""A cap on the alerts one user's own rules raise per minute, kept in Redis so every worker shares it.

A user may hold 50 rules, each allowed to fire once per closed minute for every symbol: 50 always-true
rules would raise 32,500 alerts a minute, each stored, published and delivered, slowing every other
user's alerts on the way. The shipped (and admin) rules have no owner and no cap; a user's rules share
``user_alerts_per_minute`` per minute of market time, across all symbols and workers.

Which alerts are kept must not depend on a crash: an alert admitted once is admitted again when its
batch is redelivered. So the budget of an (owner, minute) is the set of alert ids it admitted (alert
ids are deterministic), not a counter: an id already in the set is kept, a new one joins while the
set is below the cap, anything else is dropped, all in one Lua call per owner and minute. A dropped
firing still counts as fired for the rule's frequency (cooldown, ``on_change``): the cap limits what
is stored and delivered, not what the rule decided.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from functions.rules.redis_state import KEY_PREFIX
from screener.events.models import Alert

log = logging.getLogger(__name__)

# Long enough for a minute to be redelivered after an outage; bounded so abuse costs bounded memory
# (at most the cap's ids per owner per minute of this window).
BUDGET_TTL_SECONDS = 2 * 3600

# KEYS[1]: the ids admitted for one owner and minute. ARGV: cap, ttl, then the candidate ids.
# Returns one flag per candidate: 1 kept, 0 dropped.
_ADMIT = """
local cap = tonumber(ARGV[1])
local kept = {}
local added = false
for i = 3, #ARGV do
  if redis.call('SISMEMBER', KEYS[1], ARGV[i]) == 1 then
    kept[#kept + 1] = 1
  elseif redis.call('SCARD', KEYS[1]) < cap then
    redis.call('SADD', KEYS[1], ARGV[i])
    added = true
    kept[#kept + 1] = 1
  else
    kept[#kept + 1] = 0
  end
end
if added then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return kept
"""


def budget_key(owner: str, minute: int) -> str:
    """Return the key of the alert ids admitted for ``owner``'s rules at ``minute`` (hash-tagged by owner)."""
    return f"{KEY_PREFIX}:budget:{{{owner}}}:{minute}"


class OwnerAlertBudget:
    """Keep at most ``per_minute`` alerts of each user's own rules per minute; drop and count the rest."""

    def __init__(self, client: aioredis.Redis, per_minute: int) -> None:
        self._per_minute = per_minute
        self._script: AsyncScript = client.register_script(_ADMIT)
        self._client = client
        self.dropped = 0

    async def admit(self, alerts: Sequence[Alert]) -> list[Alert]:
        """Return ``alerts`` without those over their owner's budget, in their order."""
        owned: dict[tuple[str, int], list[int]] = defaultdict(list)
        for index, alert in enumerate(alerts):
            if alert.audience.owner is not None:
                owned[(alert.audience.owner, alert.minute)].append(index)
        if not owned:
            return list(alerts)
        async with self._client.pipeline(transaction=False) as pipe:
            for (owner, minute), indices in owned.items():
                ids = [alerts[i].id for i in indices]
                await self._script(
                    keys=[budget_key(owner, minute)], args=[self._per_minute, BUDGET_TTL_SECONDS, *ids], client=pipe
                )
            replies = await pipe.execute()
        dropped: set[int] = set()
        for ((owner, minute), indices), flags in zip(owned.items(), replies, strict=True):
            over = [index for index, flag in zip(indices, flags, strict=True) if not int(flag)]
            if over:
                log.warning(
                    "rules: %d alerts of user %s's rules at minute %d dropped: over %d a minute",
                    len(over), owner, minute, self._per_minute,
                )  # fmt: skip
                dropped.update(over)
        self.dropped += len(dropped)
        return [alert for index, alert in enumerate(alerts) if index not in dropped]
