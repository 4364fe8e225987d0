"""The rules function against real PostgreSQL and Redis: persist, emit, dedupe, reload without restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
import redis.asyncio as aioredis
from nats.js import JetStreamContext

from functions.rules.function import RulesFunction, StoreCrossSymbols
from functions.rules.store import seed_rules
from screener.config import load_settings
from screener.events import nats_binding
from screener.events.envelope import InvalidEvent, make_event, nats_subject
from screener.events.models import MINUTE_MS, Alert, MetricsSnapshot, alert_id
from screener.names import TYPE_ALERT_TRIGGERED, TYPE_CANDLE_CLOSED
from screener.runtime.function import Delivery, PartialBatch, TransientError
from screener.streams import ensure_streams
from state.metrics_store import MetricsStore
from tests.functions.rules.snapshots import T0, metrics_event, snapshot
from tests.functions.rules.test_engine import BULL_60


@pytest.fixture
async def rules_function(
    postgres_dsn: str, redis_url: str, redis_client: aioredis.Redis, pg: asyncpg.Connection
) -> AsyncIterator[RulesFunction]:
    await seed_rules(pg)
    settings = load_settings({}, postgres_dsn=postgres_dsn, redis_url=redis_url)
    function = RulesFunction(settings)
    await function.start()
    yield function
    await function.close()


def deliveries(*snapshots: MetricsSnapshot) -> list[Delivery[MetricsSnapshot]]:
    return [Delivery(metrics_event(s), s) for s in snapshots]


async def test_parse_accepts_metrics_and_rejects_other_events(rules_function: RulesFunction) -> None:
    s = snapshot("ETHUSDT", T0, c5m=1.0)
    assert rules_function.parse(metrics_event(s)) == s
    other = make_event(event_type=TYPE_CANDLE_CLOSED, source="x", event_id="1", subject="ETHUSDT", data={})
    with pytest.raises(InvalidEvent):
        rules_function.parse(other)


async def test_handle_persists_alerts_and_returns_their_events(
    rules_function: RulesFunction, pg: asyncpg.Connection
) -> None:
    batch = deliveries(snapshot("ETHUSDT", T0, **BULL_60), snapshot("BTCUSDT", T0, c1h=0.5))
    events = await rules_function.handle(batch)
    ids = {alert_id("futures_big_bull_60", "ETHUSDT", T0), alert_id("futures_big_bull_60_v2", "ETHUSDT", T0)}
    assert {e.get_id() for e in events} == ids
    assert all(e.get_type() == TYPE_ALERT_TRIGGERED and e.get_subject() == "ETHUSDT" for e in events)
    assert all(e.get_attributes()["traceparent"].startswith("00-0af7651916cd43dd") for e in events)
    rows = await pg.fetch("SELECT id::text, rule_type, symbol, price, audience FROM alert_history ORDER BY rule_type")
    assert {r["id"] for r in rows} == ids
    data = events[0].get_data()
    assert isinstance(data, dict)
    assert Alert.model_validate(data).timestamp == "2025-06-01T00:01:00Z"


async def test_redelivered_batch_emits_the_same_ids_and_stores_nothing_new(
    rules_function: RulesFunction, pg: asyncpg.Connection
) -> None:
    batch = deliveries(snapshot("ETHUSDT", T0, **BULL_60))
    first = await rules_function.handle(batch)
    again = await rules_function.handle(batch)
    assert [e.get_id() for e in again] == [e.get_id() for e in first]
    assert await pg.fetchval("SELECT count(*) FROM alert_history") == len(first)
    assert rules_function.alerts_inserted == len(first)


async def test_two_workers_on_the_same_minutes_never_double_fire(
    rules_function: RulesFunction, postgres_dsn: str, redis_url: str, pg: asyncpg.Connection
) -> None:
    other = RulesFunction(load_settings({}, postgres_dsn=postgres_dsn, redis_url=redis_url), watch=False)
    await other.start()
    try:
        # a batch redelivered to a second worker while the first still works on it
        batch = deliveries(*(snapshot("ETHUSDT", T0 + n * MINUTE_MS, **BULL_60) for n in range(5)))
        a, b = await asyncio.gather(rules_function.handle(batch), other.handle(batch))
        ids = {e.get_id() for e in [*a, *b]}
        # cooldown of 5 min: only minute 0 fires, whichever worker decides first (no BTC: no V2)
        assert ids == {alert_id("futures_big_bull_60", "ETHUSDT", T0)}
        assert await pg.fetchval("SELECT count(*) FROM alert_history") == 1
    finally:
        await other.close()


async def test_edit_in_alert_rules_reaches_a_running_worker(
    rules_function: RulesFunction, pg: asyncpg.Connection
) -> None:
    assert "futures_top_hunter" in rules_function.config.enabled()
    before = rules_function.reloads
    await pg.execute("UPDATE alert_rules SET enabled = false WHERE rule_type = 'futures_top_hunter'")
    await pg.execute(
        "INSERT INTO alert_rules (rule_type, name, expression, owner) VALUES ('alice_dip', 'Dip', 'c5m < -1', 'alice')"
    )
    await _until(lambda: rules_function.reloads > before and "alice_dip" in rules_function.config.enabled())
    assert "futures_top_hunter" not in rules_function.config.enabled()
    events = await rules_function.handle(deliveries(snapshot("SOLUSDT", T0, c5m=-2.0)))
    assert [e.get_id() for e in events] == [alert_id("alice_dip", "SOLUSDT", T0)]


async def test_personal_switch_changes_the_audience_without_restart(
    rules_function: RulesFunction, pg: asyncpg.Connection
) -> None:
    await pg.execute(
        """INSERT INTO user_settings (user_id, rules) VALUES ('bob', '{"futures_whale_detector": true}')"""
    )
    await _until(lambda: "bob" in rules_function.config.switches)
    assert rules_function.config.audiences["futures_whale_detector"].users == ["bob"]


async def _until(condition: object, timeout: float = 5.0) -> None:
    assert callable(condition)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_store_cross_symbols_reads_the_metrics_store(redis_client: aioredis.Redis) -> None:
    store = MetricsStore(redis_client)
    cross = StoreCrossSymbols(store, wait_seconds=0.05, poll_seconds=0.01)
    assert await cross.fetch({"BTCUSDT"}, T0) == {"BTCUSDT": None}  # untracked: null
    await store.save([snapshot("BTCUSDT", T0 - MINUTE_MS, c1h=0.1)])
    with pytest.raises(TransientError):
        await cross.fetch({"BTCUSDT"}, T0)  # tracked, that minute not stored yet: retry later
    await store.save([snapshot("BTCUSDT", T0 + MINUTE_MS, c1h=0.3)])
    assert await cross.fetch({"BTCUSDT"}, T0) == {"BTCUSDT": None}  # passed that minute without one
    btc = snapshot("BTCUSDT", T0, c1h=0.2)
    await store.save([btc])
    assert await cross.fetch({"BTCUSDT"}, T0) == {"BTCUSDT": btc}


async def test_store_cross_symbols_waits_briefly_for_a_late_snapshot(redis_client: aioredis.Redis) -> None:
    store = MetricsStore(redis_client)
    await store.save([snapshot("BTCUSDT", T0 - MINUTE_MS)])
    cross = StoreCrossSymbols(store, wait_seconds=5.0, poll_seconds=0.01)
    btc = snapshot("BTCUSDT", T0, c1h=0.2)
    fetch = asyncio.create_task(cross.fetch({"BTCUSDT"}, T0))
    await asyncio.sleep(0)  # let the fetch find nothing first
    await store.save([btc])
    assert await fetch == {"BTCUSDT": btc}


async def _in_stream(js: JetStreamContext, *snapshots: MetricsSnapshot) -> list[Delivery[MetricsSnapshot]]:
    """Publish the snapshots' events to the METRICS stream; return deliveries carrying their sequences."""
    await ensure_streams(js, load_settings({}))
    found = []
    for s in snapshots:
        event = metrics_event(s)
        headers, payload = nats_binding.to_binary(event)
        ack = await js.publish(nats_subject(event), payload, headers=headers)
        found.append(Delivery(event, s, sequence=ack.seq))
    return found


