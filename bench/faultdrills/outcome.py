"""What one run produced, read after it drained, and how it differs from the clean run.

Events are compared by id and by a digest of their bytes (``data`` exactly as stored), so
"differing" means not byte-identical. Candle rows are compared by (symbol, open time) and value.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from screener.names import CONSUMERS
from screener.runtime.publisher import FUNCTION_HEADER, REASON_HEADER

POISON_HEADER = "Drills-Poison"
SHOWN_IDS = 3  # a cell names the ids when at most this many differ


def digest(data: bytes) -> bytes:
    """Return a short digest of ``data`` (equal digests: byte-identical, for our purposes)."""
    return hashlib.blake2b(data, digest_size=16).digest()


@dataclass
class DeadLetter:
    """One message of the dead-letter stream."""

    function: str
    event_id: str
    reason: str
    poison: str | None  # the poisoned event's number when the drill made it


@dataclass
class Outcome:
    """Everything a run left in the streams and tables that the drills compare."""

    candle_ids: Counter[str] = field(default_factory=Counter)
    poison_on_stream: int = 0
    candle_rows: dict[tuple[str, int], bytes] = field(default_factory=dict)
    metrics: dict[str, list[bytes]] = field(default_factory=dict)
    alerts: dict[str, list[bytes]] = field(default_factory=dict)
    alert_rows: dict[str, list[bytes]] = field(default_factory=dict)
    alert_labels: dict[str, str] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)

    def dead_letters_by_function(self, *, poison: bool) -> Counter[str]:
        """Return the dead letters per function, of poisoned events or of the others."""
        return Counter(d.function for d in self.dead_letters if (d.poison is not None) == poison)


async def read_stream(js: JetStreamContext, stream: str) -> AsyncIterator[tuple[dict[str, str], bytes]]:
    """Yield (headers, data) of every message of ``stream``, in order."""
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        return
    if not info.state.messages:
        return
    last = info.state.last_seq
    subject = info.config.subjects[0] if info.config.subjects else ">"
    sub = await js.pull_subscribe(
        subject,
        stream=stream,
        config=ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, inactive_threshold=60.0),
    )
    try:
        while True:
            batch = await sub.fetch(2000, timeout=10)
            for msg in batch:
                yield dict(msg.headers or {}), msg.data or b""
                if msg.metadata.sequence.stream >= last:
                    return
    finally:
        await sub.unsubscribe()


def _alert_label(data: bytes) -> str:
    try:
        alert: dict[str, Any] = orjson.loads(data)
        minute = datetime.fromtimestamp(int(alert["minute"]) / 1000, tz=UTC).strftime("%m-%d %H:%M")
        return f"{alert['rule_type']} {alert['symbol']} {minute}"
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return "?"


async def collect(js: JetStreamContext, dsn: str) -> Outcome:
    """Read the streams and tables of a drained run."""
    out = Outcome()
    async for headers, _ in read_stream(js, "CANDLES"):
        if POISON_HEADER in headers:
            out.poison_on_stream += 1
        else:
            out.candle_ids[headers.get("ce-id", "?")] += 1
    async for headers, data in read_stream(js, "METRICS"):
        out.metrics.setdefault(headers.get("ce-id", "?"), []).append(digest(data))
    async for headers, data in read_stream(js, "ALERTS"):
        event_id = headers.get("ce-id", "?")
        out.alerts.setdefault(event_id, []).append(digest(data))
        out.alert_labels.setdefault(event_id, _alert_label(data))
    async for headers, _ in read_stream(js, "DEADLETTERS"):
        out.dead_letters.append(
            DeadLetter(
                headers.get(FUNCTION_HEADER, "?"),
                headers.get("ce-id", headers.get("Nats-Msg-Id", "?")),
                headers.get(REASON_HEADER, ""),
                headers.get(POISON_HEADER),
            )
        )
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT symbol, (extract(epoch FROM open_time) * 1000)::bigint AS t, open, high, low, close, volume,"
            " quote_volume, trades, taker_buy_volume, taker_buy_quote_volume, quote_volume_derived FROM candles_1m"
        )
        for row in rows:
            out.candle_rows[(row["symbol"], row["t"])] = digest(repr(tuple(row)).encode())
        alerts = await conn.fetch(
            "SELECT id::text AS id, rule_type, symbol, minute, ts, price, description, metadata::text AS m,"
            " audience::text AS a FROM alert_history"
        )
        for row in alerts:
            out.alert_rows.setdefault(row["id"], []).append(digest(repr(tuple(row)).encode()))
    finally:
        await conn.close()
    return out


@dataclass
class IdDiff:
    """Missing, extra, duplicated and differing ids of one output against the clean run."""

    got: int
    expected: int
    missing: list[str]
    extra: list[str]
    duplicated: list[str]
    differing: list[str]

    @property
    def exact(self) -> bool:
        """Return whether the output equals the clean run's."""
        return not (self.missing or self.extra or self.duplicated or self.differing)

    def cell(self, labels: dict[str, str] | None = None) -> str:
        """Return a table cell: the count, then what differs (ids named when few)."""
        if self.exact:
            return f"{self.got:,} ✓"
        parts = []
        for sign, ids in (("−", self.missing), ("+", self.extra), ("×2 ", self.duplicated), ("≠", self.differing)):
            if ids:
                named = ""
                if len(ids) <= SHOWN_IDS:
                    named = " (" + ", ".join((labels or {}).get(i, i) for i in sorted(ids)) + ")"
                parts.append(f"{sign}{len(ids):,}{named}")
        return f"**{self.got:,}** " + " ".join(parts)

    def as_json(self) -> dict[str, Any]:
        """Return the diff with every id, for ``--json``."""
        return {
            "got": self.got,
            "expected": self.expected,
            "missing": sorted(self.missing),
            "extra": sorted(self.extra),
            "duplicated": sorted(self.duplicated),
            "differing": sorted(self.differing),
        }


