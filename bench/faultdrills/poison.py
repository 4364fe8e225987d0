"""Malformed candle events, published among the real ones on the real subjects.

Every kind must end in the dead letters of every function that consumes closed candles, alone and
with its reason; its batch neighbours must be processed normally. Each poisoned event carries a
``Drills-Poison`` header (kept by the dead letter) and a ``Nats-Msg-Id`` of its own, so JetStream
stores every one, the pairs that share a ``ce-id`` included.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from nats.js import JetStreamContext

from collector.replay.market import ReplayMarket
from screener.events.models import MINUTE_MS, Candle
from screener.names import SUBJECT_PREFIX_BY_TYPE, TYPE_CANDLE_CLOSED, TYPE_METRICS_COMPUTED
from screener.runtime.publisher import MSG_ID_HEADER

from .outcome import POISON_HEADER


@dataclass(frozen=True)
class Poisoned:
    """One malformed event: its headers (without the harness's own) and payload."""

    kind: str
    subject: str
    headers: dict[str, str]
    payload: bytes


def _headers(event_id: str | None, symbol: str, event_type: str = TYPE_CANDLE_CLOSED) -> dict[str, str]:
    headers = {
        "ce-specversion": "1.0",
        "ce-type": event_type,
        "ce-source": "/drills/poison",
        "ce-subject": symbol,
        "ce-time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "ce-datacontenttype": "application/json",
    }
    if event_id is not None:
        headers["ce-id"] = event_id
    return headers


def _candle(candle: Candle, **changes: Any) -> bytes:
    data = {**candle.model_dump(mode="json"), **changes}
    return orjson.dumps({k: v for k, v in data.items() if v is not ...})


# maker(number, real candle) -> the poisoned event. The real candle is the one it imitates: same
# symbol, a minute being streamed now.
Maker = Callable[[int, Candle], Poisoned]


def _make(kind: str, build: Callable[[int, Candle], tuple[dict[str, str], bytes]]) -> Maker:
    def maker(n: int, candle: Candle) -> Poisoned:
        headers, payload = build(n, candle)
        return Poisoned(kind, f"{SUBJECT_PREFIX_BY_TYPE[TYPE_CANDLE_CLOSED]}.{candle.symbol}", headers, payload)

    return maker


def _pid(kind: str, n: int) -> str:
    return f"drills-poison:{kind}:{n}"


KINDS: tuple[Maker, ...] = (
    _make("bad-json", lambda n, c: (_headers(_pid("bad-json", n), c.symbol), _candle(c)[:-7])),
    # A believable candle of a real minute, only without ce-id: it must not replace the real one.
    _make("no-ce-id", lambda n, c: (_headers(None, c.symbol), _candle(c, close=c.close * 1.5, high=c.high * 1.5))),
    _make("wrong-type", lambda n, c: (_headers(_pid("wrong-type", n), c.symbol, TYPE_METRICS_COMPUTED), _candle(c))),
    _make("negative-price", lambda n, c: (_headers(_pid("negative-price", n), c.symbol), _candle(c, open=-c.open))),
    _make("high-below-low", lambda n, c: (_headers(_pid("high-below-low", n), c.symbol), _candle(c, high=c.low / 2))),
    _make(
        "misaligned-minute",
        lambda n, c: (_headers(_pid("misaligned-minute", n), c.symbol), _candle(c, open_time=c.open_time + 17)),
    ),
    _make("missing-field", lambda n, c: (_headers(_pid("missing-field", n), c.symbol), _candle(c, close=...))),
    _make("not-an-object", lambda n, c: (_headers(_pid("not-an-object", n), c.symbol), b"[1, 2, 3]")),
    _make(
        "no-specversion",
        lambda n, c: (
            {k: v for k, v in _headers(_pid("no-specversion", n), c.symbol).items() if k != "ce-specversion"},
            _candle(c),
        ),
    ),
    # Two distinct bad events that share one ce-id: both must reach the dead letters.
    _make("shared-id-a", lambda n, c: (_headers(f"drills-poison:shared:{n}", c.symbol), _candle(c, volume=-1.0))),
    _make("shared-id-b", lambda n, c: (_headers(f"drills-poison:shared:{n - 1}", c.symbol), _candle(c, trades=-5))),
)


class PoisonPublisher:
    """Publish ``total`` malformed events in bursts, each imitating candles of the minutes streamed now."""

    def __init__(self, market: ReplayMarket, first_ms: int, end_ms: int, total: int) -> None:
        self.market = market
        self.first_ms = first_ms
        self.end_ms = end_ms
        self.total = total
        self.published: list[Poisoned] = []

    async def burst(self, js: JetStreamContext, count: int, progress: float) -> int:
        """Publish the next ``count`` poisoned events near the minute ``progress`` of the way in."""
        span = (self.end_ms - self.first_ms) // MINUTE_MS
        # A few minutes ahead of the collector: the poison lands in the same batches as the real ones.
        minute = self.first_ms + min(span - 1, int(span * progress) + 3) * MINUTE_MS
        candles = self.market.candles_at(minute) or self.market.candles_at(self.first_ms)
        sent = 0
        while sent < count and len(self.published) < self.total:
            n = len(self.published)
            # Kinds in turn, the shared-id pair always back to back so both halves go out.
            maker = KINDS[n % len(KINDS)]
            event = maker(n, candles[n % len(candles)])
            headers = {**event.headers, POISON_HEADER: str(n), MSG_ID_HEADER: f"drills-poison-{n}"}
            await js.publish(event.subject, event.payload, headers=headers)
            self.published.append(event)
            sent += 1
        return sent
