"""A replay's warm-up gives the calculator full windows and indicators on the first streamed minute."""

from __future__ import annotations

import asyncpg
import pytest
import redis.asyncio as aioredis
from cloudevents.core.base import BaseCloudEvent

from collector.emitter import closed_candle_event
from collector.replay.runner import load_market
from collector.replay.warmup import warm_up, warmup_end
from functions.calculator.function import create
from functions.rules.backtest import parse_instant
from functions.rules.function import RulesFunction
from functions.rules.store import seed_rules
from screener.config import load_settings
from screener.events.models import MINUTE_MS
from screener.runtime.function import Delivery


@pytest.fixture
async def warmed(postgres_dsn: str) -> str:
    conn = await asyncpg.connect(postgres_dsn)
    try:
        defaults = load_settings({})
        await warm_up(conn, load_market(defaults), defaults.warmup_minutes)
    finally:
        await conn.close()
    return postgres_dsn


async def test_first_streamed_minute_has_full_windows_and_indicators(
    warmed: str, redis_url: str, redis_client: aioredis.Redis
) -> None:
    assert await redis_client.dbsize() == 0  # the calculator starts from nothing but the database
    settings = load_settings({}, postgres_dsn=warmed, redis_url=redis_url)
    market = load_market(settings)
    first = warmup_end(market, settings.warmup_minutes)
    calculator = create(settings)
    await calculator.start()
    try:
        batch = []
        for candle in market.candles_at(first):
            event = closed_candle_event(candle)
            batch.append(Delivery(event, calculator.parse(event)))
        events = await calculator.handle(batch)
    finally:
        await calculator.close()
    snapshots = {e.get_subject(): e.get_data() for e in events}
    assert set(snapshots) == set(market.symbols)
    for data in snapshots.values():
        assert isinstance(data, dict)
        assert data["timeframes"]["1d"]["coverage"] == 1.0
        assert data["timeframes"]["1d"]["volume_ratio"] is not None  # the day before is there too
        assert data["timeframes"]["1h"]["rsi_14"] is not None
        assert data["timeframes"]["15m"]["macd_signal"] is not None
        assert data["change_14d"] is not None


async def test_default_replay_is_the_16_symbol_month_and_streams_into_alerts_within_a_minute(
    warmed: str, redis_url: str, pg: asyncpg.Connection
) -> None:
    """`screener up`'s default: every rule can fire (BTCUSDT is there) and the first alerts come at once.

    The calculator and the rules function run in-process on what the warm-up left in PostgreSQL, as
    the pipeline does from the first streamed minute; at the default 60x, 60 streamed minutes are
    one minute of a new user's time.
    """
    settings = load_settings({}, postgres_dsn=warmed, redis_url=redis_url)
    assert settings.replay_recording == "binance-um-2025-05"
    market = load_market(settings)
    assert len(market.symbols) == 16 and "BTCUSDT" in market.symbols
    first = warmup_end(market, settings.warmup_minutes)
    assert first == parse_instant("2025-05-23T18:33")
    await seed_rules(pg)
    calculator = create(settings)
    rules = RulesFunction(settings, watch=False)
    await calculator.start()
    await rules.start()
    alerts: list[BaseCloudEvent] = []
    try:
        for minute in range(first, first + 30 * MINUTE_MS, MINUTE_MS):
            candles = [closed_candle_event(c) for c in market.candles_at(minute)]
            metrics = await calculator.handle([Delivery(e, calculator.parse(e)) for e in candles])
            alerts += await rules.handle([Delivery(e, rules.parse(e)) for e in metrics])
    finally:
        await rules.close()
        await calculator.close()
    assert alerts, "no alert in the first 30 streamed minutes (30 s at 60x)"
    first_alert = await pg.fetchval("SELECT min(minute) FROM alert_history")
    assert first_alert is not None and first_alert.timestamp() * 1000 - first < 30 * MINUTE_MS
