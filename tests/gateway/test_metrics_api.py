"""Latest metrics from Redis through the calculator's MetricsStore, in api.md's shape."""

from __future__ import annotations

import pytest
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
            "5m": TimeframeMetrics(
                open=price * 0.99,
                high=price * 1.02,
                low=price * 0.98,
                close=price,
                price_change=1.0101,
                volume=2.5e6,
                coverage=1.0,
            ),
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
    assert set(btc["timeframes"]["5m"]) == TIMEFRAME_KEYS | {"fibonacci"}
    assert btc["timeframes"]["5m"]["price_change"] == 1.0101
    assert btc["timeframes"]["15m"]["rsi_14"] is None  # null where not computable


async def test_every_timeframe_has_the_clients_fibonacci_levels_of_its_own_window(
    gw: Client, redis_client: aioredis.Redis
) -> None:
    # client.md, decision 12: r3..s3 on every timeframe, from that window's high, low and close.
    await MetricsStore(redis_client).save([snapshot("BTCUSDT", 65000.0)])
    btc = (await (await gw.get("/api/metrics/")).json())[0]
    keys = {"r3", "r2", "r1", "pivot", "s1", "s2", "s3"}
    for name, timeframe in btc["timeframes"].items():
        assert set(timeframe["fibonacci"]) == keys, name
    high, low, close = 65000.0 * 1.02, 65000.0 * 0.98, 65000.0
    pivot, spread = (high + low + close) / 3, high - low
    fib = btc["timeframes"]["5m"]["fibonacci"]
    expected = {"r3": 1.0, "r2": 0.618, "r1": 0.382, "pivot": 0.0, "s1": -0.382, "s2": -0.618, "s3": -1.0}
    for key, ratio in expected.items():
        assert fib[key] == pytest.approx(pivot + ratio * spread), key
    assert fib["r3"] > fib["r2"] > fib["r1"] > fib["pivot"] > fib["s1"] > fib["s2"] > fib["s3"]
    # A window without a high or low (nothing computed yet) has null levels, never zeros.
    assert set(btc["timeframes"]["1h"]["fibonacci"].values()) == {None}


async def test_one_symbol_on_both_paths_and_404_when_untracked(gw: Client, redis_client: aioredis.Redis) -> None:
    await MetricsStore(redis_client).save([snapshot("BTCUSDT", 65000.0)])
    for path in ("/api/metrics/BTCUSDT", "/metrics/BTCUSDT", "/api/metrics/btcusdt"):
        response = await gw.get(path)
        assert response.status == 200, path
        assert (await response.json())["last_price"] == 65000.0
    missing = await gw.get("/api/metrics/DOGEUSDT")
    assert missing.status == 404 and (await missing.json())["code"] == "not_found"
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
