"""Latest metrics from Redis through the calculator's MetricsStore, in api.md's shape."""

from __future__ import annotations

import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient

from screener.events.models import Fibonacci, MetricsSnapshot, TimeframeMetrics, minute_close_iso
from state.metrics_store import MetricsStore
from tests.gateway.helpers import BASE_MINUTE

Client = TestClient[web.Request, web.Application]
TIMEFRAME_KEYS = {
    "open",
    "high",
    "low",
    "close",
    "volume",
    "price_change",
    "volume_ratio",
    "vwap",
    "vcp",
    "rsi_14",
    "macd",
    "macd_signal",
    "macd_hist",
    "bb_upper",
    "bb_middle",
    "bb_lower",
    "coverage",
}


def snapshot(symbol: str, price: float) -> MetricsSnapshot:
    return MetricsSnapshot(
        symbol=symbol,
        minute=BASE_MINUTE,
        timestamp=minute_close_iso(BASE_MINUTE),
        last_price=price,
        timeframes={
            "5m": TimeframeMetrics(open=price * 0.99, close=price, price_change=1.0101, volume=2.5e6, coverage=1.0),
            "1d": TimeframeMetrics(
                close=price, coverage=0.5, fibonacci=Fibonacci(pivot=price, r1=price * 1.1, s1=price * 0.9)
            ),
        },
    )


async def test_all_metrics_is_an_array_of_symbol_objects(gw: Client, redis_client: aioredis.Redis) -> None:
    await MetricsStore(redis_client).save([snapshot("ETHUSDT", 2500.0), snapshot("BTCUSDT", 65000.0)])
    for path in ("/api/metrics/", "/api/metrics"):
        body = await (await gw.get(path)).json()
        assert isinstance(body, list)
        assert [m["symbol"] for m in body] == ["BTCUSDT", "ETHUSDT"]
    btc = body[0]
    assert set(btc) == {"symbol", "timestamp", "last_price", "timeframes"}
    assert set(btc["timeframes"]) == {"5m", "15m", "1h", "4h", "8h", "1d"}
    assert set(btc["timeframes"]["5m"]) == TIMEFRAME_KEYS
    assert btc["timeframes"]["5m"]["price_change"] == 1.0101
    assert btc["timeframes"]["15m"]["rsi_14"] is None  # null where not computable
    assert btc["timeframes"]["1d"]["fibonacci"]["pivot"] == 65000.0
    assert btc["timeframes"]["1d"]["fibonacci"]["r618"] is None
    assert "fibonacci" not in btc["timeframes"]["1h"]


async def test_one_symbol_on_both_paths_and_404_when_untracked(gw: Client, redis_client: aioredis.Redis) -> None:
    await MetricsStore(redis_client).save([snapshot("BTCUSDT", 65000.0)])
    for path in ("/api/metrics/BTCUSDT", "/metrics/BTCUSDT", "/api/metrics/btcusdt"):
        response = await gw.get(path)
        assert response.status == 200, path
        assert (await response.json())["last_price"] == 65000.0
    missing = await gw.get("/api/metrics/DOGEUSDT")
    assert missing.status == 404 and (await missing.json())["error"]["code"] == "not_found"
    bad = await gw.get("/api/metrics/BTC-USDT")
    assert bad.status == 400


async def test_symbols_endpoint_marks_symbols_with_live_metrics(gw: Client, redis_client: aioredis.Redis) -> None:
    await MetricsStore(redis_client).save([snapshot("XRPUSDT", 0.5)])
    body = await (await gw.get("/api/symbols")).json()
    assert body == [
        {
            "symbol": "XRPUSDT",
            "first_minute": None,
            "last_minute": None,
            "first_time": None,
            "last_time": None,
            "candles": 0,
            "coverage": 0.0,
            "live": True,
        }
    ]
