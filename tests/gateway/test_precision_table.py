"""The shipped tick and step sizes are the ones the recordings in data/klines show."""

from __future__ import annotations

from pathlib import Path

from gateway import precision_table
from gateway.precision import derive, recorded_files, render_table


def test_precision_table_is_derived_from_the_recordings() -> None:
    files = recorded_files()
    assert {p.name.split("-", 1)[0] for p in files} == set(precision_table.PRECISION)
    shipped = Path(precision_table.__file__).read_text()
    assert render_table(derive(files)) == shipped, "run: python -m gateway.precision --write gateway/precision_table.py"


def test_known_sizes_match_binance() -> None:
    # BTCUSDT: tickSize 0.10, stepSize 0.001; XLMUSDT: 0.00001 and 1 (Binance USD-M exchangeInfo).
    assert precision_table.PRECISION["BTCUSDT"] == (1, 3)
    assert precision_table.PRECISION["XLMUSDT"] == (5, 0)
