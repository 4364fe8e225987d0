"""The payloads the calculator builds without the model are exactly the model's JSON dump."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from functions.calculator.compute import MetricsArrays, compute_arrays, to_payloads
from screener.events.models import MetricsSnapshot
from state import layout
from state.candles import apply_candles, pack_candles
from tests.functions.calculator.klines import SET_2026, csv_path, read_candles, with_gaps
from tests.functions.calculator.test_determinism import empty_state


def real_minute(klines_dir: Path) -> MetricsArrays:
    """Return the metrics at the newest minute of two real symbols with gaps, one with under a day of history."""
    states = []
    for seed, (base, minutes) in enumerate((("LTCUSDT", 4000), ("AVAXUSDT", 300))):
        candles = read_candles(csv_path(klines_dir, SET_2026, base), limit=4000)[-minutes:]
        state = empty_state(base)
        apply_candles(state, pack_candles(with_gaps(candles, seed=seed, rate=0.05)))
        states.append(state)
    return compute_arrays(int(states[0].candles[:, layout.OPEN_TIME].max()), states)


def test_payloads_are_the_json_dump_of_the_snapshot_model_with_nan_as_null(klines_dir: Path) -> None:
    arrays = real_minute(klines_dir)
    arrays.change_14d[0] = np.inf  # not finite: null too
    for provisional in (False, True):
        payloads = to_payloads(arrays, provisional=provisional)
        assert [p["symbol"] for p in payloads] == ["LTCUSDT", "AVAXUSDT"]
        for payload in payloads:
            dumped = MetricsSnapshot.model_validate(payload).model_dump(mode="json")
            assert json.dumps(payload, sort_keys=True) == json.dumps(dumped, sort_keys=True)
            assert payload["provisional"] is provisional
        young = payloads[1]["timeframes"]
        assert young["1d"]["volume_ratio"] is None and young["1d"]["fibonacci"] is not None
        assert young["5m"]["fibonacci"] is None and payloads[0]["change_14d"] is None
