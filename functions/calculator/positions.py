"""What the streams say about the calculator's progress, for ``screener.runtime.sequence``.

- ``candle_minute``: the minute of a stored candle message, or None for one the calculator rejects
  (dead-lettered), so a successor search steps over it.
- ``last_published``: each symbol's newest metrics event in the METRICS stream, i.e. the last candle
  whose metrics are durable, with that candle's stream sequence (the ``candleseq`` extension every
  metrics event carries). This is how positions lost with Redis are recovered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import orjson
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg
from nats.js.errors import NotFoundError

from screener.events import nats_binding
from screener.events.envelope import InvalidEvent, expect_type, parse_data
from screener.events.models import Candle, InvalidCandle
from screener.names import (
    STREAM_METRICS,
    SUBJECT_PREFIX_BY_TYPE,
    TYPE_CANDLE_CLOSED,
    TYPE_METRICS_COMPUTED,
)
from screener.runtime.sequence import Position

# The CloudEvents extension attribute on a metrics event: the stream sequence of its candle.
CANDLE_SEQUENCE_EXTENSION = "candleseq"
_HEADER = f"ce-{CANDLE_SEQUENCE_EXTENSION}"
# Stream reads in flight at once when reading each symbol's last metrics event.
_CONCURRENT_READS = 32


def candle_minute(message: RawStreamMsg) -> int | None:
    """Return the open time of a stored closed-candle message, or None if the calculator rejects it."""
    try:
        event = nats_binding.from_message(message.headers, message.data or b"")
        expect_type(event, TYPE_CANDLE_CLOSED)
        return parse_data(event, Candle).validate_market_rules().open_time
    except (InvalidEvent, InvalidCandle):
        return None


async def last_metrics_events(js: JetStreamContext, symbols: Sequence[str]) -> dict[str, RawStreamMsg]:
    """Return each symbol's newest closed-minute metrics event in the METRICS stream (absent: none there)."""
    prefix = SUBJECT_PREFIX_BY_TYPE[TYPE_METRICS_COMPUTED]
    limit = asyncio.Semaphore(_CONCURRENT_READS)

    async def read(symbol: str) -> tuple[str, RawStreamMsg | None]:
        async with limit:
            try:
                return symbol, await js.get_msg(STREAM_METRICS.name, subject=f"{prefix}.{symbol}")
            except NotFoundError:
                return symbol, None

    found = await asyncio.gather(*(read(s) for s in symbols))
    return {symbol: message for symbol, message in found if message is not None}


async def last_published(js: JetStreamContext, symbols: Sequence[str]) -> dict[str, Position]:
    """Return the position of each symbol's newest durable metrics event (symbols without one are absent)."""
    positions = {symbol: _position(message) for symbol, message in (await last_metrics_events(js, symbols)).items()}
    return {symbol: position for symbol, position in positions.items() if position is not None}


def _position(message: RawStreamMsg) -> Position | None:
    headers = {k.lower(): v for k, v in (message.headers or {}).items()}
    try:
        minute = int(orjson.loads(message.data or b"{}")["minute"])
        sequence = int(headers.get(_HEADER, "0"))
    except (KeyError, TypeError, ValueError, orjson.JSONDecodeError):
        return None
    return Position(minute, sequence)
