"""Binance payloads keep Binance's names; one converter turns them into our Candle."""

from __future__ import annotations

import json

import pytest

from collector.binance.ledger import MinuteLedger
from collector.binance.models import (
    BinanceKline,
    BinanceKlineEvent,
    MalformedFrame,
    SubscribeAck,
    kline_stream_name,
    parse_stream_frame,
    to_candle,
)
from collector.binance.symbols import choose_symbols, top_by_quote_volume
from screener.events.models import MINUTE_MS, Candle

# A combined-stream frame as Binance sends it (fstream /market/stream, kline_1m, closed).
FRAME = {
    "stream": "btcusdt@kline_1m",
    "data": {
        "e": "kline", "E": 1769904060012, "s": "BTCUSDT",
        "k": {
            "t": 1769904000000, "T": 1769904059999, "s": "BTCUSDT", "i": "1m", "f": 6516167591, "L": 6516170008,
            "o": "78541.10", "c": "78555.00", "h": "78580.00", "l": "78520.30", "v": "152.431", "n": 2418,
            "x": True, "q": "11972690.61980", "V": "88.902", "Q": "6982776.81150", "B": "0",
        },
    },
}  # fmt: skip
REST_ROW = [
    1769904000000, "78541.10", "78580.00", "78520.30", "78555.00", "152.431", 1769904059999,
    "11972690.61980", 2418, "88.902", "6982776.81150", "0",
]  # fmt: skip
EXPECTED = Candle(
    symbol="BTCUSDT", open_time=1769904000000, open=78541.10, high=78580.00, low=78520.30, close=78555.00,
    volume=152.431, quote_volume=11972690.61980, trades=2418, taker_buy_volume=88.902,
    taker_buy_quote_volume=6982776.81150, closed=True,
)  # fmt: skip


def test_a_stream_frame_converts_to_the_candle_without_loss() -> None:
    event = parse_stream_frame(json.dumps(FRAME))
    assert isinstance(event, BinanceKlineEvent)
    assert event.E == 1769904060012
    assert to_candle(event.k) == EXPECTED


def test_a_rest_row_converts_through_the_same_model() -> None:
    kline = BinanceKline.from_rest_row("BTCUSDT", "1m", REST_ROW)
    assert not kline.x
    assert to_candle(kline, closed=True) == EXPECTED


def test_subscribe_acknowledgements_are_recognised() -> None:
    assert parse_stream_frame('{"result": null, "id": 3}') == SubscribeAck(id=3)
    ack = parse_stream_frame('{"error": {"code": 2, "msg": "Invalid request"}, "id": 4}')
    assert isinstance(ack, SubscribeAck) and ack.error == {"code": 2, "msg": "Invalid request"}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "JSON list"),
        ('{"data": {"e": "kline"}}', "not a combined-stream message"),
        ('{"stream": "btcusdt@aggTrade", "data": {"e": "aggTrade"}}', "unexpected event type 'aggTrade'"),
        (json.dumps({**FRAME, "data": {**FRAME["data"], "k": {"t": "soon"}}}), "k.t"),  # type: ignore[dict-item]
    ],
)
def test_malformed_frames_are_rejected_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(MalformedFrame, match=reason):
        parse_stream_frame(text)


def test_unparseable_prices_are_malformed_not_a_crash() -> None:
    kline = BinanceKline.from_rest_row("BTCUSDT", "1m", ["1769904000000", "abc", *REST_ROW[2:]])
    with pytest.raises(MalformedFrame, match="BTCUSDT@1769904000000"):
        to_candle(kline)
    with pytest.raises(MalformedFrame, match="columns"):
        BinanceKline.from_rest_row("BTCUSDT", "1m", REST_ROW[:5])


def test_stream_names_are_lower_case() -> None:
    assert kline_stream_name("BTCUSDT") == "btcusdt@kline_1m"


def test_ledger_claims_each_minute_once_and_reports_gaps_by_open_time() -> None:
    ledger = MinuteLedger()
    t0 = 1769904000000
    ledger.track("BTCUSDT", t0)
    assert ledger.missing("BTCUSDT", t0 + 2 * MINUTE_MS) == [t0, t0 + MINUTE_MS, t0 + 2 * MINUTE_MS]
    assert ledger.claim("BTCUSDT", t0 + MINUTE_MS)
    assert not ledger.claim("BTCUSDT", t0 + MINUTE_MS)  # a second source of the same minute
    assert ledger.missing("BTCUSDT", t0 + 2 * MINUTE_MS) == [t0, t0 + 2 * MINUTE_MS]
    ledger.release("BTCUSDT", [t0 + MINUTE_MS])  # its publish failed: asked for again
    assert ledger.missing("BTCUSDT", t0 + MINUTE_MS) == [t0, t0 + MINUTE_MS]
    ledger.done("BTCUSDT", [t0, t0 + MINUTE_MS])
    assert ledger.missing("BTCUSDT", t0 + 2 * MINUTE_MS) == [t0 + 2 * MINUTE_MS]
    assert ledger.is_done("BTCUSDT", t0 - MINUTE_MS)  # before the wanted history
    assert not ledger.claim("BTCUSDT", t0)
    ledger.forget("BTCUSDT")
    assert ledger.missing("BTCUSDT", t0 + 10 * MINUTE_MS) == []


EXCHANGE_INFO = {
    "symbols": [
        {"symbol": "BTCUSDT", "contractType": "PERPETUAL", "quoteAsset": "USDT", "status": "TRADING"},
        {"symbol": "ETHUSDT", "contractType": "PERPETUAL", "quoteAsset": "USDT", "status": "TRADING"},
        {"symbol": "SOLUSDT", "contractType": "PERPETUAL", "quoteAsset": "USDT", "status": "TRADING"},
        {"symbol": "BTCUSDT_261225", "contractType": "CURRENT_QUARTER", "quoteAsset": "USDT", "status": "TRADING"},
        {"symbol": "ETHBTC", "contractType": "PERPETUAL", "quoteAsset": "BTC", "status": "TRADING"},
        {"symbol": "OLDUSDT", "contractType": "PERPETUAL", "quoteAsset": "USDT", "status": "SETTLING"},
    ]
}
TICKERS = [
    {"symbol": "BTCUSDT", "quoteVolume": "9000000000"},
    {"symbol": "ETHUSDT", "quoteVolume": "7000000000"},
    {"symbol": "SOLUSDT", "quoteVolume": "8000000000"},
]


def test_symbols_are_trading_usdt_perpetuals_optionally_top_n_or_a_fixed_list() -> None:
    assert choose_symbols(EXCHANGE_INFO, None) == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    assert choose_symbols(EXCHANGE_INFO, TICKERS, top_n=2) == ["BTCUSDT", "SOLUSDT"]
    assert choose_symbols(EXCHANGE_INFO, TICKERS, fixed=["ethusdt", "OLDUSDT", "NOPEUSDT"]) == ["ETHUSDT"]
    assert top_by_quote_volume(["ETHUSDT", "SOLUSDT"], TICKERS, 1) == ["SOLUSDT"]