async def _handle(function: RulesFunction, batch: list[Delivery[MetricsSnapshot]]) -> tuple[list[str], int]:
    """Handle as the worker does; return the alert ids and how many deliveries must wait."""
    try:
        events, waiting = list(await function.handle(batch)), frozenset[int]()
    except PartialBatch as partial:
        events, waiting = list(partial.outputs), partial.waiting
    await function.published([d for i, d in enumerate(batch) if i not in waiting])
    return [e.get_id() for e in events], len(waiting)


async def test_minutes_arriving_out_of_order_are_evaluated_in_stream_order(
    rules_function: RulesFunction, jetstream: JetStreamContext, pg: asyncpg.Connection
) -> None:
    quiet = {"c1h": 0.1}
    m0, m1, m2, m3 = await _in_stream(
        jetstream,
        snapshot("ETHUSDT", T0, **quiet),
        snapshot("ETHUSDT", T0 + MINUTE_MS, **BULL_60),
        snapshot("ETHUSDT", T0 + 2 * MINUTE_MS, **quiet),
        snapshot("ETHUSDT", T0 + 3 * MINUTE_MS, **BULL_60),
    )
    rules_function.bind_jetstream(jetstream)
    await rules_function.start()  # again, now with the stream bound
    assert await _handle(rules_function, [m0]) == ([], 0)
    # minute 3 arrives before 1 and 2 (a redelivery, a second worker): it waits, nothing fires
    assert await _handle(rules_function, [m3]) == ([], 1)
    fired = alert_id("futures_big_bull_60", "ETHUSDT", T0 + MINUTE_MS)
    assert await _handle(rules_function, [m2, m1]) == ([fired], 0)
    # now in order: the cooldown started at minute 1 holds minute 3 back, as in a clean run
    assert await _handle(rules_function, [m3]) == ([], 0)
    # a redelivery of a minute already done is skipped
    assert await _handle(rules_function, [m1]) == ([], 0)
    assert await pg.fetchval("SELECT count(*) FROM alert_history") == 1


