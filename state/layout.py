"""Where each symbol's state lives in Redis and how its bytes are laid out (docs/state.md).

Every key of a symbol carries the hash tag ``{SYMBOL}``, so all of them live in one Redis Cluster slot
and one Lua script may touch them together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from screener.events.models import MINUTE_MS

# Columns of a 1-minute slot, in order; each is a little-endian float64.
CANDLE_FIELDS: tuple[str, ...] = ("open_time", "open", "high", "low", "close", "volume", "quote_volume", "trades")
OPEN_TIME, OPEN, HIGH, LOW, CLOSE, VOLUME, QUOTE_VOLUME, TRADES = range(len(CANDLE_FIELDS))
ROW_BYTES = 8 * len(CANDLE_FIELDS)

# The longest rolling window (1d) plus a margin: a worker computing minute t while minutes up to
# t + MARGIN_MINUTES are already stored (a redelivery, a second worker ahead of it) still finds
# t - 1439 intact, so its metrics do not depend on what was written after t.
LONGEST_WINDOW_MINUTES = 1440
MARGIN_MINUTES = 60
CAPACITY = LONGEST_WINDOW_MINUTES + MARGIN_MINUTES

# Bollinger Bands, and RSI and MACD where a series has no carried state to step from, run over this
# many bars of each timeframe (the last one forming). RSI and MACD are carried from each series' first
# bar instead (the carry key below): 250 bars leave their seeds undecayed to ~4e-8 relative for RSI,
# more for MACD near zero, which TA-Lib over the whole history (metrics.md) does not allow.
INDICATOR_BARS = 250
# change_14d reads the open of the 1h bar 335 bars before the one containing t.
CHANGE_14D_BARS_BACK = 335

# Columns of a bar slot (float64): a tag, the bar's open (only in rings that keep it) and its close.
# The tag packs the bar's open time in minutes with the offsets (within the bar) of the earliest and
# latest minute merged so far: tag = open_minute * TAG_MINUTE + first * TAG_OFFSET + last, an integer
# below 2**53, so exact in a float64 and in Lua. The offsets make a late or repeated minute update
# open and close idempotently; packing them keeps a bar at 24 bytes, 16 without the open
# (docs/state.md, "Bar rings").
BAR_FIELDS_WITH_OPEN: tuple[str, ...] = ("tag", "open", "close")
BAR_FIELDS_WITHOUT_OPEN: tuple[str, ...] = ("tag", "close")
BAR_TAG = 0  # the first column of every bar ring
TAG_OFFSET = 4096
TAG_MINUTE = TAG_OFFSET * TAG_OFFSET


@dataclass(frozen=True)
class BarRing:
    """A ring of clock-aligned bars of one timeframe, filled from the 1-minute candles written.

    Indicators read closes only; ``keeps_open`` rings also store each bar's open (change_14d reads the
    1h ring's), the others leave it out to save 8 bytes a slot.
    """

    timeframe: str
    minutes: int
    capacity: int
    keeps_open: bool = False

    @property
    def span_ms(self) -> int:
        """Return the bar length in milliseconds."""
        return self.minutes * MINUTE_MS

    @property
    def fields(self) -> tuple[str, ...]:
        """Return the columns of a slot, in order (each a little-endian float64)."""
        return BAR_FIELDS_WITH_OPEN if self.keeps_open else BAR_FIELDS_WITHOUT_OPEN

    @property
    def width(self) -> int:
        """Return the float64 columns of a slot."""
        return len(self.fields)

    @property
    def slot_bytes(self) -> int:
        """Return the bytes of a slot."""
        return 8 * self.width

    @property
    def ring_bytes(self) -> int:
        """Return the bytes of the whole ring (its key's string length in Redis)."""
        return self.capacity * self.slot_bytes

    @property
    def close_column(self) -> int:
        """Return the column of the bar's close (the last one)."""
        return self.width - 1

    @property
    def open_column(self) -> int:
        """Return the column of the bar's open; raise ``ValueError`` for a ring that does not keep it."""
        if not self.keeps_open:
            raise ValueError(f"the {self.timeframe} bar ring does not keep opens")
        return 1


def bars_needed(minutes: int, bars_back: int) -> int:
    """Return the slots a ring needs to hold ``bars_back`` bars before the forming one.

    Also the forming bar (one slot) and the bars that MARGIN_MINUTES of newer minutes may have
    opened since it.
    """
    return bars_back + 1 + math.ceil(MARGIN_MINUTES / minutes)


# 1m bars are the 1-minute ring; 5m bars fit in it too (250 x 5 = 1,250 minutes < CAPACITY).
# Capacities are rounded up to fill jemalloc's size class with Redis' string header (6 bytes for
# these lengths): 255 x 16 + 6 <= 4,096 bytes, 341 x 24 + 6 <= 8,192; the extra bars cost nothing.
# Only the 1h ring keeps opens (change_14d).
BAR_RINGS: tuple[BarRing, ...] = (
    BarRing("15m", 15, 255),
    BarRing("1h", 60, 341, keeps_open=True),
    BarRing("4h", 240, 255),
    BarRing("8h", 480, 255),
    BarRing("1d", 1440, 255),
)
assert all(
    r.capacity >= bars_needed(r.minutes, max(INDICATOR_BARS - 1, CHANGE_14D_BARS_BACK if r.timeframe == "1h" else 0))
    for r in BAR_RINGS
), "a bar ring is too small for its indicators"
BAR_RING_BY_TIMEFRAME: dict[str, BarRing] = {ring.timeframe: ring for ring in BAR_RINGS}
assert BAR_RING_BY_TIMEFRAME["1h"].keeps_open, "change_14d reads the opens of the 1h ring"

# The recursion state of RSI and MACD per timeframe, carried from the symbol's first bar (docs/state.md,
# "Carried indicators"): a record of float64, ``CARRY_NEWEST`` (the newest minute written, in minutes;
# 0 before the first) then, per timeframe of ``CARRY_TIMEFRAMES``, the open minute of the last bar the
# state includes (every bar up to it) and the state itself (``functions.calculator.carried.FIELDS``:
# bars, close, gain, loss, slow, fast, signal). The state only takes in bars that closed at least
# MARGIN_MINUTES before the newest minute written: a minute the calculator may still compute (never
# more than the margin behind, like the 1-minute ring's rule) then always finds its closed bars after
# the state's, in the rings, and steps through them itself.
CARRY_TIMEFRAMES: tuple[tuple[str, int], ...] = (
    ("1m", 1), ("5m", 5), ("15m", 15), ("1h", 60), ("4h", 240), ("8h", 480), ("1d", 1440),
)  # fmt: skip
assert CARRY_TIMEFRAMES[0] == ("1m", 1), "the first record is 1m's, the newest bars taken in"
CARRY_STATE_FIELDS = 7  # len(carried.FIELDS)
CARRY_STRIDE = 1 + CARRY_STATE_FIELDS  # the bar minute, then the state
CARRY_NEWEST = 0
CARRY_WIDTH = 1 + CARRY_STRIDE * len(CARRY_TIMEFRAMES)
CARRY_BYTES = 8 * CARRY_WIDTH


def carry_offset(timeframe_index: int) -> int:
    """Return the column of the bar minute of the ``timeframe_index``-th timeframe's record (its state follows)."""
    return 1 + CARRY_STRIDE * timeframe_index


def carry_bar(newest_minute: float, minutes: int) -> float:
    """Return the open minute of the newest bar of ``minutes`` the carried state takes in, given the newest minute.

    The bars that ended at least MARGIN_MINUTES before ``newest_minute``: bar b spans b .. b + minutes - 1.
    """
    return math.floor((newest_minute - MARGIN_MINUTES) / minutes) * minutes - minutes


KEY_PREFIX = "st"


def candles_key(symbol: str) -> str:
    """Return the key of ``symbol``'s 1-minute ring."""
    return f"{KEY_PREFIX}:{{{symbol}}}:1m"


def previous_lap_key(symbol: str) -> str:
    """Return the key of the quote volumes of the minutes one lap (CAPACITY minutes) older than the ring's.

    Slot i holds the quote volume of minute ``ring[i].open_time - CAPACITY`` (NaN when unknown): the 1d
    volume ratio needs the 1,440 minutes before the day window, which the ring no longer holds.
    """
    return f"{KEY_PREFIX}:{{{symbol}}}:1m:prev"


def version_key(symbol: str) -> str:
    """Return the key of the version of ``symbol``'s rings (bumped by every write)."""
    return f"{KEY_PREFIX}:{{{symbol}}}:version"


def gap_key(symbol: str) -> str:
    """Return the key recording when each recent hole of ``symbol``'s minutes was first seen."""
    return f"{KEY_PREFIX}:{{{symbol}}}:gaps"


def bars_key(symbol: str, timeframe: str) -> str:
    """Return the key of ``symbol``'s bar ring of ``timeframe``."""
    return f"{KEY_PREFIX}:{{{symbol}}}:bars:{timeframe}"


def carry_key(symbol: str) -> str:
    """Return the key of ``symbol``'s carried RSI and MACD state (``CARRY_WIDTH`` float64)."""
    return f"{KEY_PREFIX}:{{{symbol}}}:carry"


def write_log_key(symbol: str) -> str:
    """Return the key of ``symbol``'s last few small writes (a list of version + packed candles)."""
    return f"{KEY_PREFIX}:{{{symbol}}}:log"


# The write log: the last WRITE_LOG_ENTRIES writes of at most WRITE_LOG_MAX_CANDLES candles (a minute's
# burst writes one per symbol). A worker whose mirror missed them, because another worker wrote the
# symbol meanwhile, gets those candles in the reply instead of every ring (about 140 KB). Small, so
# it costs a few hundred bytes per symbol (docs/state.md, "Writes").
WRITE_LOG_ENTRIES = 4
WRITE_LOG_MAX_CANDLES = 2


def state_keys(symbol: str) -> list[str]:
    """Return every state key of ``symbol``, in the order the write script takes them."""
    return [
        candles_key(symbol),
        previous_lap_key(symbol),
        version_key(symbol),
        *(bars_key(symbol, r.timeframe) for r in BAR_RINGS),
        carry_key(symbol),
        write_log_key(symbol),
    ]


def ring_keys(symbol: str) -> list[str]:
    """Return the keys of ``symbol``'s rings (the state keys but the version), in reply order."""
    return [
        candles_key(symbol),
        previous_lap_key(symbol),
        *(bars_key(symbol, r.timeframe) for r in BAR_RINGS),
        carry_key(symbol),
    ]


def state_bytes() -> int:
    """Return the payload bytes of one symbol's rings (without Redis' own overhead)."""
    return CAPACITY * ROW_BYTES + CAPACITY * 8 + sum(r.ring_bytes for r in BAR_RINGS) + CARRY_BYTES
