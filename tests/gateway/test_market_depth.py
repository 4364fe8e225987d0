"""Charts with depth (stored bars behind the candles), Binance's number format, 404 and 400 that name things."""

from __future__ import annotations

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from collector.bars import Bar, upsert_bars
from gateway.candles import BAR_SOURCES, INTERVALS
from gateway.precision import fixed, significant
from screener.events.models import MINUTE_MS
from tests.gateway.helpers import BASE_MINUTE, insert_alerts, insert_candles, make_alert

Client = TestClient[web.Request, web.Application]
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
DAY = BASE_MINUTE - BASE_MINUTE % DAY_MS  # the forming day: candles from 6 h before it to 3 h into it


def _bars(symbol: str, interval: str, first: int, end: int, price: float) -> list[Bar]:
    span = INTERVALS[interval] * MINUTE_MS
    return [
        Bar(symbol, interval, t, price, price + 2.0, price - 2.0, price + 1.0, 100.0, 100.0 * price)
        for t in range(first, end, span)
    ]


async def _store_history(pool: asyncpg.Pool) -> list[dict[str, float]]:
    """Store 14 days of 1d/4h/1h bars and 9 hours of 1-minute candles (six before DAY, three after)."""
    async with pool.acquire() as conn:
        for interval in ("1h", "4h", "1d"):
            span = INTERVALS[interval] * MINUTE_MS
            end = DAY - 6 * HOUR_MS - (DAY - 6 * HOUR_MS) % span + span  # through the bar holding DAY - 6 h
            await upsert_bars(conn, _bars("BTCUSDT", interval, DAY - 14 * DAY_MS, min(end, DAY), 90.0))
        return await insert_candles(conn, "BTCUSDT", DAY - 6 * HOUR_MS, 9 * 60)


async def _klines(gw: Client, interval: str, **params: str) -> list[list[object]]:
    response = await gw.get("/api/klines", params={"symbol": "BTCUSDT", "interval": interval, **params})
    assert response.status == 200, await response.text()
    return await response.json()


def test_every_bar_source_divides_its_interval() -> None:
    assert set(BAR_SOURCES) == set(INTERVALS) - {"1m", "3m"}
    assert all(INTERVALS[i] % INTERVALS[s] == 0 for i, s in BAR_SOURCES.items())


async def test_daily_klines_reach_back_through_the_stored_bars(gw: Client, pool: asyncpg.Pool) -> None:
    candles = await _store_history(pool)
    daily = await _klines(gw, "1d", limit="30")
    assert [k[0] for k in daily] == [DAY - d * DAY_MS for d in range(14, -1, -1)]
    # The day before DAY has candles for only its last 6 hours: its stored bar is whole, so it wins.
    assert daily[-2][1] == "90.0" and daily[-2][8] == 0
    # The forming day comes from the candles (with their trade counts).
    assert daily[-1][1] == fixed(candles[6 * 60]["open"], 1)
    assert daily[-1][8] == sum(int(c["trades"]) for c in candles[6 * 60 :])
    assert len(daily[0]) == 12 and daily[0][6] == DAY - 14 * DAY_MS + DAY_MS - 1


async def test_4h_and_12h_klines_mix_whole_candle_buckets_and_bars(gw: Client, pool: asyncpg.Pool) -> None:
    candles = await _store_history(pool)
    four = await _klines(gw, "4h", limit="1500")
    assert len(four) == 14 * 6 + 1
    by_open = {k[0]: k for k in four}
    assert by_open[DAY - 8 * HOUR_MS][8] == 0  # candles cover half of it: the bar
    whole = candles[2 * 60 : 6 * 60]  # DAY - 4 h .. DAY: whole from the candles
    assert by_open[DAY - 4 * HOUR_MS][8] == sum(int(c["trades"]) for c in whole)
    twelve = await _klines(gw, "12h", limit="1500")
    assert [k[0] for k in twelve][:2] == [DAY - 14 * DAY_MS, DAY - 14 * DAY_MS + 12 * HOUR_MS]
    assert twelve[0][5] == "300.000"  # three 4h bars of 100.000 each (BTCUSDT: step 0.001)
    hourly = await _klines(gw, "1h", limit="1500")
    assert len(hourly) == 14 * 24 + 3
    ranged = await _klines(gw, "1d", startTime=str(DAY - 3 * DAY_MS + 1), limit="2")
    assert [k[0] for k in ranged] == [DAY - 2 * DAY_MS, DAY - DAY_MS]