async def test_positions_survive_a_redis_flush_through_postgresql(
    rules_function: RulesFunction, jetstream: JetStreamContext, redis_client: aioredis.Redis
) -> None:
    (m0, m1) = await _in_stream(
        jetstream, snapshot("ETHUSDT", T0, **BULL_60), snapshot("ETHUSDT", T0 + MINUTE_MS, **BULL_60)
    )
    rules_function.bind_jetstream(jetstream)
    await rules_function.start()
    assert await _handle(rules_function, [m0]) == ([alert_id("futures_big_bull_60", "ETHUSDT", T0)], 0)
    await redis_client.flushdb()
    # minute 0 redelivered after the flush: known done (PostgreSQL), so it neither fires again nor
    # lets minute 1 escape the cooldown it started
    assert await _handle(rules_function, [m0, m1]) == ([], 0)


async def test_a_gap_before_a_minute_is_not_waited_for(rules_function: RulesFunction) -> None:
    await rules_function.handle(deliveries(snapshot("ETHUSDT", T0, c1h=0.1)))
    # minutes 1..4 have neither a candle nor metrics (the market was silent, so minute 5's windows
    # are not fully covered): no wait, no error
    loop = asyncio.get_running_loop()
    began = loop.time()
    later = snapshot("ETHUSDT", T0 + 5 * MINUTE_MS, coverage=0.9, c5m=-3.0)
    assert await rules_function.handle(deliveries(later)) == []
    assert loop.time() - began < 2.0
