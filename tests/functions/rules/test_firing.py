"""Frequencies and the fired-minutes record: in memory and in Redis, with the same decisions."""

from __future__ import annotations

import random

import asyncpg
import pytest
import redis.asyncio as aioredis

from functions.rules.firing import Candidate, FiringState, MemoryFiringState, RecentQuery
from functions.rules.history import AlertHistory
from functions.rules.redis_state import INDEX_MARKER, RedisFiringState, fired_key
from screener.events.models import MINUTE_MS, Alert, alert_id, minute_close_iso
from tests.functions.rules.snapshots import T0

DAY_MS = 86_400_000


def minute(n: int) -> int:
    return T0 + n * MINUTE_MS


def cooldown(n: int, rule: str = "r", symbol: str = "ETHUSDT", seconds: int = 300) -> Candidate:
    return Candidate(rule, symbol, minute(n), "cooldown", seconds * 1000)


@pytest.fixture(params=["memory", "redis"])
def state(request: pytest.FixtureRequest, redis_client: aioredis.Redis) -> FiringState:
    if request.param == "memory":
        return MemoryFiringState()
    return RedisFiringState(redis_client, retention_ms=2 * DAY_MS)


async def fires(state: FiringState, *candidates: Candidate) -> list[bool]:
    return await state.decide(list(candidates))


async def test_cooldown_fires_again_only_after_the_cooldown(state: FiringState) -> None:
    results = [(await fires(state, cooldown(n)))[0] for n in range(12)]
    assert results == [True, False, False, False, False, True, False, False, False, False, True, False]


async def test_same_minute_fires_again_with_same_decision(state: FiringState) -> None:
    assert await fires(state, cooldown(0)) == [True]
    assert await fires(state, cooldown(2)) == [False]
    # a redelivery of minute 0 (crash before publishing): fire again, same id; minute 2 stays held back
    assert await fires(state, cooldown(0), cooldown(2)) == [True, False]


async def test_rules_and_symbols_are_independent(state: FiringState) -> None:
    assert await fires(state, cooldown(0, "a"), cooldown(0, "b"), cooldown(0, "a", "BTCUSDT")) == [True, True, True]
    assert await fires(state, cooldown(1, "a"), cooldown(1, "b")) == [False, False]


async def test_once_per_bar_close_fires_every_true_minute(state: FiringState) -> None:
    candidates = [Candidate("r", "ETHUSDT", minute(n), "once_per_bar_close", 0) for n in range(3)]
    assert await state.decide(candidates) == [True, True, True]


async def test_on_change_fires_when_the_predicate_turns_true(state: FiringState) -> None:
    def c(n: int) -> Candidate:
        return Candidate("r", "ETHUSDT", minute(n), "on_change", 0)

    assert await fires(state, c(0), c(1), c(2)) == [True, False, False]
    # minute 3 false (no candidate), minute 4 true again: a new change
    assert await fires(state, c(4), c(5)) == [True, False]
    assert await fires(state, c(4)) == [True]  # redelivered: same answer


async def test_recent_covers_the_window_before_the_minute(state: FiringState) -> None:
    await fires(state, cooldown(0, "bottom"))
    window = 12 * 60 * MINUTE_MS

    def q(n: int) -> RecentQuery:
        return RecentQuery("bottom", "ETHUSDT", minute(n) - window, minute(n))

    assert await state.recent([q(0), q(1), q(720), q(721), RecentQuery("other", "ETHUSDT", T0, minute(5))]) == [
        False,
        True,
        True,
        False,
        False,
    ]


async def test_redis_and_memory_decide_alike_on_random_sequences(redis_client: aioredis.Redis) -> None:
    rng = random.Random(7)
    memory, shared = MemoryFiringState(), RedisFiringState(redis_client, retention_ms=2 * DAY_MS)
    frequencies = ["cooldown", "on_change", "once_per_bar_close"]
    for step in range(400):
        n = step if rng.random() < 0.9 else max(0, step - rng.randint(1, 20))  # mostly in order, some replays
        batch = [
            Candidate(f"r{k}", rng.choice(["A", "B"]), minute(n), frequencies[k % 3], rng.choice([60, 300, 900]) * 1000)
            for k in range(3)
            if rng.random() < 0.4
        ]
        assert await memory.decide(batch) == await shared.decide(batch), f"step {step}: {batch}"


async def test_index_rebuilt_from_alert_history_when_redis_is_empty(
    redis_client: aioredis.Redis, pg: asyncpg.Connection
) -> None:
    alerts = [
        Alert(
            id=alert_id("bottom", "ETHUSDT", minute(n)),
            symbol="ETHUSDT",
            rule_type="bottom",
            description="",
            timestamp=minute_close_iso(minute(n)),
            price=1.0,
            minute=minute(n),
        )
        for n in (0, 30)
    ]
    assert await AlertHistory().save(pg, alerts) == 2
    state = RedisFiringState(redis_client, retention_ms=2 * DAY_MS)
    assert await state.ensure_index(pg) == 2
    assert await redis_client.exists(INDEX_MARKER)
    assert await redis_client.zrange(fired_key("bottom", "ETHUSDT"), 0, -1) == [
        str(minute(0)).encode(),
        str(minute(30)).encode(),
    ]
    assert await state.ensure_index(pg) == 0  # already built: no reload
    # cooldown and recent now see the history
    assert await state.decide([cooldown(32, "bottom")]) == [False]
    assert await state.recent([RecentQuery("bottom", "ETHUSDT", minute(1), minute(40))]) == [True]
