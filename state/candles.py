"""Each symbol's 1-minute candles and bars in Redis: batched writes, read back in the same round trip.

The layout is in ``state.layout`` and docs/state.md. A batch of candles for many symbols is one
pipeline of one ``EVALSHA`` per symbol: one round trip however many candles and symbols.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import numpy.typing as npt
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from functions.calculator import carried, indicators
from screener.events.models import BAR_TIMEFRAMES, MINUTE_MS, Candle
from state import layout

FloatArray = npt.NDArray[np.float64]


def _source(timeframe: str) -> int:
    """Return where the write script reads a timeframe's closed bars: its bar ring's index, 0 for the 1-minute ring."""
    indices = {ring.timeframe: i for i, ring in enumerate(layout.BAR_RINGS, start=1)}
    return indices.get(timeframe, 0)


def _carried_constants() -> dict[str, float | int]:
    """Return the recursions' constants, written into the script exactly (repr round-trips a float64)."""
    return {
        "RSI_PERIOD": indicators.RSI_PERIOD,
        "MACD_FAST": indicators.MACD_FAST,
        "MACD_SLOW": indicators.MACD_SLOW,
        "MACD_SIGNAL": indicators.MACD_SIGNAL,
        "MACD_FIRST": carried.MACD_FIRST,
        "STEADY_BARS": carried.STEADY_BARS,
        "K_SLOW": carried.K_SLOW,
        "K_FAST": carried.K_FAST,
        "K_SIGNAL": carried.K_SIGNAL,
        "RSI_GAIN": carried.RSI_GAIN,
        "RSI_KEEP": carried.RSI_KEEP,
        "SLOW_KEEP": carried.SLOW_KEEP,
        "FAST_KEEP": carried.FAST_KEEP,
        "SIGNAL_KEEP": carried.SIGNAL_KEEP,
    }


assert len(carried.FIELDS) == layout.CARRY_STATE_FIELDS, "the carry record holds carried.FIELDS"
assert tuple(tf for tf, _ in layout.CARRY_TIMEFRAMES) == tuple(BAR_TIMEFRAMES), "a bar timeframe is not carried"

# The layout's constants are prepended, so each call passes only its candles (fewer arguments to pack).
WRITE_SCRIPT = (
    f"local CAPACITY = {layout.CAPACITY}\n"
    f"local LOG_ENTRIES = {layout.WRITE_LOG_ENTRIES}\n"
    f"local LOG_MAX_BYTES = {layout.WRITE_LOG_MAX_CANDLES * layout.ROW_BYTES}\n"
    f"local BAR_RINGS = {{{', '.join(f'{{{r.minutes}, {r.capacity}, {r.width}}}' for r in layout.BAR_RINGS)}}}\n"
    f"local MARGIN = {layout.MARGIN_MINUTES}\n"
    f"local CARRY_WIDTH = {layout.CARRY_WIDTH}\n"
    f"local CARRY_TFS = {{{', '.join(f'{{{minutes}, {_source(tf)}}}' for tf, minutes in layout.CARRY_TIMEFRAMES)}}}\n"
    + "".join(f"local {name} = {value!r}\n" for name, value in _carried_constants().items())
    + resources.files("state").joinpath("write_candles.lua").read_text()
)
WRITE_SCRIPT_SHA = hashlib.sha1(WRITE_SCRIPT.encode()).hexdigest()  # Redis names scripts by SHA-1

_BAR_INDEX: dict[str, int] = {ring.timeframe: i for i, ring in enumerate(layout.BAR_RINGS, start=1)}


class StateError(RuntimeError):
    """A symbol's state in Redis is missing or malformed; the message names the key."""


