"""Evaluate each symbol's minutes in ascending order, whatever order their events arrive in.

Cooldowns, ``on_change`` and ``recent()`` depend on the minutes before. With several worker loops or
replicas (and several calculator workers upstream), minute t+1 of a symbol may arrive before minute
t. So the rules keep, per symbol, the last minute evaluated (in Redis, hash-tagged by symbol), and
before evaluating a minute t whose predecessors were not evaluated yet they catch up: a missing minute
whose snapshot is already in the metrics store is evaluated first, from the store; one whose candle
is stored but whose metrics are not saved yet is waited for (a calculator worker is computing it:
briefly, then ``TransientError``); one without a candle is a gap, and one the store has already
evicted (the rules lag more than ``CATCH_UP_MINUTES`` behind) is computed again from the
rings. The late event of a caught-up minute later re-derives the same decisions and alert ids, so it
adds nothing.
"""

from __future__ import annotations

import asyncio
import struct
from collections import defaultdict
from collections.abc import Sequence
from typing import Protocol

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from functions.rules.recompute import RingRecompute
from screener.events.models import MINUTE_MS, WINDOWS, MetricsSnapshot
from screener.runtime.function import TransientError
from state import layout

KEY_PREFIX = "screener:rules"
# Predecessors further back than this are not looked for (the metrics store keeps this many minutes).
CATCH_UP_MINUTES = 10

_RAISE = """
local held = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) > held then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
end
return 1
"""


def evaluated_key(symbol: str) -> str:
    """Return the key of the last minute evaluated for ``symbol``."""
    return f"{KEY_PREFIX}:{{{symbol}}}:evaluated"


class SnapshotReader(Protocol):
    """The metrics store's read of one symbol at one minute."""

    async def at(self, symbol: str, minute: int) -> MetricsSnapshot | None:
        """Return ``symbol``'s snapshot of ``minute``, if stored."""
        ...

    async def latest_minute(self, symbol: str) -> int | None:
        """Return the newest minute stored for ``symbol``."""
        ...


class MinuteOrder:
    """Per-symbol order of evaluation, kept in Redis so every worker shares it."""

    def __init__(
        self,
        client: aioredis.Redis,
        store: SnapshotReader,
        *,
        wait_seconds: float = 5.0,
        poll_seconds: float = 0.05,
        ttl_seconds: int = 7 * 86400,
    ) -> None:
        self._client = client
        self._store = store
        self._recompute = RingRecompute(client)
        self._wait = wait_seconds
        self._poll = poll_seconds
        self._ttl = ttl_seconds
        self._raise: AsyncScript = client.register_script(_RAISE)

    async def complete(self, snapshots: Sequence[MetricsSnapshot]) -> list[MetricsSnapshot]:
        """Return ``snapshots`` plus the stored snapshots of minutes that must be evaluated before them.

        Raise ``TransientError`` when a predecessor's metrics are about to be saved.
        """
        minutes: dict[str, set[int]] = defaultdict(set)
        newest_of: dict[str, MetricsSnapshot] = {}
        for s in snapshots:
            if not s.provisional:
                minutes[s.symbol].add(s.minute)
                if s.symbol not in newest_of or s.minute > newest_of[s.symbol].minute:
                    newest_of[s.symbol] = s
        if not minutes:
            return list(snapshots)
        symbols = sorted(minutes)
        evaluated = await self._client.mget([evaluated_key(s) for s in symbols])
        extra: list[MetricsSnapshot] = []
        for symbol, raw in zip(symbols, evaluated, strict=True):
            if raw is None:
                continue  # never evaluated here: nothing to keep in order with
            last = int(raw)
            wanted = minutes[symbol]
            newest = max(wanted)
            first_missing = max(last + MINUTE_MS, newest - CATCH_UP_MINUTES * MINUTE_MS)
            for minute in range(first_missing, newest, MINUTE_MS):
                if minute not in wanted:
                    traded = _had_candle(newest_of[symbol], minute)
                    snapshot = await self._predecessor(symbol, minute, traded)
                    if snapshot is not None:
                        extra.append(snapshot)
        return [*snapshots, *extra]

    async def _predecessor(self, symbol: str, minute: int, traded: bool) -> MetricsSnapshot | None:
        """Return the stored snapshot of a minute not evaluated yet; None for a gap or one evicted.

        ``traded`` says the minute is known to have a candle (a later minute's window covered it).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait
        while True:
            snapshot = await self._store.at(symbol, minute)
            if snapshot is not None:
                return snapshot
            latest = await self._store.latest_minute(symbol)
            if latest is not None and latest >= minute + CATCH_UP_MINUTES * MINUTE_MS:
                # The store has moved past it (the rules lag behind): compute it again from the rings.
                return await self._recompute.snapshot(symbol, minute)
            if not traded and not await self._candle_stored(symbol, minute):
                return None  # no candle: a gap in the market, nothing to wait for
            # The candle is stored, so a calculator worker is computing it right now.
            if loop.time() >= deadline:
                raise TransientError(f"rules: waiting for the metrics of {symbol} at {minute}", 1.0)
            await asyncio.sleep(self._poll)

    async def record(self, snapshots: Sequence[MetricsSnapshot]) -> None:
        """Remember the newest minute evaluated per symbol (never moving back)."""
        newest: dict[str, int] = {}
        for s in snapshots:
            if not s.provisional:
                newest[s.symbol] = max(newest.get(s.symbol, s.minute), s.minute)
        if not newest:
            return
        async with self._client.pipeline(transaction=False) as pipe:
            for symbol, minute in newest.items():
                await self._raise(keys=[evaluated_key(symbol)], args=[str(minute), str(self._ttl)], client=pipe)
            await pipe.execute()

    async def _candle_stored(self, symbol: str, minute: int) -> bool:
        # Read the open time in the minute's slot of the calculator's 1-minute ring (state.layout).
        at = (minute // MINUTE_MS) % layout.CAPACITY * layout.ROW_BYTES
        raw = await self._client.getrange(layout.candles_key(symbol), at, at + 7)
        return isinstance(raw, bytes) and len(raw) == 8 and int(struct.unpack("<d", raw)[0]) == minute


def _had_candle(later: MetricsSnapshot, minute: int) -> bool:
    """Return whether ``later``'s metrics prove that ``minute`` had a candle.

    A window of ``later`` that spans ``minute`` with coverage 1 was computed from every one of its
    minutes, so that minute's candle exists even if a calculator worker has not stored it yet.
    """
    back = (later.minute - minute) // MINUTE_MS
    for name, size in WINDOWS.items():
        if back < size:
            frame = later.timeframes.get(name)
            return frame is not None and frame.coverage >= 1.0
    return False
