"""The latest metrics snapshot of every symbol, and its last few minutes, in Redis.

Per symbol, one hash ``ms:{SYMBOL}``: field ``minute`` is the latest closed minute saved, fields
``m:<i>`` hold the snapshots of the last ``history_minutes`` minutes (i = minute index modulo that),
each a fixed row of float64 (``state.snapshot_codec``). Provisional snapshots (the forming minute) live apart, in
``ms:{SYMBOL}:provisional``, so they can never overwrite a closed one. The set ``ms:symbols`` lists
the tracked symbols. Every operation costs a constant number of round trips, whatever the symbol count.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from screener.events.models import MINUTE_MS, MetricsSnapshot
from state import snapshot_codec

HISTORY_MINUTES = 10
# Symbols other symbols' rules read at the same minute (``BTC.c1h``, rules.md) keep a day of history:
# rules that lag far behind the calculator (a backlog, a replay at full speed, a restart) must still
# find them, exactly, long after the rings have moved past that minute.
REFERENCE_SYMBOLS = frozenset({"BTCUSDT", "ETHUSDT"})
REFERENCE_HISTORY_MINUTES = 1440


def history_minutes(symbol: str) -> int:
    """Return how many past minutes of ``symbol``'s snapshots the store keeps."""
    return REFERENCE_HISTORY_MINUTES if symbol in REFERENCE_SYMBOLS else HISTORY_MINUTES


SYMBOLS_KEY = "ms:symbols"
# Set once this Redis' snapshots have been restored from the published metrics: its absence means
# Redis lost them (restarted empty, flushed), or never had any (functions.calculator.restore).
RESTORED_KEY = "ms:restored"

# Save one symbol's snapshot: history slot always (unless older than the history), ``minute`` and
# the provisional snapshot only forward, so a late or redelivered minute never rolls the latest back.
_SAVE = """
local minute = tonumber(ARGV[1])
local held = tonumber(redis.call('HGET', KEYS[1], 'minute') or '-1')
if ARGV[3] == '1' then
  local shown = tonumber(redis.call('HGET', KEYS[2], 'minute') or '-1')
  if minute >= shown and minute > held then
    redis.call('HSET', KEYS[2], 'minute', ARGV[1], 'data', ARGV[2])
  end
  return 0
end
if minute <= held - ARGV[4] * 60000 then
  return 0
end
redis.call('HSET', KEYS[1], 'm:' .. (minute / 60000 % ARGV[4]), ARGV[2])
if minute >= held then
  redis.call('HSET', KEYS[1], 'minute', ARGV[1])
end
return 1
"""

# Read one symbol's latest closed snapshot and, when asked, its provisional one.
_LATEST = """
local held = redis.call('HGET', KEYS[1], 'minute')
local closed = false
if held then
  closed = redis.call('HGET', KEYS[1], 'm:' .. (tonumber(held) / 60000 % ARGV[1]))
end
if ARGV[2] == '1' then
  return {closed, redis.call('HGET', KEYS[2], 'data')}
end
return {closed}
"""


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()  # Redis names scripts by SHA-1


def snapshots_key(symbol: str) -> str:
    """Return the key of ``symbol``'s closed snapshots."""
    return f"ms:{{{symbol}}}"


def provisional_key(symbol: str) -> str:
    """Return the key of ``symbol``'s provisional snapshot."""
    return f"ms:{{{symbol}}}:provisional"


@dataclass(frozen=True)
class PackedSnapshot:
    """A snapshot ready to store: its key fields and its packed bytes (``state.snapshot_codec``)."""

    symbol: str
    minute: int
    provisional: bool
    data: bytes


def pack_payload(payload: Mapping[str, Any]) -> PackedSnapshot:
    """Return a ``MetricsSnapshot.model_dump(mode="json")`` dict ready to store."""
    return PackedSnapshot(
        str(payload["symbol"]), int(payload["minute"]), bool(payload["provisional"]), snapshot_codec.pack(payload)
    )


def decode_snapshot(symbol: str, raw: bytes, provisional: bool = False) -> MetricsSnapshot:
    """Return ``symbol``'s snapshot stored as ``raw`` (in its provisional key when ``provisional``)."""
    return MetricsSnapshot.model_validate(snapshot_codec.unpack(symbol, raw, provisional))