@dataclass(frozen=True)
class SymbolState:
    """One symbol's rings, decoded (views on the bytes Redis returned; read-only).

    ``candles`` is (CAPACITY, 8) in slot order, columns ``layout.CANDLE_FIELDS``; a slot whose
    ``open_time`` is not the minute asked for is a gap. ``previous_quote_volume`` is (CAPACITY,):
    slot i is the quote volume of minute ``candles[i, OPEN_TIME] - CAPACITY`` minutes, NaN if unknown.
    ``bars`` maps a timeframe of ``layout.BAR_RINGS`` to its (capacity, width) ring, columns
    ``ring.fields``: (tag, open, close) where the ring keeps opens, (tag, close) elsewhere.
    ``carry`` is the carried RSI and MACD state, ``layout.CARRY_WIDTH`` float64 (``layout.carry_offset``).
    """

    symbol: str
    candles: FloatArray
    previous_quote_volume: FloatArray
    bars: Mapping[str, FloatArray]
    carry: FloatArray
    created: bool = False

    def holds(self, minute: int) -> bool:
        """Return whether the 1-minute ring holds ``minute``'s candle."""
        slot = (minute // MINUTE_MS) % layout.CAPACITY
        return bool(self.candles[slot, layout.OPEN_TIME] == minute)

    def latest_minute(self) -> int | None:
        """Return the newest minute stored, or None for an empty ring."""
        newest = float(self.candles[:, layout.OPEN_TIME].max())
        return int(newest) if newest > 0 else None


@dataclass(frozen=True)
class SeedBar:
    """A closed bar of a native Binance interval, to seed a bar ring with."""

    timeframe: str
    open_time: int
    open: float
    close: float


def pack_candles(candles: Iterable[Candle]) -> bytes:
    """Return ``candles`` as ring slots: 8 little-endian float64 each (``layout.CANDLE_FIELDS``)."""
    rows = [(c.open_time, c.open, c.high, c.low, c.close, c.volume, c.quote_volume, c.trades) for c in candles]
    return np.asarray(rows, dtype="<f8").reshape(-1, len(layout.CANDLE_FIELDS)).tobytes()


def pack_seed_bars(bars: Iterable[SeedBar]) -> bytes:
    """Return ``bars`` as the write script's seed records (ring index, open time, open, close).

    The open reaches only the rings that keep opens; the others merge it as the bar's first minute
    (its offset in the tag) and drop its value.
    """
    rows = []
    for bar in bars:
        if bar.timeframe not in _BAR_INDEX:
            continue  # 5m bars are rebuilt from the 1-minute ring, which holds 1,250 minutes of them
        rows.append((_BAR_INDEX[bar.timeframe], bar.open_time, bar.open, bar.close))
    return np.asarray(rows, dtype="<f8").reshape(-1, 4).tobytes()


def decode_state(symbol: str, rings: Sequence[bytes | None], created: bool = False) -> SymbolState:
    """Decode ``symbol``'s rings (``layout.ring_keys`` order) as returned by Redis.

    Raise ``StateError`` naming the key of a ring whose length is not the layout's (a ring written by
    an older layout is never reinterpreted).
    """
    keys = layout.ring_keys(symbol)
    if len(rings) != len(keys):
        raise StateError(f"state of {symbol} is incomplete in Redis (keys {keys})")
    candles = _frombuffer(rings[0], keys[0], layout.CAPACITY * layout.ROW_BYTES)
    previous = _frombuffer(rings[1], keys[1], layout.CAPACITY * 8)
    bars = {
        ring.timeframe: _frombuffer(raw, key, ring.ring_bytes).reshape(ring.capacity, ring.width)
        for ring, key, raw in zip(layout.BAR_RINGS, keys[2:-1], rings[2:-1], strict=True)
    }
    carry = _frombuffer(rings[-1], keys[-1], layout.CARRY_BYTES)
    shaped = candles.reshape(layout.CAPACITY, len(layout.CANDLE_FIELDS))
    return SymbolState(symbol, shaped, previous, bars, carry, created)


def _frombuffer(raw: bytes | None, key: str, size: int) -> FloatArray:
    if not isinstance(raw, bytes) or len(raw) != size:
        got = f"{len(raw)} bytes" if isinstance(raw, bytes) else repr(raw)
        raise StateError(
            f"{key} has {got}, expected {size} bytes (written in another layout: the next write of the "
            "symbol starts its rings anew and the calculator rebuilds them; see docs/state.md)"
        )
    return np.frombuffer(raw, dtype="<f8")


class CandleStore:
    """The rings of every symbol, on one Redis (or Redis Cluster) client.

    With ``mirror``, the store keeps a copy of the rings it has seen, with their version. A write
    then ships only the candles: when the symbol's version in Redis is the mirror's (no other
    writer since), Redis replies with the new version alone and the store applies the same candles
    to its copy (``apply_candles``, the script's rules in numpy). When another writer wrote in
    between and its writes were small (a minute's burst), Redis replies with those candles from the
    symbol's write log, and the store applies them and its own; otherwise it replies with the rings.
    Without it, every write reads the rings back (about 132 KB per symbol).
    """

    def __init__(self, redis: aioredis.Redis, *, mirror: bool = False) -> None:
        self._redis = redis
        self._mirror: dict[str, tuple[int, SymbolState]] | None = {} if mirror else None
        self.mirror_hits = 0
        self.log_hits = 0

    async def write(
        self,
        candles: Sequence[Candle],
        *,
        read_back: bool = True,
        seeds: Sequence[tuple[str, SeedBar]] = (),
        also: Sequence[str] = (),
        create: bool = True,
        carries: Mapping[str, bytes] | None = None,
    ) -> dict[str, SymbolState]:
        """Store closed ``candles`` (any symbols, any order, repeats allowed); return the symbols' state.

        ``seeds`` are (symbol, bar) pairs to merge into the bar rings first; ``also`` names symbols to
        return without writing anything for them (with a mirror, only what changed is shipped). One
        round trip. With ``read_back`` False nothing is returned (warm start). With ``create`` False,
        a symbol that has no rings in Redis is left alone (nothing of it written) and absent from the
        result: the caller rebuilds its rings first (``state.warm_start``), then writes again.
        ``carries`` maps a symbol to the carried RSI and MACD state to set before its candles are
        written (``layout.CARRY_BYTES``; the warm start's, computed from the whole stored history).
        """
        carries = carries or {}
        by_symbol: dict[str, list[Candle]] = defaultdict(list)
        for candle in candles:
            by_symbol[candle.symbol].append(candle)
        seeds_by_symbol: dict[str, list[SeedBar]] = defaultdict(list)
        for symbol, bar in seeds:
            seeds_by_symbol[symbol].append(bar)
        symbols = sorted(set(by_symbol) | set(seeds_by_symbol) | set(also))
        packed = {s: pack_candles(by_symbol.get(s, ())) for s in symbols}
        packed_seeds = {s: pack_seed_bars(seeds_by_symbol.get(s, ())) for s in symbols}
        # What each call is based on: its reply may say "your copy plus these candles" (see the class doc).
        based = {sym: self._mirror.get(sym) for sym in symbols} if self._mirror is not None and read_back else {}
        calls = [
            (
                layout.state_keys(sym),
                [
                    packed[sym],
                    _known_version(based.get(sym)) if read_back else "no",
                    packed_seeds[sym],
                    "create" if create else "keep",
                    carries.get(sym, b""),
                ],
            )
            for sym in symbols
        ]
        replies = await self._run_script(calls)
        if not read_back:
            if self._mirror is not None:
                for sym in symbols:
                    self._mirror.pop(sym, None)
            return {}
        states = {}
        for sym, reply in zip(symbols, replies, strict=True):
            version, created = int(reply[0]), reply[1] == 1
            if created and len(reply) == 2:
                if self._mirror is not None:
                    self._mirror.pop(sym, None)
                continue  # no rings, none created (``create`` False)
            if len(reply) > 2 and reply[2] == b"log":
                # Another writer wrote since our copy, and the write log holds what it wrote: apply
                # that, then ours, to a copy (a concurrent call's reply may still grow the original).
                state = writable_copy(_mirror_copy(based, sym))
                for entry in reply[3:]:
                    apply_candles(state, entry[8:])  # after the version it made (a float64)
                apply_candles(state, packed[sym], packed_seeds[sym], carries.get(sym, b""))
                self.log_hits += 1
            elif len(reply) > 2:
                state = decode_state(sym, reply[2:], created)
                if self._mirror is not None:
                    state = writable_copy(state)
            else:
                # Redis held exactly our copy's version before these candles. Apply them to that copy
                # (which other calls may only have grown with candles Redis also holds), never to a
                # newer or older entry another call put in the mirror meanwhile.
                state = _mirror_copy(based, sym)
                apply_candles(state, packed[sym], packed_seeds[sym], carries.get(sym, b""))
                self.mirror_hits += 1
            if self._mirror is not None:
                held = self._mirror.get(sym)
                # Replies of concurrent calls may be processed out of order: only move forward.
                if held is None or held[0] < version:
                    self._mirror[sym] = (version, state)
            states[sym] = state
        return states

    def forget(self) -> None:
        """Drop the mirror (the next write of each symbol reads its rings back)."""
        if self._mirror is not None:
            self._mirror.clear()

    async def read(self, symbols: Sequence[str]) -> dict[str, SymbolState]:
        """Return the state of the ``symbols`` that have one (one round trip, nothing written)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for symbol in symbols:
                for key in layout.ring_keys(symbol):
                    pipe.get(key)
            raw = await pipe.execute()
        per_symbol = len(layout.ring_keys(""))
        states = {}
        for i, symbol in enumerate(symbols):
            rings = raw[i * per_symbol : (i + 1) * per_symbol]
            if rings[0] is not None:
                states[symbol] = decode_state(symbol, rings)
        return states

    async def window(self, symbols: Sequence[str], n_minutes: int) -> dict[str, FloatArray]:
        """Return the last ``n_minutes`` 1-minute candles of each symbol that has any (one round trip).

        Each array is (n_minutes, 8), columns ``state.layout.CANDLE_FIELDS``, row i the minute
        ``latest - (n_minutes - 1 - i)`` (oldest first) where ``latest`` is the symbol's newest stored
        minute. A minute that is not stored (a gap, or older than the ring) is a row of NaN, its
        ``open_time`` included. ``n_minutes`` is at most ``layout.CAPACITY``. For the gateway's 24h
        tickers (``window(symbols, 1440)``) and screener tables.
        """
        if not 1 <= n_minutes <= layout.CAPACITY:
            raise ValueError(f"n_minutes must be in 1..{layout.CAPACITY}, got {n_minutes}")
        async with self._redis.pipeline(transaction=False) as pipe:
            for symbol in symbols:
                pipe.get(layout.candles_key(symbol))
            raw = await pipe.execute()
        windows = {}
        for symbol, ring_bytes in zip(symbols, raw, strict=True):
            if ring_bytes is None:
                continue
            raw_ring = _frombuffer(ring_bytes, layout.candles_key(symbol), layout.CAPACITY * layout.ROW_BYTES)
            ring = raw_ring.reshape(layout.CAPACITY, -1)
            latest = float(ring[:, layout.OPEN_TIME].max())
            if latest <= 0:
                continue
            minutes = latest - MINUTE_MS * np.arange(n_minutes - 1, -1, -1, dtype=np.float64)
            rows = ring[(minutes // MINUTE_MS).astype(np.int64) % layout.CAPACITY]
            windows[symbol] = np.where((rows[:, layout.OPEN_TIME] == minutes)[:, None], rows, np.nan)
        return windows

    async def _run_script(self, calls: Sequence[tuple[list[str], list[Any]]]) -> list[Any]:
        """Run the write script once per call in one pipeline; load it once if Redis lost it."""
        for attempt in range(2):
            async with self._redis.pipeline(transaction=False) as pipe:
                for keys, args in calls:
                    pipe.evalsha(WRITE_SCRIPT_SHA, len(keys), *keys, *args)
                replies: list[Any] = await pipe.execute(raise_on_error=False)
            if attempt == 0 and any(isinstance(r, NoScriptError) for r in replies):
                # A restarted or flushed Redis forgets scripts; the writes are idempotent, so rerun all.
                await self._redis.script_load(WRITE_SCRIPT)
                continue
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
            return replies
        raise AssertionError("unreachable")


def _mirror_copy(based: Mapping[str, tuple[int, SymbolState] | None], symbol: str) -> SymbolState:
    """Return the mirror copy a call for ``symbol`` was based on (Redis replied relative to it)."""
    base = based.get(symbol)
    if base is None:
        raise StateError(f"{symbol}: Redis replied for a mirror copy this store never sent")
    return base[1]


def _known_version(entry: tuple[int, SymbolState] | None) -> str:
    return str(entry[0]) if entry is not None else "-1"


def empty_state(symbol: str) -> SymbolState:
    """Return the writable state of a symbol with nothing stored (what the write script starts from)."""
    return SymbolState(
        symbol,
        np.zeros((layout.CAPACITY, len(layout.CANDLE_FIELDS)), order="F"),
        np.full(layout.CAPACITY, np.nan),
        {ring.timeframe: np.zeros((ring.capacity, ring.width)) for ring in layout.BAR_RINGS},
        np.zeros(layout.CARRY_WIDTH),
    )


def writable_copy(state: SymbolState) -> SymbolState:
    """Return ``state`` with arrays of its own that ``apply_candles`` may change.

    The 1-minute ring is copied column-major (same shape and values, each field contiguous): the
    calculator reads it field by field across many symbols every minute, and writes a few slots.
    """
    return SymbolState(
        state.symbol,
        state.candles.copy(order="F"),
        state.previous_quote_volume.copy(),
        {tf: ring.copy() for tf, ring in state.bars.items()},
        state.carry.copy(),
        state.created,
    )


def apply_candles(state: SymbolState, packed: bytes, packed_seeds: bytes = b"", packed_carry: bytes = b"") -> None:
    """Apply packed candles (and seeds, and a carried state to start from) to ``state`` in place.

    The mirror's half of write_candles.lua, by exactly its rules: the same slot, eviction, bar-merge
    and carry decisions on the same float64 values, so the mirror and Redis hold the same bytes
    (tests/state check it).
    """
    # The carried state as Python floats, taken only when a newer minute moves it (most writes: one).
    if packed_carry:  # set first, like the script; records that move later are written back as they move
        state.carry[:] = np.frombuffer(packed_carry, dtype="<f8")
    carry = state.carry.tolist() if packed_carry else None
    newest = carry[layout.CARRY_NEWEST] if carry is not None else float(state.carry[layout.CARRY_NEWEST])
    seeds = np.frombuffer(packed_seeds, dtype="<f8").reshape(-1, 4)
    rings = [state.bars[ring.timeframe] for ring in layout.BAR_RINGS]
    for index, open_time, o, c in seeds.tolist():
        ring = layout.BAR_RINGS[int(index) - 1]
        minute = open_time / MINUTE_MS
        _merge_bar(rings[int(index) - 1], ring, minute, o, o)
        _merge_bar(rings[int(index) - 1], ring, minute + ring.minutes - 1, c, c)
    rows = np.frombuffer(packed, dtype="<f8").reshape(-1, len(layout.CANDLE_FIELDS))
    capacity = layout.CAPACITY
    lap = capacity * MINUTE_MS
    candles, previous = state.candles, state.previous_quote_volume
    # Python floats (tolist) for the decisions: numpy scalars cost more than the arithmetic here.
    for row, values in zip(rows, rows.tolist(), strict=True):
        open_time = values[layout.OPEN_TIME]
        minute = open_time / MINUTE_MS
        if minute > newest:
            if carry is None:
                carry = state.carry.tolist()
            _advance_carry(state, carry, minute)
            newest = minute
        slot = int(minute % capacity)
        held = float(candles[slot, layout.OPEN_TIME])
        if held == open_time:
            candles[slot] = row
        elif held < open_time:
            previous[slot] = candles[slot, layout.QUOTE_VOLUME] if held == open_time - lap else np.nan
            candles[slot] = row
        elif held == open_time + lap:
            previous[slot] = values[layout.QUOTE_VOLUME]
        o, c = values[layout.OPEN], values[layout.CLOSE]
        for ring, bar_ring in zip(layout.BAR_RINGS, rings, strict=True):
            _merge_bar(bar_ring, ring, minute, o, c)


# Per carried timeframe: its name, span in minutes, record column, and how far past its bar minute the
# newest minute must be for the next bar to be due (the loop below runs for every candle).
_CARRIED = tuple(
    (tf, span, layout.carry_offset(i), 2 * span + layout.MARGIN_MINUTES)
    for i, (tf, span) in enumerate(layout.CARRY_TIMEFRAMES)
)


def _advance_carry(state: SymbolState, carry: list[float], minute: float) -> None:
    """Take into ``carry`` every bar that closed MARGIN_MINUTES before ``minute`` (the script's advance_carry).

    The records that move are written back to ``state.carry`` too.
    """
    newest = carry[layout.CARRY_NEWEST]
    fields = layout.CARRY_STATE_FIELDS
    for timeframe, span, o, due in _CARRIED:
        # layout.carry_bar(minute, span) > carry[o], for bar minutes that are multiples of the span.
        if minute < carry[o] + due:
            continue
        target = math.floor((minute - layout.MARGIN_MINUTES) / span) * span - span
        if newest > 0:
            row = carry[o + 1 : o + 1 + fields]
            b = carry[o] + span
            last = min(target, newest)  # bars after the newest minute written have no minute yet
            while b <= last:
                close = _bar_close(state, timeframe, span, b)
                if close is not None:
                    carried.advance_bar(row, close)
                b += span
            carry[o + 1 : o + 1 + fields] = row
        carry[o] = target
        state.carry[o : o + 1 + fields] = carry[o : o + 1 + fields]
    carry[layout.CARRY_NEWEST] = minute
    state.carry[layout.CARRY_NEWEST] = minute


def _bar_close(state: SymbolState, timeframe: str, span: int, b: float) -> float | None:
    """Return the close of the bar of ``span`` minutes opening at minute ``b``, None when the rings lack it."""
    ring = layout.BAR_RING_BY_TIMEFRAME.get(timeframe)
    if ring is None:  # 1m and 5m: the latest stored minute of the bar closes it
        candles = state.candles
        for k in range(span - 1, -1, -1):
            slot = int((b + k) % layout.CAPACITY)
            if candles[slot, layout.OPEN_TIME] == (b + k) * MINUTE_MS:
                return float(candles[slot, layout.CLOSE])
        return None
    values = state.bars[timeframe][int(b / span % ring.capacity)]
    if math.floor(values[layout.BAR_TAG] / layout.TAG_MINUTE) == b:
        return float(values[ring.close_column])
    return None


def _merge_bar(bars: FloatArray, ring: layout.BarRing, minute: float, o: float, c: float) -> None:
    open_minute = minute - minute % ring.minutes
    k = minute - open_minute
    slot = int(open_minute / ring.minutes % ring.capacity)
    values = bars[slot].tolist()  # [tag, open, close], or [tag, close] in a ring without opens
    tag = values[0]
    held = float(math.floor(tag / layout.TAG_MINUTE))
    if held == open_minute:
        rest = tag - held * layout.TAG_MINUTE
        first = float(math.floor(rest / layout.TAG_OFFSET))
        last = rest - first * layout.TAG_OFFSET
        if k <= first:
            first = k
            if ring.keeps_open:
                values[1] = o
        if k >= last:
            values[-1], last = c, k
        values[0] = held * layout.TAG_MINUTE + first * layout.TAG_OFFSET + last
        bars[slot] = values
    elif held < open_minute:
        tag = open_minute * layout.TAG_MINUTE + k * layout.TAG_OFFSET + k
        bars[slot] = (tag, o, c) if ring.keeps_open else (tag, c)
