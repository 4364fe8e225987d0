"""A replay's warm-up gives the calculator full windows and indicators on the first streamed minute."""

from __future__ import annotations

import asyncpg
import pytest
import redis.asyncio as aioredis

from collector.emitter import closed_candle_event
from collector.replay.runner import load_market
from collector.replay.warmup import warm_up, warmup_end
from functions.calculator.function import create
from screener.config import load_settings
from screener.runtime.function import Delivery


@pytest.fixture
async def warmed(postgres_dsn: str) -> str:
    conn = await asyncpg.connect(postgres_dsn)
    try:
        defaults = load_settings({})
        await warm_up(conn, load_market(defaults), defaults.replay_warmup_minutes)
    finally:
        await conn.close()
    return postgres_dsn


async def test_first_streamed_minute_has_full_windows_and_indicators(
    warmed: str, redis_url: str, redis_client: aioredis.Redis
) -> None:
    assert await redis_client.dbsize() == 0  # the calculator starts from nothing but the database
    settings = load_settings({}, postgres_dsn=warmed, redis_url=redis_url)
    market = load_market(settings)
    first = warmup_end(market, settings.replay_warmup_minutes)
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