async def test_klines_and_tickers_spell_numbers_with_the_symbols_precision(gw: Client, pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await insert_candles(conn, "BTCUSDT", BASE_MINUTE, 30, price=100.0, step=0.1)
        await insert_candles(conn, "ZZZUSDT", BASE_MINUTE, 30, price=0.0012, step=0.0000001)
    one = await _klines(gw, "1m", limit="3")
    assert (one[-1][1], one[-1][4], one[-1][5]) == ("102.9", "103.0", "39.000")
    for kline in one:
        for price in kline[1:5]:
            assert isinstance(price, str) and len(price.split(".")[1]) == 1  # tick 0.1
        assert len(kline[5].split(".")[1]) == 3  # step 0.001
    fifteen = await _klines(gw, "15m")
    assert all(len(k[5].split(".")[1]) == 3 and len(k[7].split(".")[1]) == 4 for k in fifteen)  # quote: 1 + 3
    tickers = await (await gw.get("/api/tickers", params={"symbols": "BTCUSDT,ZZZUSDT"})).json()
    btc, zzz = tickers
    assert btc["lastPrice"] == "103.0" and btc["openPrice"] == "100.0" and btc["priceChange"] == "3.0"
    assert btc["priceChangePercent"] == "3.000"
    assert btc["volume"] == "735.000"
    # A symbol the table does not know: 8 significant digits, the float noise gone.
    assert zzz["priceChange"] == "0.000003"
    assert zzz["lastPrice"] == "0.001203"
    for value in (*btc.values(), *zzz.values()):
        assert "999999" not in str(value) and "000000001" not in str(value)


def test_fallback_and_fixed_formats() -> None:
    assert significant(0.0013999999999999985) == "0.0014"
    assert significant(103905.80000000002) == "103905.8"
    assert significant(-0.0) == "0"
    assert significant(1e-12) == "0"
    assert fixed(-0.00001, 2) == "0.00"
    assert fixed(9642.0, 1) == "9642.0"


async def test_unknown_symbol_is_a_404_on_klines_and_metrics_alike(gw: Client, pool: asyncpg.Pool) -> None:
    for path, params in (
        ("/api/klines", {"symbol": "NOPEUSDT", "interval": "1h"}),
        ("/api/metrics/NOPEUSDT", {}),
    ):
        response = await gw.get(path, params=params)
        body = await response.json()
        assert response.status == 404, path
        assert body["code"] == "not_found" and "NOPEUSDT" in body["message"]
    # A symbol with only stored bars (its candles aged out) is known: an empty 1m answer, not a 404.
    async with pool.acquire() as conn:
        await upsert_bars(conn, _bars("OLDUSDT", "1d", DAY - 3 * DAY_MS, DAY, 5.0))
    response = await gw.get("/api/klines", params={"symbol": "OLDUSDT", "interval": "1m"})
    assert response.status == 200 and await response.json() == []
    assert len(await (await gw.get("/api/klines", params={"symbol": "OLDUSDT", "interval": "1d"})).json()) == 3


@pytest.mark.parametrize("rule_type", ["futures_no_such_rule", "nope"])
async def test_unknown_rule_type_in_alert_history_is_a_400_naming_it(
    gw: Client, pool: asyncpg.Pool, rule_type: str
) -> None:
    async with pool.acquire() as conn:
        await insert_alerts(conn, [make_alert("BTCUSDT", "futures_top_hunter", BASE_MINUTE)])
    response = await gw.get("/api/alerts", params={"rule_type": rule_type})
    body = await response.json()
    assert response.status == 400
    assert body["code"] == "invalid_parameter" and "'rule_type'" in body["message"] and rule_type in body["message"]
    known = await gw.get("/api/alerts", params={"rule_type": "futures_top_hunter"})
    assert known.status == 200 and len(await known.json()) == 1
