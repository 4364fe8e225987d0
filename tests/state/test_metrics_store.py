"""MetricsStore on a real Redis: latest, history, provisional kept apart, constant round trips."""

from __future__ import annotations

import redis.asyncio as aioredis

from screener.events.models import MINUTE_MS, MetricsSnapshot, TimeframeMetrics, minute_close_iso
from state.metrics_store import HISTORY_MINUTES, REFERENCE_HISTORY_MINUTES, MetricsStore, history_minutes
from tests.state.test_candles import CountingConnection

T0 = 1_770_000_000_000 - 1_770_000_000_000 % MINUTE_MS


def snapshot(symbol: str, minute: int, price: float, provisional: bool = False) -> MetricsSnapshot:
    """Return a small snapshot."""
    return MetricsSnapshot(
        symbol=symbol,
        minute=minute,
        timestamp=minute_close_iso(minute),
        last_price=price,
        provisional=provisional,
        timeframes={"5m": TimeframeMetrics(close=price, coverage=1.0)},
    )


async def test_latest_is_the_newest_closed_minute_per_symbol(redis_client: aioredis.Redis) -> None:
    store = MetricsStore(redis_client)
    await store.save([snapshot("BTCUSDT", T0, 1.0), snapshot("ETHUSDT", T0, 2.0)])
    await store.save([snapshot("BTCUSDT", T0 + MINUTE_MS, 1.5)])
    await store.save([snapshot("BTCUSDT", T0, 1.0)])  # a redelivery of the older minute
    latest = await store.latest()
    assert [(s.symbol, s.minute, s.last_price) for s in latest] == [
        ("BTCUSDT", T0 + MINUTE_MS, 1.5),
        ("ETHUSDT", T0, 2.0),
    ]
    assert [s.symbol for s in await store.latest(["ETHUSDT", "NOPEUSDT"])] == ["ETHUSDT"]
    assert await store.latest_minute("BTCUSDT") == T0 + MINUTE_MS
    assert await store.latest_minute("NOPEUSDT") is None
    assert await store.tracked_symbols() == ["BTCUSDT", "ETHUSDT"]


async def test_at_returns_the_exact_minute_while_it_is_kept(redis_client: aioredis.Redis) -> None:
    store = MetricsStore(redis_client)
    for i in range(HISTORY_MINUTES + 5):
        await store.save([snapshot("SOLUSDT", T0 + i * MINUTE_MS, float(i))])
    newest = T0 + (HISTORY_MINUTES + 4) * MINUTE_MS
    kept = await store.at("SOLUSDT", newest - (HISTORY_MINUTES - 1) * MINUTE_MS)
    assert kept is not None
    assert kept.last_price == float(4 + 1)
    assert await store.at("SOLUSDT", T0) is None  # overwritten by a later minute of the same slot
    assert await store.at("SOLUSDT", newest + MINUTE_MS) is None
    # A minute older than the history never overwrites a kept one.
    await store.save([snapshot("SOLUSDT", T0 + 5 * MINUTE_MS - HISTORY_MINUTES * MINUTE_MS, -1.0)])
    assert await store.at("SOLUSDT", T0 + 5 * MINUTE_MS) is not None


async def test_reference_symbols_keep_a_day_for_rules_that_lag(redis_client: aioredis.Redis) -> None:
    store = MetricsStore(redis_client)
    assert history_minutes("BTCUSDT") == REFERENCE_HISTORY_MINUTES > history_minutes("SOLUSDT") == HISTORY_MINUTES
    await store.save([snapshot("BTCUSDT", T0 + i * MINUTE_MS, float(i)) for i in range(120)])
    old = await store.at("BTCUSDT", T0)  # two hours behind the newest: still there for BTC.c1h
    assert old is not None and old.last_price == 0.0


async def test_provisional_snapshots_never_replace_closed_ones(redis_client: aioredis.Redis) -> None:
    store = MetricsStore(redis_client)
    await store.save([snapshot("BTCUSDT", T0, 1.0)])
    await store.save([snapshot("BTCUSDT", T0 + MINUTE_MS, 9.0, provisional=True)])
    (closed,) = await store.latest(["BTCUSDT"])
    assert (closed.minute, closed.provisional) == (T0, False)
    (shown,) = await store.latest(["BTCUSDT"], provisional=True)
    assert (shown.minute, shown.provisional, shown.last_price) == (T0 + MINUTE_MS, True, 9.0)
    assert await store.at("BTCUSDT", T0 + MINUTE_MS) is None
    # Once the minute closes, the closed snapshot wins even with provisional=True.
    await store.save([snapshot("BTCUSDT", T0 + MINUTE_MS, 9.5)])
    (shown,) = await store.latest(["BTCUSDT"], provisional=True)
    assert (shown.minute, shown.provisional, shown.last_price) == (T0 + MINUTE_MS, False, 9.5)


async def test_saving_and_reading_many_symbols_costs_constant_round_trips(redis_url: str) -> None:
    client = aioredis.from_url(redis_url, connection_class=CountingConnection)
    await client.flushdb()
    store = MetricsStore(client)
    try:
        await store.save([snapshot("WARMUSDT", T0, 1.0)])
        await store.latest()
        for count in (3, 300):
            CountingConnection.sends = 0
            await store.save([snapshot(f"S{i}USDT", T0, float(i)) for i in range(count)])
            assert CountingConnection.sends == 1
            CountingConnection.sends = 0
            assert len(await store.latest()) == count + 1
            assert CountingConnection.sends == 2  # the symbol set, then one pipeline
    finally:
        await client.aclose()


async def test_the_restore_mark_is_claimed_once_per_redis_content(redis_client: aioredis.Redis) -> None:
    store = MetricsStore(redis_client)
    assert await store.claim_restore()
    assert not await store.claim_restore()  # another calculator has it (or it is done)
    await redis_client.flushdb()  # Redis lost everything: the snapshots are due again
    assert await store.claim_restore()
