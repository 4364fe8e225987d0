"""The engine: alerts with their ids, metadata and audience; minutes in order; lazy lookups."""

from __future__ import annotations

from collections.abc import Collection

import pytest

from functions.rules.config import RulesConfig
from functions.rules.engine import RuleEngine
from functions.rules.firing import MemoryFiringState
from functions.rules.ruleset import Rule
from functions.rules.store import seed_file_rules
from screener.events.models import MINUTE_MS, MetricsSnapshot, alert_id
from screener.runtime.function import TransientError
from tests.functions.rules.snapshots import T0, snapshot

# Surge 60 Bull holds with these values (rules.md); v2 additionally needs c1h - BTC.c1h >= 0.5.
BULL_60 = {"c1h": 2.0, "c1d": 10.0, "c8h": 5.0, "v1h": 1e6, "v8h": 5.5e6, "v1d": 1e7}
# Scout Bear, and Bottom Raid, for recent() rules.
SCOUT_BEAR = {"c5m": -2.0, "c15m": -3.0, "v5m": 1e6, "v15m": 1.5e6, "c1h": -6.0, "c1d": -1.0}
BOTTOM_RAID = {"c1h": -2.0, "c15m": -1.0, "c5m": 0.8, "v5m": 1e6, "v15m": 1.5e6, "v1h": 3e6}


class CountingCross:
    def __init__(self, snapshots: dict[str, MetricsSnapshot | None], transient: bool = False) -> None:
        self.snapshots = snapshots
        self.calls: list[tuple[set[str], int]] = []
        self.transient = transient

    async def fetch(self, symbols: Collection[str], minute: int) -> dict[str, MetricsSnapshot | None]:
        self.calls.append((set(symbols), minute))
        if self.transient:
            raise TransientError("not yet")
        return {s: self.snapshots.get(s) for s in symbols}


def engine(cross: CountingCross | None = None, switches: dict[str, dict[str, bool]] | None = None) -> RuleEngine:
    return RuleEngine(RulesConfig.of(list(seed_file_rules()), switches), MemoryFiringState(), cross)


async def test_alert_carries_id_timestamp_price_metadata_and_audience() -> None:
    eng = engine(switches={"alice": {}, "bob": {"futures_big_bull_60": False}})
    result = await eng.evaluate([snapshot("ETHUSDT", T0, price=2500.5, **BULL_60)])
    [alert] = [a for a in result.alerts if a.rule_type == "futures_big_bull_60"]
    assert alert.id == alert_id("futures_big_bull_60", "ETHUSDT", T0)
    assert alert.timestamp == "2025-06-01T00:01:00Z"
    assert alert.price == 2500.5
    assert alert.minute == T0
    assert alert.metadata == {"c1h": 2.0, "c1d": 10.0, "c8h": 5.0, "v1h": 1e6, "v8h": 5.5e6, "v1d": 1e7}
    assert alert.audience.public is True
    assert alert.audience.users == ["alice"]
    assert result.symbol_minutes == 1


async def test_cross_symbol_is_fetched_only_where_it_can_matter() -> None:
    cross = CountingCross({"BTCUSDT": snapshot("BTCUSDT", T0, c1h=1.0)})
    eng = engine(cross)
    await eng.evaluate([snapshot("SOLUSDT", T0, c1h=0.1)])
    assert cross.calls == []  # Surge 60 Bull is false anyway: BTC is not needed
    result = await eng.evaluate([snapshot("ETHUSDT", T0 + MINUTE_MS, **BULL_60)])
    assert cross.calls == [({"BTCUSDT"}, T0 + MINUTE_MS)]
    v2 = [a for a in result.alerts if a.rule_type == "futures_big_bull_60_v2"]
    assert [a.metadata["BTCUSDT.c1h"] for a in v2] == [1.0]


async def test_cross_symbol_in_the_same_minute_needs_no_lookup() -> None:
    cross = CountingCross({})
    result = await engine(cross).evaluate([snapshot("ETHUSDT", T0, **BULL_60), snapshot("BTCUSDT", T0, c1h=2.0)])
    assert cross.calls == []
    assert "futures_big_bull_60_v2" not in {a.rule_type for a in result.alerts}  # 2.0 - 2.0 < 0.5


