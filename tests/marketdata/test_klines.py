"""Kline files as data.binance.vision and others write them: names, layouts, damaged rows and files.

Each test builds its files from a few rows of the shipped recording, in ``tmp_path``.
"""

from __future__ import annotations

import gzip
import logging
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from functions.rules.blockwise import run_backtest
from functions.rules.store import seed_file_rules
from marketdata import klines
from marketdata.blocks import MarketBlocks
from marketdata.klines import FIRST_OPEN_TIME, KlineFileError, invalid_rows, read_folder, read_klines
from screener.events.models import MINUTE_MS

ALGO = "binance-um-2026-02/ALGOUSDT-1m-2026-02.csv.gz"


@pytest.fixture(scope="module")
def algo(klines_dir: Path) -> tuple[str, list[str]]:
    """Return the header and the first 3 hours of rows of ALGOUSDT 2026-02 (12 columns)."""
    lines = gzip.decompress((klines_dir / ALGO).read_bytes()).decode().splitlines()
    return lines[0], lines[1:181]


def write(path: Path, lines: list[str], newline: str = "\n") -> Path:
    text = newline.join(lines) + newline
    path.write_bytes(gzip.compress(text.encode()) if path.name.endswith(".gz") else text.encode())
    return path


def test_symbols_come_from_names_in_any_case_and_delivery_contracts_are_skipped(
    algo: tuple[str, list[str]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    header, rows = algo
    write(tmp_path / "1000pepeusdt-1m-2026-02.csv.gz", [header, *rows])
    write(tmp_path / "BTCDOMUSDT-1m-2026-02.CSV", rows)
    write(tmp_path / "ETHUSDT_250627-1m-2026-02.csv", [header, *rows])
    write(tmp_path / "BTCUSD_PERP-1m-2026-02.csv", [header, *rows])
    write(tmp_path / "1000pepeusdt-1h-2026-02.csv.gz", [header, *rows[::60]])  # would win every hour's minute
    write(tmp_path / "notes.csv", ["a,b"])
    with caplog.at_level(logging.WARNING):
        market = read_folder(tmp_path)
    assert sorted(market) == ["1000PEPEUSDT", "BTCDOMUSDT"]
    assert market["1000PEPEUSDT"].candle(0).symbol == "1000PEPEUSDT"
    assert "ETHUSDT_250627 is not a USD-M perpetual (a delivery or COIN-M contract); skipped" in caplog.text
    assert "BTCUSD_PERP is not a USD-M perpetual" in caplog.text
    assert "1000pepeusdt-1h-2026-02.csv.gz: 1h klines, not 1-minute ones; skipped" in caplog.text
    assert (
        market["1000PEPEUSDT"].values.tolist()
        == read_klines(tmp_path / "1000pepeusdt-1m-2026-02.csv.gz").values.tolist()
    )
    assert "notes.csv: cannot tell the symbol" in caplog.text
    assert MarketBlocks(tmp_path).symbols == ["1000PEPEUSDT", "BTCDOMUSDT"]


def test_layout_variants_read_the_same_rows(algo: tuple[str, list[str]], tmp_path: Path) -> None:
    header, rows = algo
    expected = read_klines(write(tmp_path / "ALGOUSDT-1m-2026-02.csv", [header, *rows]))
    variants = {
        "crlf-and-blank-lines.csv": ("\r\n", [header, *rows, "", ""]),
        "no-header.csv.gz": ("\n", rows),
        "byte-order-mark.csv": ("\n", ["\ufeff" + header, *rows]),
        "header-without-ignore.csv": ("\n", [header.removesuffix(",ignore"), *rows]),
    }
    for name, (newline, lines) in variants.items():
        series = read_klines(write(tmp_path / f"ALGOUSDT-{name}", lines, newline))
        np.testing.assert_array_equal(series.open_time, expected.open_time, err_msg=name)
        np.testing.assert_array_equal(series.values, expected.values, err_msg=name)
    # an export of freqtrade or pandas: the open time as a date, OHLCV only
    dated = []
    for row in rows:
        cells = row.split(",")
        stamp = datetime.fromtimestamp(int(cells[0]) / 1000, UTC).isoformat(sep=" ")
        dated.append(",".join([stamp, *cells[1:6]]))
    exported = read_klines(write(tmp_path / "ALGOUSDT-1m-export.csv", ["date,open,high,low,close,volume", *dated]))
    np.testing.assert_array_equal(exported.open_time, expected.open_time)
    np.testing.assert_array_equal(exported.values[:, :5], expected.values[:, :5])
    # data.binance.vision serves each month as a zip of one CSV
    with zipfile.ZipFile(tmp_path / "ALGOUSDT-1m-2026-02.zip", "w") as archive:
        archive.writestr("ALGOUSDT-1m-2026-02.csv", "\n".join([header, *rows]))
    np.testing.assert_array_equal(read_klines(tmp_path / "ALGOUSDT-1m-2026-02.zip").values, expected.values)
    # Binance's download scripts file each symbol in a folder of its own
    nested = tmp_path / "futures" / "um" / "monthly" / "klines" / "ALGOUSDT" / "1m"
    nested.mkdir(parents=True)
    (tmp_path / "ALGOUSDT-1m-2026-02.zip").rename(nested / "ALGOUSDT-1m-2026-02.zip")
    np.testing.assert_array_equal(read_folder(tmp_path / "futures")["ALGOUSDT"].values, expected.values)
    # compressed, whatever the name says
    (tmp_path / "ALGOUSDT-1m-gzip.csv").write_bytes(gzip.compress("\n".join([header, *rows]).encode()))
    np.testing.assert_array_equal(read_klines(tmp_path / "ALGOUSDT-1m-gzip.csv").values, expected.values)


def test_a_large_folder_is_read_with_progress_lines(
    algo: tuple[str, list[str]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    header, rows = algo
    for k in range(20):
        write(tmp_path / f"S{k:02d}USDT-1m-2026-02.csv", [header, *rows[:3]])
    with caplog.at_level(logging.INFO, logger="marketdata.klines"):
        assert len(read_folder(tmp_path)) == 20
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("read ")]
    assert [line.split(" kline")[0] for line in progress] == [f"read {k} of 20" for k in range(2, 21, 2)]


def test_open_times_in_microseconds_are_read_as_milliseconds(algo: tuple[str, list[str]], tmp_path: Path) -> None:
    header, rows = algo
    micro = []
    for row in rows:
        cells = row.split(",")
        cells[0], cells[6] = str(int(cells[0]) * 1000), str(int(cells[6]) * 1000 + 999)
        micro.append(",".join(cells))
    expected = read_klines(write(tmp_path / "ALGOUSDT-1m-ms.csv", [header, *rows]))
    series = read_klines(write(tmp_path / "ALGOUSDT-1m-us.csv", [header, *micro]))
    np.testing.assert_array_equal(series.open_time, expected.open_time)
    np.testing.assert_array_equal(series.values, expected.values)


def test_invalid_rows_are_skipped_with_their_line_and_reason(
    algo: tuple[str, list[str]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    header, rows = algo
    damaged = list(rows)

    def change(row: int, **cells: str) -> None:
        fields = damaged[row].split(",")
        for column, value in cells.items():
            fields[int(column.removeprefix("c"))] = value
        damaged[row] = ",".join(fields)

    change(10, c2="0.05")  # high below the close
    change(20, c4="0")  # a zero close
    change(30, c4="nan")
    change(40, c8="nan")  # trades not a number
    change(50, c5="-1")  # negative volume
    change(60, c4="abc")  # not a number at all
    change(70, c0=str(int(rows[70].split(",")[0]) + 1000))  # not on the minute
    change(80, c0="0")  # on a minute, of 1970: it would stretch the timeline over decades
    change(90, c0=str(int(rows[90].split(",")[0]) // 1000 // 60 * 60))  # in seconds, on a minute by chance
    change(100, c0=str(int(rows[100].split(",")[0]) * 1000))  # one in microseconds: the row, not the file
    damaged[-1] = damaged[-1][:20]  # the last line cut short (an interrupted download)
    path = write(tmp_path / "ALGOUSDT-1m-2026-02.csv", [header, *damaged])
    with caplog.at_level(logging.WARNING):
        series = read_klines(path)
    skipped = {10, 20, 30, 40, 50, 60, 70, 80, 90, 100, len(rows) - 1}
    good = [i for i in range(len(rows)) if i not in skipped]
    assert series.open_time.tolist() == [int(rows[i].split(",")[0]) for i in good]
    assert [series.candle(i).close for i in range(len(series))] == [float(rows[i].split(",")[4]) for i in good]
    assert all(series.candle(i).validation_error() is None for i in range(len(series)))
    message = caplog.text
    assert f"{path}: 11 invalid row(s) skipped: line 12: high < max(open, close)" in message
    assert "line 22: prices must be finite and > 0" in message and "and 6 more" in message


def test_the_check_of_a_whole_file_finds_an_invalid_row_where_the_row_checks_do() -> None:
    # invalid_rows answers a file without an invalid row by reductions (_all_valid); any value the
    # row checks reject must make it look at the rows.
    rng = np.random.default_rng(7)
    specials = [np.nan, np.inf, -np.inf, 0.0, -0.0, -1.0, 1e-300]
    times = [np.nan, np.inf, 0.5, 1000.0, -60_000.0 * 10**9, 60_000.0 * 10**11]  # added to an open time
    for _ in range(3000):
        rows = int(rng.integers(1, 5))
        open_time = (FIRST_OPEN_TIME + MINUTE_MS * rng.integers(0, 10**6, rows)).astype(np.float64)
        low = rng.random(rows) + 1
        high = low + rng.random(rows)
        open_, close = (low + (high - low) * rng.random(rows) for _ in range(2))
        values = np.column_stack([open_, high, low, close, 100 * rng.random((rows, 5))])
        for _ in range(int(rng.integers(0, 3))):
            row = int(rng.integers(0, rows))
            match int(rng.integers(0, 4)):
                case 0:
                    values[row, int(rng.integers(0, 9))] = specials[int(rng.integers(0, len(specials)))]
                case 1:
                    open_time[row] += times[int(rng.integers(0, len(times)))]
                case 2:
                    values[row, 2] = min(values[row, 0], values[row, 3]) + 1e-9  # low above the open or close
                case _:
                    values[row, 1] = max(values[row, 0], values[row, 3]) - 1e-9  # high below them
        assert invalid_rows(open_time, values) == _row_checks(open_time, values)


def _row_checks(open_time: npt.NDArray[np.float64], values: npt.NDArray[np.float64]) -> list[tuple[int, str]]:
    """Return ``invalid_rows`` without its check of the whole file first: every row's checks."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(klines, "_all_valid", lambda *_: False)
        return invalid_rows(open_time, values)


def test_a_file_without_valid_rows_is_skipped_and_the_others_read(
    algo: tuple[str, list[str]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    header, rows = algo
    write(tmp_path / "ALGOUSDT-1m-2026-02.csv.gz", [header, *rows])
    (tmp_path / "EMPTYUSDT-1m-2026-02.csv").write_bytes(b"")
    write(tmp_path / "HEADERUSDT-1m-2026-02.csv", [header])
    write(tmp_path / "BADUSDT-1m-2026-02.csv", [header, "1772323200000,1,1,1,oops,1,0,0,0,0,0,0"])
    (tmp_path / "CUTUSDT-1m-2026-02.csv.gz").write_bytes(gzip.compress("\n".join(rows).encode())[:100])
    write(tmp_path / "ONEUSDT-1m-2026-02.csv", [header, rows[5]])
    with caplog.at_level(logging.WARNING):
        market = read_folder(tmp_path)
    assert sorted(market) == ["ALGOUSDT", "ONEUSDT"]
    for name in ("EMPTYUSDT", "HEADERUSDT", "BADUSDT", "CUTUSDT"):
        assert f"{name}-1m-2026-02.csv" in caplog.text
    assert "no valid rows (could not convert string to float: b'oops' at line 2)" in caplog.text
    with pytest.raises(KlineFileError, match="no rows"):
        read_klines(tmp_path / "HEADERUSDT-1m-2026-02.csv")

    # The backtest reads the same files, skips the same ones and evaluates the same candles.
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        result = run_backtest(tmp_path, list(seed_file_rules()))
    assert result.symbols == ["ALGOUSDT", "ONEUSDT"]
    assert result.symbol_minutes == len(rows) + 1
    assert "HEADERUSDT-1m-2026-02.csv: no rows; file skipped" in caplog.text


def test_a_folder_with_nothing_readable_says_so(tmp_path: Path) -> None:
    (tmp_path / "EMPTYUSDT-1m-2026-02.csv").write_bytes(b"")
    with pytest.raises(KlineFileError, match="no kline file could be read"):
        read_folder(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(KlineFileError, match="no kline files"):
        read_folder(empty)


def test_two_files_sharing_minutes_are_reported_and_the_first_by_name_kept(
    algo: tuple[str, list[str]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    header, rows = algo
    write(tmp_path / "ALGOUSDT-1m-2026-01.csv.gz", [header, *rows[:100]])
    closes_changed = [",".join([*r.split(",")[:4], r.split(",")[3], *r.split(",")[5:]]) for r in rows[90:]]
    write(tmp_path / "ALGOUSDT-1m-2026-02.csv.gz", [header, *closes_changed])
    with caplog.at_level(logging.INFO, logger="marketdata.klines"):
        series = read_folder(tmp_path)["ALGOUSDT"]
        blocks = MarketBlocks(tmp_path)
    assert len(series) == len(rows)
    assert series.values[95, 3] == float(rows[95].split(",")[4])  # January's close, not February's
    assert series.values[150, 3] == float(rows[150].split(",")[3])
    shared = "share minutes 2026-02-01 01:30 to 2026-02-01 01:39; those of ALGOUSDT-1m-2026-01.csv.gz are read"
    assert [r.getMessage().endswith(shared) for r in caplog.records].count(True) == 2  # the stream's, the backtest's
    assert blocks.rows("ALGOUSDT", series.first_open_time, series.last_open_time + 60_000)[1][3].tolist() == (
        series.values[:, 3].tolist()
    )
