"""The ``bars`` table: its intervals, and the roll-up that keeps it current as minutes are stored.

``bars`` holds closed, UTC-aligned bars of Binance's native intervals. The live collector seeds them
from Binance and the replay from its warm-up; the recorder then rolls each bar up from the stored
minutes as it closes (``ROLL_UPS``), so a warm start (a first start, a Redis flush) finds every
higher-timeframe bar its rings need however long the pipeline has run, not just the seeds of its
start and the last two laps of minutes.
"""

from __future__ import annotations

from datetime import timedelta
from typing import NamedTuple

from screener.events.models import MINUTE_MS

# Every interval ``bars`` holds, in minutes (1m bars are the candles themselves).
INTERVAL_MINUTES: dict[str, int] = {"5m": 5, "15m": 15, "1h": 60, "4h": 240, "8h": 480, "1d": 1440}


class RollUp(NamedTuple):
    """One interval's bars built from the next finer one: a few rows each, never a day of minutes."""

    interval: str
    source: str  # "1m" (candles_1m) or a finer interval of ``bars``
    span_ms: int
    source_span_ms: int

    @property
    def arguments(self) -> tuple[str, int, timedelta, timedelta]:
        """Return the statement's arguments: the interval, its span, and the offset of its last source row."""
        span = timedelta(milliseconds=self.span_ms)
        return self.interval, self.span_ms, span, span - timedelta(milliseconds=self.source_span_ms)


ROLL_UPS: tuple[RollUp, ...] = tuple(
    RollUp(interval, source, INTERVAL_MINUTES[interval] * MINUTE_MS, minutes * MINUTE_MS)
    for interval, source, minutes in (
        ("5m", "1m", 1),
        ("15m", "5m", 5),
        ("1h", "15m", 15),
        ("4h", "1h", 60),
        ("8h", "4h", 240),
        ("1d", "8h", 480),
    )
)
assert all(r.span_ms % r.source_span_ms == 0 for r in ROLL_UPS), "a bar must be whole source bars"
assert {r.interval for r in ROLL_UPS} == set(INTERVAL_MINUTES), "every stored interval is rolled up"

_TOUCHED = "SELECT DISTINCT symbol, to_timestamp((open_time - open_time % $2::bigint) / 1000.0) AS bar FROM {stage}"
# A bar is written once its first and its last source rows are stored, whatever order they came
# in (any stored minute of a bar re-checks it): then its open and close, all the rings read, are
# final. ON CONFLICT: a redelivered batch writes the same values again; a seeded bar gets the same
# open and close (its high, low and volumes from the stored minutes).
_ROLL_UP = """
INSERT INTO bars (symbol, interval, open_time, open, high, low, close, volume, quote_volume)
SELECT t.symbol, $1, t.bar,
       (array_agg(s.open ORDER BY s.open_time))[1], max(s.high), min(s.low),
       (array_agg(s.close ORDER BY s.open_time DESC))[1], sum(s.volume), sum(s.quote_volume)
FROM ({touched}) AS t
JOIN {source} AS s
  ON s.symbol = t.symbol {source_filter}
 AND s.open_time >= t.bar AND s.open_time < t.bar + $3::interval
GROUP BY t.symbol, t.bar
HAVING min(s.open_time) = t.bar
   AND max(s.open_time) = t.bar + $4::interval
ON CONFLICT (symbol, interval, open_time) DO UPDATE SET
    open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close,
    volume = EXCLUDED.volume, quote_volume = EXCLUDED.quote_volume
"""


def roll_up_statements(stage: str) -> list[tuple[str, RollUp]]:
    """Return the statements that roll up the bars touched by the minutes in table ``stage``, finest first.

    ``stage`` has ``symbol`` and ``open_time`` (epoch ms) columns: the minutes just stored. Each
    statement takes ``RollUp.arguments``; run them in order, in the transaction that stored the
    minutes, so a coarser bar sees the finer ones written just before it.
    """
    touched = _TOUCHED.format(stage=stage)
    statements = []
    for roll_up in ROLL_UPS:
        if roll_up.source == "1m":
            source, source_filter = "candles_1m", ""
        else:
            source, source_filter = "bars", f"AND s.interval = '{roll_up.source}'"
        statements.append((_ROLL_UP.format(touched=touched, source=source, source_filter=source_filter), roll_up))
    return statements
