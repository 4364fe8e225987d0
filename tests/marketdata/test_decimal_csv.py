"""The plain-decimal parser gives loadtxt's doubles bit for bit, and declines what is not plain."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marketdata import decimal_csv
from marketdata.decimal_csv import parse_columns

DATA = Path(__file__).resolve().parents[2] / "data" / "klines"


def _reference(text: bytes, columns: list[int]) -> np.ndarray:
    return np.loadtxt(io.BytesIO(text), delimiter=",", ndmin=2, usecols=columns).T


@pytest.mark.parametrize(
    "name", ["binance-um-2025-05/BTCUSDT-1m-futures.csv.gz", "binance-um-2026-02/ALGOUSDT-1m-2026-02.csv.gz"]
)
def test_recorded_files_parse_as_loadtxt_does(name: str) -> None:
    body = gzip.decompress((DATA / name).read_bytes()).partition(b"\n")[2]
    width = body.partition(b"\n")[0].count(b",") + 1
    columns = list(range(width))
    parsed = parse_columns(body, width, columns)
    assert parsed is not None
    assert np.array_equal(parsed, _reference(body, columns))


# Unsigned decimals of 1 to 16 characters: integer digits, optionally a point and fraction digits.
_DIGITS = st.text("0123456789", min_size=1, max_size=15)
_PLAIN = st.one_of(
    _DIGITS,
    st.tuples(st.text("0123456789", max_size=8), _DIGITS).map(lambda p: f"{p[0]}.{p[1]}"[:16]),
    st.integers(0, 2**53 - 1).map(str),
    st.floats(0, 1e12, allow_nan=False).map(repr).filter(lambda s: "e" not in s and len(s) <= 16),
).filter(lambda s: any(c.isdigit() for c in s))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(_PLAIN, min_size=3, max_size=3), min_size=1, max_size=40))
def test_plain_decimals_are_the_nearest_doubles(rows: list[list[str]]) -> None:
    text = "".join(",".join(row) + "\n" for row in rows).encode()
    parsed = parse_columns(text, 3, [0, 2])
    assert parsed is not None
    expected = np.array([[float(row[0]) for row in rows], [float(row[2]) for row in rows]])
    assert np.array_equal(parsed, expected)
    assert np.array_equal(parsed, _reference(text, [0, 2]))


@pytest.mark.parametrize(
    "text",
    [
        b"1,-2,3\n",  # a sign
        b"1,2e3,3\n",  # an exponent
        b"1,12345678901234567,3\n",  # longer than 16 characters
        b"1,9007199254740993,3\n",  # 16 digits, not an exact double
        b"1,1.2.3,3\n",  # two points
        b"1,.,3\n",  # a point alone
        b"1,,3\n",  # an empty field
        b"1, 2,3\n",  # a space
        b'1,"2",3\n',  # quotes
        b"1,2,3\r\n",  # CRLF
        b"1,2,3\n4,5\n",  # a short row
        b"1,2,3,4\n",  # a long row
        b"1,2x,3\n",
    ],
)
def test_anything_not_plain_is_left_to_the_general_parser(text: bytes) -> None:
    assert parse_columns(text, 3, [0, 1]) is None


def test_columns_not_asked_for_are_only_counted() -> None:
    parsed = parse_columns(b"1,2,x\n3,4,-5e1\n", 3, [0, 1])
    assert parsed is not None
    assert parsed.tolist() == [[1.0, 3.0], [2.0, 4.0]]


def test_last_row_without_newline() -> None:
    parsed = parse_columns(b"1.5,2\n3,4.25", 2, [0, 1])
    assert parsed is not None
    assert parsed.tolist() == [[1.5, 3.0], [2.0, 4.25]]


def test_text_longer_than_a_piece_is_parsed_in_pieces_of_whole_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decimal_csv, "_PIECE_BYTES", 37)
    rows = [f"{1_700_000_000_000 + 60_000 * k},{k / 8},{k * 3}.25" for k in range(50)]
    text = "\n".join(rows).encode()  # the last row without its newline
    parsed = parse_columns(text, 3, [0, 1, 2])
    assert parsed is not None
    assert np.array_equal(parsed, _reference(text, [0, 1, 2]))
    assert parse_columns(text.replace(b"25\n", b"2x\n", 1), 3, [0, 2]) is None