class MetricsStore:
    """Save and read metrics snapshots (the gateway's and the rules' view of the calculator)."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis

    async def save(self, snapshots: Sequence[MetricsSnapshot]) -> None:
        """Store ``snapshots``: per symbol the latest closed and the last minutes; provisional apart."""
        await self.save_payloads([s.model_dump(mode="json") for s in snapshots])

    async def save_payloads(self, payloads: Sequence[Mapping[str, Any]]) -> None:
        """Store snapshots given as ``MetricsSnapshot.model_dump(mode="json")`` dicts."""
        await self.save_packed([pack_payload(p) for p in payloads])

    async def save_packed(self, snapshots: Sequence[PackedSnapshot]) -> None:
        """Store packed snapshots (the calculator packs a minute of symbols at once)."""
        if not snapshots:
            return
        calls = []
        for snapshot in snapshots:
            keys = [snapshots_key(snapshot.symbol), provisional_key(snapshot.symbol)]
            args = [
                snapshot.minute,
                snapshot.data,
                "1" if snapshot.provisional else "0",
                history_minutes(snapshot.symbol),
            ]
            calls.append((keys, args))
        symbols = sorted({s.symbol for s in snapshots})
        await self._scripts(_SAVE, calls, extra=lambda pipe: pipe.sadd(SYMBOLS_KEY, *symbols))

    async def latest(self, symbols: Sequence[str] | None = None, provisional: bool = False) -> list[MetricsSnapshot]:
        """Return the latest snapshot of each of ``symbols`` that has one (None: every tracked symbol).

        Sorted by symbol. With ``provisional``, a symbol's provisional snapshot replaces its closed one
        when it is of a later minute.
        """
        names = sorted(set(symbols) if symbols is not None else await self.tracked_symbols())
        if not names:
            return []
        calls = [
            ([snapshots_key(s), provisional_key(s)], [history_minutes(s), "1" if provisional else "0"]) for s in names
        ]
        replies = await self._scripts(_LATEST, calls)
        result = []
        for symbol, reply in zip(names, replies, strict=True):
            # The reply holds the closed snapshot, then (when asked) the provisional one.
            candidates = [decode_snapshot(symbol, raw, provisional=i == 1) for i, raw in enumerate(reply) if raw]
            if candidates:
                result.append(max(candidates, key=lambda s: (s.minute, not s.provisional)))
        return result

    async def at(self, symbol: str, minute: int) -> MetricsSnapshot | None:
        """Return ``symbol``'s closed snapshot of exactly ``minute`` if it is still kept."""
        raw = await self._redis.hget(snapshots_key(symbol), f"m:{minute // MINUTE_MS % history_minutes(symbol)}")
        if raw is None:
            return None
        snapshot = decode_snapshot(symbol, raw if isinstance(raw, bytes) else raw.encode())
        return snapshot if snapshot.minute == minute else None

    async def latest_minute(self, symbol: str) -> int | None:
        """Return the latest closed minute saved for ``symbol``, or None."""
        raw = await self._redis.hget(snapshots_key(symbol), "minute")
        return int(raw) if raw is not None else None

    async def claim_restore(self) -> bool:
        """Mark this Redis' snapshots as restored; return True if no one had (this caller restores them).

        The mark is set before the snapshots are saved: if Redis loses everything in between, the
        mark goes with it and the next claim restores again.
        """
        return bool(await self._redis.set(RESTORED_KEY, 1, nx=True))

    async def tracked_symbols(self) -> list[str]:
        """Return every symbol that has a saved snapshot, sorted."""
        members = await self._redis.smembers(SYMBOLS_KEY)
        return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)

    async def _scripts(self, script: str, calls: Sequence[tuple[list[str], list[Any]]], extra: Any = None) -> list[Any]:
        sha = _sha(script)
        for attempt in range(2):
            async with self._redis.pipeline(transaction=False) as pipe:
                for keys, args in calls:
                    pipe.evalsha(sha, len(keys), *keys, *args)
                if extra is not None:
                    extra(pipe)
                replies: list[Any] = await pipe.execute(raise_on_error=False)
            if attempt == 0 and any(isinstance(r, NoScriptError) for r in replies):
                await self._redis.script_load(script)  # idempotent scripts: rerun the whole pipeline
                continue
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
            return replies[: len(calls)]
        raise AssertionError("unreachable")