async def test_cross_symbol_read_from_the_rows_when_few_rows_remain_open() -> None:
    # One symbol of twelve passes the first clauses, so the rest of the rule runs on that row alone:
    # BTCUSDT, another row of the minute, must still be found there.
    quiet = [snapshot(f"X{i}USDT", T0, c1h=0.0, c1d=0.0) for i in range(10)]
    rows = [snapshot("ETHUSDT", T0, **BULL_60), snapshot("BTCUSDT", T0, c1h=0.5), *quiet]
    cross = CountingCross({})
    result = await engine(cross).evaluate(rows)
    assert cross.calls == []
    fired = {(a.rule_type, a.symbol) for a in result.alerts}
    assert ("futures_big_bull_60_v2", "ETHUSDT") in fired
    alert = next(a for a in result.alerts if a.rule_type == "futures_big_bull_60_v2")
    assert alert.metadata["BTCUSDT.c1h"] == 0.5


async def test_cross_symbol_not_stored_yet_is_a_transient_error() -> None:
    with pytest.raises(TransientError):
        await engine(CountingCross({}, transient=True)).evaluate([snapshot("ETHUSDT", T0, **BULL_60)])


async def test_recent_sees_earlier_minutes_of_the_same_batch() -> None:
    eng = engine()
    rows = [snapshot("ETHUSDT", T0, **BOTTOM_RAID), snapshot("ETHUSDT", T0 + 10 * MINUTE_MS, **SCOUT_BEAR)]
    result = await eng.evaluate(reversed(rows))  # order in the batch does not matter: minutes are sorted
    fired = {(a.rule_type, a.minute) for a in result.alerts}
    assert ("futures_bottom_hunter", T0) in fired
    assert ("futures_knife_catcher", T0 + 10 * MINUTE_MS) in fired
    assert ("futures_capitulation_catcher", T0 + 10 * MINUTE_MS) not in fired


async def test_recent_window_ends_twelve_hours_later() -> None:
    eng = engine()
    await eng.evaluate([snapshot("ETHUSDT", T0, **BOTTOM_RAID)])
    late = await eng.evaluate([snapshot("ETHUSDT", T0 + 721 * MINUTE_MS, **SCOUT_BEAR, c14d=-25.0)])
    fired = {a.rule_type for a in late.alerts}
    assert "futures_knife_catcher" not in fired
    assert "futures_capitulation_catcher" in fired


async def test_replaying_a_minute_gives_the_same_alerts() -> None:
    eng = engine()
    first = await eng.evaluate([snapshot("ETHUSDT", T0, **BULL_60)])
    again = await eng.evaluate([snapshot("ETHUSDT", T0, **BULL_60)])
    assert [a.id for a in again.alerts] == [a.id for a in first.alerts]
    later = await eng.evaluate([snapshot("ETHUSDT", T0 + MINUTE_MS, **BULL_60)])
    assert later.alerts == []  # cooldown of 5 minutes


async def test_disabled_rule_does_not_fire_but_still_serves_references() -> None:
    rules = [r.model_copy(update={"enabled": r.rule_type != "futures_whale_detector"}) for r in seed_file_rules()]
    eng = RuleEngine(RulesConfig.of(rules), MemoryFiringState())
    whale = {"v5m": 2e6, "v1d": 1e8, "c5m": 0.1, "c15m": 0.5}
    fired = {a.rule_type for a in (await eng.evaluate([snapshot("ETHUSDT", T0, **whale)])).alerts}
    assert fired == {"futures_whale_accumulation"}


async def test_users_own_rule_is_only_for_its_owner() -> None:
    mine = Rule(rule_type="alice_dip", name="Dip", expression="c5m < -1", owner="alice")
    eng = RuleEngine(RulesConfig.of([*seed_file_rules(), mine], {"alice": {}, "bob": {}}), MemoryFiringState())
    [alert] = [
        a for a in (await eng.evaluate([snapshot("ETHUSDT", T0, c5m=-2.0)])).alerts if a.rule_type == "alice_dip"
    ]
    assert alert.audience.public is False
    assert alert.audience.users == ["alice"]
    assert alert.audience.owner == "alice"


async def test_forming_minute_runs_only_live_rules() -> None:
    live = Rule(rule_type="live_pump", name="Live", expression="c5m > 1", live=True)
    eng = RuleEngine(RulesConfig.of([*seed_file_rules(), live]), MemoryFiringState())
    forming = snapshot("ETHUSDT", T0, c5m=2.0, c15m=3.0, v5m=1e6, v15m=1.5e6).model_copy(update={"provisional": True})
    assert {a.rule_type for a in (await eng.evaluate([forming])).alerts} == {"live_pump"}
    closed = await eng.evaluate([snapshot("ETHUSDT", T0, c5m=2.0, c15m=3.0, v5m=1e6, v15m=1.5e6)])
    # the closed minute re-derives the live alert's id (at most once per minute) and adds the rest
    assert {a.rule_type for a in closed.alerts} == {"live_pump", "futures_pioneer_bull"}
