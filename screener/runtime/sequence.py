"""Per-symbol order of processing across retries, restarts and replicas: the stream decides.

The collector publishes each symbol's candles in minute order on the symbol's own subject, and the
calculator publishes each symbol's metrics in the same order, so a subject's messages in stream order
are the symbol's minutes in order. Deliveries are not: two fetch loops, two replicas or a redelivery
after ``ack_wait`` can hand minute t+1 to a worker before minute t. A function that must see a
symbol's minutes in order (rolling windows, cooldowns, ``on_change``) keeps, per symbol, the
``Position`` of the last message it finished (its minute and stream sequence), and takes a message
only when it is that position's successor on its subject:

- the next minute (t + 1 after t) is the successor at once: nothing can lie between them;
- otherwise the stream is asked for the first message on the subject after the position (one
  direct read); a message that is not it waits (``PartialBatch``) until the one before it is done;
- a message at or before the position was done already.

So a real gap in the market needs no guessing and no grace period, and a killed worker's messages
hold their symbols back only until JetStream redelivers them. Positions live in Redis (hash-tagged by
symbol); when Redis has lost one, ``fallback`` recovers it from durable output (the function's own
stream or its database), and with nothing to recover, the first message of the subject in the
stream is the first to take.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg
from nats.js.errors import NotFoundError
from redis.commands.core import AsyncScript

from screener.events.models import MINUTE_MS

log = logging.getLogger(__name__)

KEY_PREFIX = "screener:position"

# KEYS: one position key per symbol; ARGV: "minute:sequence" per key. A position only moves forward.
_ADVANCE = """
for i, key in ipairs(KEYS) do
  local new = ARGV[i]
  local held = redis.call('GET', key)
  local sep = string.find(new, ':', 1, true)
  local minute = tonumber(string.sub(new, 1, sep - 1))
  if not held or tonumber(string.sub(held, 1, string.find(held, ':', 1, true) - 1)) < minute then
    redis.call('SET', key, new, 'EX', ARGV[#KEYS + 1])
  end
end
return #KEYS
"""


@dataclass(frozen=True, order=True)
class Position:
    """The last message a function finished for a symbol: its minute and stream sequence (0: unknown)."""

    minute: int
    sequence: int = 0

    def encode(self) -> str:
        """Return the position as Redis keeps it."""
        return f"{self.minute}:{self.sequence}"

    @classmethod
    def decode(cls, raw: bytes | str) -> Position:
        """Return the position Redis kept."""
        text = raw.decode() if isinstance(raw, bytes) else raw
        minute, _, sequence = text.partition(":")
        return cls(int(minute), int(sequence or 0))


@dataclass(frozen=True)
class Pending:
    """A delivered message waiting for its turn: its index in the batch, symbol, minute and stream sequence."""

    index: int
    symbol: str
    minute: int
    sequence: int


def newest_positions(entries: Iterable[tuple[str, int, int]]) -> dict[str, Position]:
    """Return each symbol's newest position among ``(symbol, minute, stream sequence)`` entries."""
    newest: dict[str, Position] = {}
    for symbol, minute, sequence in entries:
        position = Position(minute, sequence)
        if symbol not in newest or newest[symbol] < position:
            newest[symbol] = position
    return newest


Fallback = Callable[[Sequence[str]], Awaitable[Mapping[str, Position]]]
# The minute a stored message carries, or None for one the function rejects (it is dead-lettered).
MinuteOf = Callable[[RawStreamMsg], int | None]
# Messages a successor search steps over (dead letters, old duplicates) before it gives up.
_MAX_SKIPS = 256


class Sequencer:
    """Decide, per symbol, which delivered messages are next in stream order."""

    def __init__(
        self,
        redis: aioredis.Redis,
        name: str,
        *,
        stream: str,
        subject_prefix: str,
        js: JetStreamContext | None = None,
        minute_of: MinuteOf | None = None,
        fallback: Fallback | None = None,
        ttl_seconds: int = 7 * 86400,
    ) -> None:
        """Keep ``name``'s positions in ``redis``; read ``stream`` through ``js`` to find successors."""
        self._redis = redis
        self._name = name
        self._stream = stream
        self._prefix = subject_prefix
        self._js = js
        self._minute_of = minute_of
        self._fallback = fallback
        self._ttl = ttl_seconds
        self._advance: AsyncScript = redis.register_script(_ADVANCE)
        # symbol -> (position, stream sequence of a valid message after it): while the position has
        # not moved, any later message still waits, with no need to ask the stream again.
        self._blocker: dict[str, tuple[Position | None, int]] = {}
        self.lookups = 0

    def key(self, symbol: str) -> str:
        """Return the Redis key of ``symbol``'s position."""
        return f"{KEY_PREFIX}:{self._name}:{{{symbol}}}"

    async def positions(self, symbols: Sequence[str]) -> dict[str, Position | None]:
        """Return each symbol's position (None: never processed, as far as anything remembers)."""
        if not symbols:
            return {}
        raw = await self._redis.mget([self.key(s) for s in symbols])
        found: dict[str, Position | None] = {
            s: Position.decode(r) if r is not None else None for s, r in zip(symbols, raw, strict=True)
        }
        lost = [s for s, p in found.items() if p is None]
        if lost and self._fallback is not None:
            recovered = await self._fallback(lost)
            if recovered:
                log.info("%s: positions of %d symbols recovered from durable output", self._name, len(recovered))
                found.update(recovered)
        return found

    async def advance(self, positions: Mapping[str, Position]) -> None:
        """Record that each symbol's messages up to its position are done (never moves back)."""
        if not positions:
            return
        symbols = sorted(positions)
        args = [positions[s].encode() for s in symbols]
        await self._advance(keys=[self.key(s) for s in symbols], args=[*args, str(self._ttl)])

    async def take_in_order(
        self, pending: Iterable[Pending], *, horizon_minutes: int | None = None
    ) -> tuple[list[int], list[int]]:
        """Return the indices of the messages to process now, in order, and of those that must wait.

        Per symbol, messages are taken while each is its position's successor; the first that is not
        (or that lies more than ``horizon_minutes`` past the minute before the first one taken) waits,
        with every later one. Messages at or before the position were done already and are in neither
        list.
        """
        by_symbol: dict[str, list[Pending]] = defaultdict(list)
        for item in pending:
            by_symbol[item.symbol].append(item)
        positions = await self.positions(sorted(by_symbol))
        taken: list[int] = []
        waiting: list[int] = []
        for symbol, items in by_symbol.items():
            items.sort(key=lambda item: (item.minute, item.sequence))
            done = positions.get(symbol)
            horizon: int | None = None
            if horizon_minutes is not None:
                # Counted from the minute before the first one to take: after a gap (an exchange's
                # maintenance of hours) that is the first candle after it, not the last one done,
                # which the horizon would otherwise hold the symbol's every later candle against.
                ahead = next((i.minute for i in items if done is None or i.minute > done.minute), items[0].minute)
                horizon = ahead - MINUTE_MS + horizon_minutes * MINUTE_MS
            blocked = False
            for item in items:
                if blocked or (horizon is not None and item.minute > horizon):
                    blocked = True
                    waiting.append(item.index)
                elif done is not None and item.minute <= done.minute:
                    continue  # done already (a redelivery after its output was published)
                elif await self.is_successor(symbol, done, item.minute, item.sequence):
                    taken.append(item.index)
                    done = Position(item.minute, item.sequence)
                else:
                    blocked = True
                    waiting.append(item.index)
        return taken, waiting

    async def is_successor(self, symbol: str, done: Position | None, minute: int, sequence: int) -> bool:
        """Return whether the message (``minute``, ``sequence``) of ``symbol`` comes right after ``done``.

        Messages between them that the function rejects (dead letters) or that repeat a minute already
        done are stepped over.
        """
        if done is not None and minute == done.minute + MINUTE_MS:
            return True  # the next minute: nothing can lie between
        if self._js is None or sequence <= 0 or (done is not None and done.sequence <= 0):
            # No stream to ask (the HTTP adapter, a unit test): order by minute alone.
            return done is None or minute > done.minute
        known = self._blocker.get(symbol)
        if known is not None and known[0] == done and known[1] < sequence:
            return False  # the message found last time still lies between
        after = done.sequence + 1 if done is not None else 1
        subject = f"{self._prefix}.{symbol}"
        for _ in range(_MAX_SKIPS):
            if after >= sequence:
                return True
            self.lookups += 1
            try:
                message = await self._js.get_msg(self._stream, seq=after, subject=subject, next=True)
            except NotFoundError:
                return True  # nothing stored before it any more (age limit): nothing to wait for
            found = message.seq or 0
            if found >= sequence:
                return True
            earlier = self._minute_of(message) if self._minute_of is not None else minute - MINUTE_MS
            if earlier is not None and (done is None or earlier > done.minute) and earlier <= minute:
                self._blocker[symbol] = (done, found)
                return False  # a valid earlier message of this symbol is not done yet
            after = found + 1
        return False
