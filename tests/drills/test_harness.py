"""The drill harness's own logic: diffs by id and bytes, the poisoned kinds, the drill catalogue."""

from __future__ import annotations

from collections import Counter

import orjson
import pytest
from pydantic import ValidationError

from bench.faultdrills.catalog import POISONED, catalog
from bench.faultdrills.outcome import candle_consumers, diff_counts, diff_events, diff_rows, digest
from bench.faultdrills.poison import KINDS, Maker
from screener.events.models import Candle

REAL = Candle(
    symbol="ALGOUSDT", open_time=1_771_143_000_000, open=0.2, high=0.21, low=0.19, close=0.205,
    volume=1000.0, quote_volume=200.0, trades=12, taker_buy_volume=500.0, taker_buy_quote_volume=100.0,
)  # fmt: skip


def test_diff_events_names_missing_extra_duplicated_and_differing_ids() -> None:
    clean = {"a": [digest(b"1")], "b": [digest(b"2")], "c": [digest(b"3")]}
    run = {"a": [digest(b"1")], "b": [digest(b"2"), digest(b"2")], "c": [digest(b"3!")], "d": [digest(b"4")]}
    diff = diff_events(clean, run)
    assert (diff.missing, diff.extra, diff.duplicated, diff.differing) == ([], ["d"], ["b"], ["c"])
    assert not diff.exact
    assert diff.got == 5
    assert "+1 (d)" in diff.cell()


def test_a_run_equal_to_the_clean_run_is_exact() -> None:
    clean = {"a": [digest(b"1")]}
    assert diff_events(clean, {"a": [digest(b"1")]}).exact
    assert diff_counts(Counter({"x": 1}), Counter({"x": 1})).exact
    assert diff_events(clean, {}).missing == ["a"]


def test_candle_rows_differ_by_value_not_only_by_key() -> None:
    clean = {("ALGOUSDT", 0): digest(b"real")}
    diff = diff_rows(clean, {("ALGOUSDT", 0): digest(b"fake")})
    assert diff.differing == ["ALGOUSDT 01-01 00:00"]


def test_the_functions_that_must_dead_letter_a_poisoned_candle_are_the_candle_consumers() -> None:
    assert candle_consumers() == ["calculator", "recorder"]


def _defect(headers: dict[str, str], payload: bytes) -> str:
    """Return what makes an event malformed (an independent reading of events.md and metrics.md)."""
    for required in ("ce-id", "ce-specversion"):
        if required not in headers:
            return f"no {required}"
    if headers["ce-type"] != "com.screener.candle.closed.v1":
        return "wrong type"
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return "not JSON"
    if not isinstance(data, dict):
        return "not an object"
    try:
        candle = Candle.model_validate(data)
    except ValidationError:
        return "not a candle"
    reason = candle.validation_error()
    return reason or ""


@pytest.mark.parametrize("maker", KINDS, ids=lambda m: m(0, REAL).kind)
def test_every_poisoned_kind_is_malformed(maker: Maker) -> None:
    event = maker(9, REAL)
    assert event.subject == "candles.1m.ALGOUSDT"
    assert _defect(event.headers, event.payload), event.kind


def test_the_shared_id_pair_shares_one_ce_id_with_distinct_payloads() -> None:
    first, second = KINDS[-2](9, REAL), KINDS[-1](10, REAL)
    assert first.headers["ce-id"] == second.headers["ce-id"]
    assert first.payload != second.payload


def test_the_short_suite_holds_the_five_ci_drills_and_scales_the_outage_down() -> None:
    short = catalog(short=True, speeds=(), reference_speed="600")
    assert [d.name for d in short if d.short] == ["clean", "calculator-kill", "poisoned", "rules-kill", "scale-2"]
    assert next(d for d in short if d.name == "poisoned").poisoned == POISONED
    outage = next(d for d in short if d.name == "postgres-outage").actions[0]
    assert outage.down_seconds == 15.0
    full = catalog(short=False, speeds=("max",), reference_speed="600")
    assert {"clean-max", "scale-1", "scale-3", "scale-in", "live-drops"} <= {d.name for d in full}
