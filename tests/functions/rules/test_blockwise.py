"""The blockwise backtest against the minute-by-minute engine where its own machinery could go wrong.

Files split by month, symbols split into groups (a named symbol in another group), rules that read
their own firings through ``recent()`` (evaluated minute by minute), and every frequency: the
alerts must be those of ``replay.replay`` (the streaming calculator and rule engine), id for id.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from functions.rules import blockwise
from functions.rules.backtest import parse_instant
from functions.rules.blockwise import run_backtest
from functions.rules.replay import read_market, replay
from functions.rules.ruleset import Rule
from functions.rules.store import seed_file_rules
from marketdata.blocks import MarketBlocks


def keyed(alerts: list) -> list[tuple[str, str, int, str]]:  # type: ignore[type-arg]
    return [(a.rule_type, a.symbol, a.minute, a.id) for a in alerts]


def test_a_symbol_split_over_several_files_reads_as_one(klines_dir: Path, tmp_path: Path) -> None:
    source = next((klines_dir / "binance-um-2026-02").glob("ALGOUSDT-*.csv.gz"))
    lines = gzip.decompress(source.read_bytes()).decode().splitlines()
    header, rows = lines[0], lines[1:]
    split = 20 * 1440
    for name, part in (("ALGOUSDT-1m-2026-02a.csv.gz", rows[:split]), ("ALGOUSDT-1m-2026-02b.csv.gz", rows[split:])):
        (tmp_path / name).write_bytes(gzip.compress("\n".join([header, *part]).encode()))
    market = MarketBlocks(tmp_path)
    assert market.symbols == ["ALGOUSDT"]
    begin, finish = parse_instant("2026-02-20T18:00"), parse_instant("2026-02-21T06:00")
    rules = [*seed_file_rules(), Rule(rule_type="wiggle", name="wiggle", expression="abs(c5m) > 0.4")]
    whole = run_backtest(source.parent, rules, symbols=["ALGOUSDT"], start=begin, end=finish)
    parts = run_backtest(tmp_path, rules, start=begin, end=finish)
    assert keyed(parts.alerts) == keyed(whole.alerts)
    assert [a.metadata for a in parts.alerts] == [a.metadata for a in whole.alerts]
    assert parts.alerts, "the span has alerts"


async def test_groups_of_symbols_read_a_named_symbol_from_another_group(
    klines_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = klines_dir / "binance-um-2025-05"
    begin, finish = parse_instant("2025-05-12T14:00"), parse_instant("2025-05-12T19:00")
    rules = [
        *seed_file_rules(),
        Rule(rule_type="with_btc", name="with_btc", expression="c15m - BTC.c15m > 0.4 and v15m > 100000"),
    ]
    monkeypatch.setattr(blockwise, "GROUP_SYMBOLS", 3)
    grouped = run_backtest(data, rules, start=begin, end=finish)
    streamed = await replay(read_market(data), rules, start=begin, end=finish)
    assert keyed(grouped.alerts) == keyed(streamed.alerts)
    assert "with_btc" in {a.rule_type for a in grouped.alerts}
    assert {"futures_big_bear_60_v2", "futures_knife_catcher"} <= {a.rule_type for a in grouped.alerts}


async def test_self_recent_rules_and_every_frequency_fire_as_the_engine(klines_dir: Path) -> None:
    data = klines_dir / "binance-um-2026-02"
    begin, finish = parse_instant("2026-02-16T00:00"), parse_instant("2026-02-16T08:00")
    rules = [
        Rule(rule_type="move", name="move", expression="abs(c5m) > 0.25", frequency="once_per_bar_close"),
        Rule(rule_type="turn", name="turn", expression="c5m > 0.1", frequency="on_change"),
        Rule(rule_type="calm", name="calm", expression="abs(c15m) > 0.3", cooldown_seconds=1800),
        # Reads its own firings: minute by minute.
        Rule(rule_type="again", name="again", expression="c5m > 0.2 and not recent(again, 45m)", cooldown_seconds=0),
        # Reads another's firings: after that rule has fired for the whole block.
        Rule(rule_type="after", name="after", expression="c5m < -0.2 and recent(move, 2h)", cooldown_seconds=0),
    ]
    ours = run_backtest(data, rules, start=begin, end=finish)
    streamed = await replay(read_market(data), rules, start=begin, end=finish)
    assert keyed(ours.alerts) == keyed(streamed.alerts)
    fired = {a.rule_type for a in ours.alerts}
    assert fired == {"move", "turn", "calm", "again", "after"}
