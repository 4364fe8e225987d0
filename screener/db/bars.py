"""The ``bars`` table: its intervals, and the roll-up that keeps it current as minutes are stored.

``bars`` holds closed, UTC-aligned bars of Binance's native intervals. The live collector seeds them
from Binance and the replay from its warm-up; the recorder then rolls each bar up from the stored
minutes as it closes (``ROLL_UPS``), so a warm start (a first start, a Redis flush) finds every
higher-timeframe bar its rings need however long the pipeline has run, not just the seeds of its
start and the last two laps of minutes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import NamedTuple

import asyncpg

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

# The bars of one interval that the rows just written may complete, close or change: those holding
# a minute just stored, and, when a minute comes after a hole, the bar of the symbol's stored minute
# before the hole (closed now, without its last minute) for the finest roll-up; for the others, the
# bars holding a finer bar the previous roll-up just wrote. LATERAL: index probes, one per row.
_TOUCHED_BY_MINUTES = """
SELECT DISTINCT m.symbol, to_timestamp((m.open_ms - m.open_ms % $2::bigint) / 1000.0) AS bar
FROM (
    SELECT symbol, open_time AS open_ms FROM {stage}
    UNION ALL
    SELECT st.symbol, (extract(epoch FROM p.open_time) * 1000)::bigint
    FROM {stage} AS st
    CROSS JOIN LATERAL (
        SELECT count(*) AS stored FROM candles_1m AS c
        WHERE c.symbol = st.symbol AND c.open_time = to_timestamp((st.open_time - {minute_ms}) / 1000.0)
    ) AS just_before
    CROSS JOIN LATERAL (
        SELECT c.open_time FROM candles_1m AS c
        WHERE c.symbol = st.symbol AND c.open_time < to_timestamp(st.open_time / 1000.0)
        ORDER BY c.open_time DESC LIMIT 1
    ) AS p
    WHERE just_before.stored = 0
) AS m
"""
_TOUCHED_BY_BARS = (
    "SELECT DISTINCT symbol, to_timestamp((open_ms - open_ms % $2::bigint) / 1000.0) AS bar "
    "FROM unnest($5::text[], $6::bigint[]) AS w(symbol, open_ms)"
)
# A bar is written once it is closed: its last source row is stored, or a minute of its symbol
# after its end is (a hole, a delisting). It holds what is stored of it, as the calculator's rings
# hold a bar: open of its first stored minute, close of its last, so a bar missing its start (a
# listing) or its end (a hole) is the one the rings had, and a Redis flush long after rebuilds the
# same rings (tests/state/test_warm_start_gaps.py). A source row stored later (late, out of order)
# writes it again. ON CONFLICT: a redelivered batch writes the same values again; a seeded bar gets
# the same open and close (its high, low and volumes from the stored minutes), but is never replaced
# by a bar missing its start: Binance's bar of the day the live backfill starts in stays whole for
# the charts (``gateway.candles``). RETURNING: the bars written, which are all a coarser bar can
# have changed by.
# LATERAL: each touched bar reads its own few source rows through the primary key's index. As a
# join, the planner (no statistics on the session's staging table) scanned the whole day's
# partition of ``candles_1m`` for every batch: 10-15x the cost of storing the minutes, growing
# through the day.
_ROLL_UP = """
INSERT INTO bars (symbol, interval, open_time, open, high, low, close, volume, quote_volume)
SELECT t.symbol, $1, t.bar, a.open, a.high, a.low, a.close, a.volume, a.quote_volume
FROM ({touched}) AS t
CROSS JOIN LATERAL (
    SELECT (array_agg(s.open ORDER BY s.open_time))[1] AS open, max(s.high) AS high, min(s.low) AS low,
           (array_agg(s.close ORDER BY s.open_time DESC))[1] AS close, sum(s.volume) AS volume,
           sum(s.quote_volume) AS quote_volume, min(s.open_time) AS first, max(s.open_time) AS last
    FROM {source} AS s
    WHERE s.symbol = t.symbol {source_filter}
      AND s.open_time >= t.bar AND s.open_time < t.bar + $3::interval
) AS a
WHERE a.last IS NOT NULL
  AND (a.last = t.bar + $4::interval
       OR EXISTS (SELECT 1 FROM candles_1m AS n WHERE n.symbol = t.symbol AND n.open_time >= t.bar + $3::interval))
  AND (a.first = t.bar
       OR NOT EXISTS (SELECT 1 FROM bars AS b WHERE b.symbol = t.symbol AND b.interval = $1 AND b.open_time = t.bar))
ON CONFLICT (symbol, interval, open_time) DO UPDATE SET
    open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close,
    volume = EXCLUDED.volume, quote_volume = EXCLUDED.quote_volume
RETURNING symbol, (extract(epoch FROM open_time) * 1000)::bigint
"""


def roll_up_statements(stage: str) -> list[tuple[str, RollUp]]:
    """Return the statements that roll up the bars touched by the minutes in table ``stage``, finest first.

    ``stage`` has ``symbol`` and ``open_time`` (epoch ms) columns: the minutes just stored. Each
    statement takes ``RollUp.arguments``, and every one after the first also the symbols and open
    times (epoch ms) of the bars the one before it returned (``roll_up``, which runs them).
    """
    statements = []
    for roll_up in ROLL_UPS:
        if roll_up.source == "1m":
            touched = _TOUCHED_BY_MINUTES.format(stage=stage, minute_ms=MINUTE_MS)
            source, source_filter = "candles_1m", ""
        else:
            touched = _TOUCHED_BY_BARS
            source, source_filter = "bars", f"AND s.interval = '{roll_up.source}'"
        statements.append((_ROLL_UP.format(touched=touched, source=source, source_filter=source_filter), roll_up))
    return statements


async def roll_up(conn: asyncpg.Connection, statements: Sequence[tuple[str, RollUp]]) -> None:
    """Run ``statements`` (``roll_up_statements``) in order, each on the bars the one before wrote.

    A coarser bar is a function of its finer bars only, so one none of whose finer bars was written
    now cannot have changed: most minutes complete no 5m bar, and then nothing coarser is looked at.
    Run it in the transaction that stored the minutes, so each roll-up sees the rows written before it.
    """
    wrote: list[asyncpg.Record] | None = None
    for statement, step in statements:
        if wrote is None:
            wrote = await conn.fetch(statement, *step.arguments)
        else:
            wrote = await conn.fetch(statement, *step.arguments, [r[0] for r in wrote], [r[1] for r in wrote])
        if not wrote:
            return
