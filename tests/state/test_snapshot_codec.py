"""Snapshots packed as float64 rows: the calculator's vectorised packing, the per-dict packing, round trips."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import orjson
import pytest

from functions.calculator.compute import snapshot_values, to_payloads
from screener.events.models import MetricsSnapshot
from state import snapshot_codec
from tests.functions.calculator.test_payloads import real_minute


def real_payloads_and_rows(klines_dir: Path, provisional: bool) -> tuple[list[dict[str, object]], list[bytes]]:
    """Return a minute of two real symbols (one with under a day of history) as payloads and packed rows."""
    arrays = real_minute(klines_dir)
    arrays.change_14d[0] = -np.inf  # not finite: null, like NaN
    rows = snapshot_codec.pack_rows(arrays.minute, snapshot_values(arrays))
    return to_payloads(arrays, provisional=provisional), rows


@pytest.mark.parametrize("provisional", [False, True])
def test_the_calculators_rows_are_the_packed_payloads_and_unpack_to_them(klines_dir: Path, provisional: bool) -> None:
    payloads, rows = real_payloads_and_rows(klines_dir, provisional)
    for payload, row in zip(payloads, rows, strict=True):
        assert len(row) == snapshot_codec.ROW_BYTES == 1008  # with Redis' header: jemalloc's 1,024 class
        assert snapshot_codec.pack(payload) == row  # the vectorised and the per-dict packing agree byte for byte
        # And so does the payload as the metrics event carries it: the calculator restores lost
        # snapshots from the METRICS stream (functions/calculator/restore.py).
        assert snapshot_codec.pack(orjson.loads(orjson.dumps(payload))) == row
        unpacked = snapshot_codec.unpack(str(payload["symbol"]), row, provisional)
        assert json.dumps(unpacked, sort_keys=True) == json.dumps(payload, sort_keys=True)
        MetricsSnapshot.model_validate(unpacked)


def test_missing_timeframes_and_a_missing_fibonacci_survive_the_round_trip() -> None:
    # (A 1d entry whose levels are all null reads back as no fibonacci: the calculator never has that.)
    snapshot = MetricsSnapshot.model_validate(
        {
            "symbol": "BTCUSDT",
            "minute": 1_770_000_000_000,
            "timestamp": "2026-02-02T02:41:00Z",
            "last_price": 65000.5,
            "timeframes": {"5m": {"close": 65000.5, "coverage": 0.8}, "1d": {"coverage": 1.0}},
        }
    )
    payload = snapshot.model_dump(mode="json")
    unpacked = snapshot_codec.unpack("BTCUSDT", snapshot_codec.pack(payload))
    assert MetricsSnapshot.model_validate(unpacked) == snapshot


def test_a_snapshot_of_the_previous_format_is_still_read_and_other_bytes_are_refused(klines_dir: Path) -> None:
    payloads, _ = real_payloads_and_rows(klines_dir, provisional=False)
    legacy = zlib.compress(orjson.dumps(payloads[0]), 1)
    assert snapshot_codec.unpack("LTCUSDT", legacy) == orjson.loads(orjson.dumps(payloads[0]))
    with pytest.raises(snapshot_codec.SnapshotFormatError, match="LTCUSDT has 5 bytes"):
        snapshot_codec.unpack("LTCUSDT", b"hello")
    wrong_version = np.full(snapshot_codec.ROW_BYTES // 8, 7.0).tobytes()
    with pytest.raises(snapshot_codec.SnapshotFormatError, match=r"format 7\.0"):
        snapshot_codec.unpack("LTCUSDT", wrong_version)
