"""A metrics snapshot as Redis keeps it: a fixed row of little-endian float64, NaN for null.

Every field of ``MetricsSnapshot`` has a fixed place in ``FIELDS``, after a header of format version
and minute, but the symbol (the key names it), the timestamp (the minute gives it) and the provisional
flag (provisional snapshots have a key of their own). The 1d entry's ``fibonacci`` is null when all its
levels are (the calculator always has them: minute t is in the 1d window).

A row is 1,008 bytes, so with Redis' string header it fits jemalloc's 1,024-byte size class. The
calculator packs a whole minute of symbols as one (S, fields) array with a single ``tobytes``
(``pack_rows``), where zlib-compressed JSON cost it a dozen milliseconds per minute for a larger size.
``unpack`` returns the ``model_dump(mode="json")`` dict.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import orjson

from screener.events.models import WINDOWS, minute_close_iso

FloatArray = npt.NDArray[np.float64]

FORMAT_VERSION: Final = 1.0
FIBONACCI_LEVELS: Final = ("r1", "r618", "r382", "pivot", "s382", "s618", "s1")
INDICATOR_NAMES: Final = ("rsi_14", "macd", "macd_signal", "macd_hist", "bb_upper", "bb_middle", "bb_lower")
WINDOW_NAMES: Final = (
    "open", "high", "low", "close", "volume", "base_volume", "price_change", "volume_ratio", "vwap", "vcp",
)  # fmt: skip
# A timeframe entry is absent from a snapshot when its coverage is NaN (a present one never has NaN).
TIMEFRAME_FIELDS: Final = ("coverage", *WINDOW_NAMES, *INDICATOR_NAMES)
FIBONACCI: Final = ("timeframes", "1d", "fibonacci")

FIELDS: Final[tuple[tuple[str, ...], ...]] = (
    ("last_price",),
    ("change_14d",),
    *(("timeframes", name, field) for name in WINDOWS for field in TIMEFRAME_FIELDS),
    *((*FIBONACCI, level) for level in FIBONACCI_LEVELS),
    *(("indicators_1m", name) for name in INDICATOR_NAMES),
)
_HEADER = 2  # version, minute
ROW_BYTES: Final = 8 * (_HEADER + len(FIELDS))


class SnapshotFormatError(ValueError):
    """Bytes in a snapshot key are not a snapshot of this format; the message says why."""


def pack_rows(minute: int, values: FloatArray) -> list[bytes]:
    """Return one packed snapshot per row of ``values`` (S, len(FIELDS)), all of ``minute``."""
    rows = len(values)
    table = np.empty((rows, _HEADER + len(FIELDS)), dtype="<f8")
    table[:, 0] = FORMAT_VERSION
    table[:, 1] = minute
    table[:, _HEADER:] = values
    # One NaN for every null, whatever produced it (inf, -nan): the same snapshot is the same bytes.
    table[~np.isfinite(table)] = np.nan
    blob = table.tobytes()
    return [blob[i * ROW_BYTES : (i + 1) * ROW_BYTES] for i in range(rows)]


def pack(payload: Mapping[str, Any]) -> bytes:
    """Return the packed form of a ``MetricsSnapshot.model_dump(mode="json")`` dict."""
    row = np.full(len(FIELDS), np.nan)
    for i, path in enumerate(FIELDS):
        value = _lookup(payload, path)
        if value is not None:
            row[i] = float(value)
    return pack_rows(int(payload["minute"]), row[None, :])[0]


def unpack(symbol: str, raw: bytes, provisional: bool = False) -> dict[str, Any]:
    """Return the ``MetricsSnapshot.model_dump(mode="json")`` dict that ``raw`` holds for ``symbol``.

    Raise ``SnapshotFormatError`` for bytes of another format. Snapshots saved as zlib-compressed JSON
    (the format before this one) are still read.
    """
    if raw[:1] == b"x":  # a zlib stream (the previous format) starts with 0x78
        legacy: dict[str, Any] = orjson.loads(zlib.decompress(raw))
        return legacy
    if len(raw) != ROW_BYTES:
        raise SnapshotFormatError(f"snapshot of {symbol} has {len(raw)} bytes, expected {ROW_BYTES}")
    table = np.frombuffer(raw, dtype="<f8")
    if table[0] != FORMAT_VERSION:
        raise SnapshotFormatError(f"snapshot of {symbol} has format {table[0]}, this code reads {FORMAT_VERSION}")
    values = [None if math.isnan(v) else v for v in table.tolist()]
    minute = int(table[1])
    payload: dict[str, Any] = {
        "symbol": symbol,
        "minute": minute,
        "timestamp": minute_close_iso(minute),
        "last_price": values[_HEADER],
        "provisional": provisional,
        "change_14d": values[_HEADER + 1],
    }
    by_path = dict(zip(FIELDS, values[_HEADER:], strict=True))
    timeframes: dict[str, Any] = {}
    for name in WINDOWS:
        if by_path[("timeframes", name, "coverage")] is None:
            continue
        entry = {field: by_path[("timeframes", name, field)] for field in (*WINDOW_NAMES, *INDICATOR_NAMES)}
        entry["coverage"] = by_path[("timeframes", name, "coverage")]
        entry["fibonacci"] = None
        timeframes[name] = entry
    levels = {level: by_path[(*FIBONACCI, level)] for level in FIBONACCI_LEVELS}
    if "1d" in timeframes and any(v is not None for v in levels.values()):
        timeframes["1d"]["fibonacci"] = levels
    payload["timeframes"] = timeframes
    payload["indicators_1m"] = {name: by_path[("indicators_1m", name)] for name in INDICATOR_NAMES}
    return payload


def _lookup(payload: Mapping[str, Any], path: Sequence[str]) -> Any:
    node: Any = payload
    for key in path:
        if not isinstance(node, Mapping) or node.get(key) is None:
            return None
        node = node[key]
    return node
