"""Binance's own payloads, with Binance's field names, and the one converter into our ``Candle``.

Kline fields (events.md): ``t`` open time, ``T`` close time, ``s`` symbol, ``i`` interval,
``o/h/l/c`` price strings, ``v`` base volume, ``q`` quote volume, ``n`` trades, ``V``/``Q`` taker-buy
base/quote volume, ``x`` closed. A REST kline row carries the same values as an array; it is read
into the same model so that exactly one function turns Binance data into a ``Candle``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from screener.events.models import Candle


class MalformedFrame(ValueError):
    """A stream frame that cannot be read; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BinanceKline(BaseModel):
    """The ``k`` object of a kline stream event (also built from a REST kline row)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    t: int
    T: int
    s: str
    i: str
    o: str
    h: str
    l: str  # noqa: E741 (Binance's name)
    c: str
    v: str
    q: str
    n: int
    V: str
    Q: str
    x: bool

    @classmethod
    def from_rest_row(cls, symbol: str, interval: str, row: Sequence[Any]) -> BinanceKline:
        """Read one row of ``GET /fapi/v1/klines``: ``[t, o, h, l, c, v, T, q, n, V, Q, ignore]``.

        REST rows carry no closed flag: a row is closed when its close time has passed, which only
        the caller knows, so ``x`` is set False here and the caller decides.
        """
        if len(row) < 11:
            raise MalformedFrame(f"kline row of {symbol} has {len(row)} columns, expected 12")
        try:
            return cls(
                t=row[0], o=row[1], h=row[2], l=row[3], c=row[4], v=row[5], T=row[6],
                q=row[7], n=row[8], V=row[9], Q=row[10], s=symbol, i=interval, x=False,
            )  # fmt: skip
        except ValidationError as exc:
            raise MalformedFrame(f"kline row of {symbol}: {_errors(exc)}") from None


class BinanceKlineEvent(BaseModel):
    """The ``data`` of a ``<symbol>@kline_<interval>`` stream message."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    e: str
    E: int
    s: str
    k: BinanceKline


class SubscribeAck(BaseModel):
    """The answer to a ``SUBSCRIBE``/``UNSUBSCRIBE`` control message: ``{"result": null, "id": N}``."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: int
    result: Any = None
    error: dict[str, Any] | None = None


def to_candle(kline: BinanceKline, *, closed: bool | None = None) -> Candle:
    """Return our ``Candle`` for a Binance kline; ``closed`` overrides ``k.x`` (REST rows).

    Prices and volumes are parsed from Binance's decimal strings with ``float`` (metrics.md: no loss
    beyond float64, nothing rounded). Raise ``MalformedFrame`` when a field does not parse.
    """
    try:
        return Candle(
            symbol=kline.s,
            open_time=kline.t,
            open=float(kline.o),
            high=float(kline.h),
            low=float(kline.l),
            close=float(kline.c),
            volume=float(kline.v),
            quote_volume=float(kline.q),
            trades=kline.n,
            taker_buy_volume=float(kline.V),
            taker_buy_quote_volume=float(kline.Q),
            closed=kline.x if closed is None else closed,
            quote_volume_derived=False,
        )
    except ValidationError as exc:
        raise MalformedFrame(f"kline {kline.s}@{kline.t}: {_errors(exc)}") from None
    except ValueError as exc:
        raise MalformedFrame(f"kline {kline.s}@{kline.t}: {exc}") from None


def parse_stream_frame(text: str | bytes) -> BinanceKlineEvent | SubscribeAck:
    """Read one message of a combined stream: a kline event or a control acknowledgement.

    Raise ``MalformedFrame`` naming the problem for anything else (not JSON, no ``stream``/``data``
    wrapper, an unknown event type, missing or mistyped fields).
    """
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise MalformedFrame(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise MalformedFrame(f"frame is a JSON {type(document).__name__}, expected an object")
    if "id" in document and ("result" in document or "error" in document):
        return SubscribeAck.model_validate(document)
    data = document.get("data")
    if "stream" not in document or not isinstance(data, dict):
        raise MalformedFrame("frame is not a combined-stream message ({'stream': ..., 'data': {...}})")
    if data.get("e") != "kline":
        raise MalformedFrame(f"unexpected event type {data.get('e')!r} on stream {document.get('stream')!r}")
    try:
        return BinanceKlineEvent.model_validate(data)
    except ValidationError as exc:
        raise MalformedFrame(f"kline event on {document.get('stream')!r}: {_errors(exc)}") from None


def _errors(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())


def kline_stream_name(symbol: str, interval: str = "1m") -> str:
    """Return the stream name of ``symbol``'s klines, e.g. ``btcusdt@kline_1m``."""
    return f"{symbol.lower()}@kline_{interval}"