def diff_events(expected: dict[str, list[bytes]], got: dict[str, list[bytes]]) -> IdDiff:
    """Compare events by id: an id counts as differing when any copy's bytes differ from the clean run's."""
    return IdDiff(
        got=sum(len(v) for v in got.values()),
        expected=sum(len(v) for v in expected.values()),
        missing=[i for i in expected if i not in got],
        extra=[i for i in got if i not in expected],
        duplicated=[i for i, copies in got.items() if len(copies) > 1],
        differing=[i for i, copies in got.items() if i in expected and any(c != expected[i][0] for c in copies)],
    )


def diff_counts(expected: Counter[str], got: Counter[str]) -> IdDiff:
    """Compare ids that carry no payload worth comparing (candle events: the rows are compared instead)."""
    return IdDiff(
        got=sum(got.values()),
        expected=sum(expected.values()),
        missing=[i for i in expected if i not in got],
        extra=[i for i in got if i not in expected],
        duplicated=[i for i, n in got.items() if n > 1],
        differing=[],
    )


def diff_rows(expected: dict[tuple[str, int], bytes], got: dict[tuple[str, int], bytes]) -> IdDiff:
    """Compare ``candles_1m`` rows by key and value."""

    def name(key: tuple[str, int]) -> str:
        minute = datetime.fromtimestamp(key[1] / 1000, tz=UTC).strftime("%m-%d %H:%M")
        return f"{key[0]} {minute}"

    return IdDiff(
        got=len(got),
        expected=len(expected),
        missing=[name(k) for k in expected if k not in got],
        extra=[name(k) for k in got if k not in expected],
        duplicated=[],
        differing=[name(k) for k, v in got.items() if k in expected and expected[k] != v],
    )


def candle_consumers() -> list[str]:
    """Return the functions whose consumers receive closed candles (each must dead-letter a poisoned one)."""
    return sorted(
        spec.function
        for spec in CONSUMERS.values()
        if spec.stream.name == "CANDLES" and _matches(spec.filter_subject, "candles.1m.X")
    )


def _matches(pattern: str, subject: str) -> bool:
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(want) == len(have)
