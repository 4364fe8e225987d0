"""Read recorded 1-minute klines into columnar series (the replay collector and the backtest share them).

Two CSV layouts are read, plain or gzip-compressed, with or without a header row:

* Binance's kline CSV (data.binance.vision), 12 columns: ``open_time, open, high, low, close,
  volume, close_time, quote_volume, count, taker_buy_volume, taker_buy_quote_volume, ignore``;
* OHLCV only, 6 columns: ``open_time, open, high, low, close, volume`` (the 2025-05 set).

Where the quote volume is missing it is derived as ``volume * (high + low + close) / 3`` (base
volume times the candle's typical price, the usual estimate of the USDT traded) and every candle of
the series says so with ``quote_volume_derived=True``; trades and taker volumes are then 0.

Usage::

    series = read_klines(Path("data/klines/binance-um-2026-02/ALGOUSDT-1m-2026-02.csv.gz"))
    for candle in series.candles():   # screener.events.models.Candle, closed, in time order
        ...
    market = read_folder(Path("data/klines/binance-um-2025-05"))   # {"BTCUSDT": KlineSeries, ...}
"""

from __future__ import annotations

import io
import itertools
import logging
import re
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import numpy as np
import numpy.typing as npt
from isal import igzip, isal_zlib

from marketdata.decimal_csv import parse_columns
from screener.events.models import MINUTE_MS, Candle

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

BINANCE_COLUMNS = (
    "open_time", "open", "high", "low", "close", "volume", "close_time",
    "quote_volume", "count", "taker_buy_volume", "taker_buy_quote_volume", "ignore",
)  # fmt: skip
OHLCV_COLUMNS = ("open_time", "open", "high", "low", "close", "volume")
# Other names of the open time in headers (freqtrade's and pandas' exports, Binance's API docs).
OPEN_TIME_NAMES = {"date": "open_time", "time": "open_time", "timestamp": "open_time", "open time": "open_time"}
# Symbol = the file name up to the first dash, in any case: BTCUSDT-1m-futures.csv.gz,
# 1000pepeusdt-1m-2026-03.csv, ETHUSDT_250627-1m-2025-05.zip (a delivery contract), BTCUSD_PERP-1m-...
# (COIN-M).
_SYMBOL = re.compile(r"^([A-Za-z0-9]+(?:_[A-Za-z0-9]+)?)-")
# The interval after the symbol, as data.binance.vision names its files: BTCUSDT-1h-2026-02.zip.
_INTERVAL = re.compile(r"^[^-]+-(\d+(?:s|m|h|d|w|mo))(?:[-.]|$)", re.IGNORECASE)
KLINE_SUFFIXES = (".csv", ".csv.gz", ".zip")
# An open time at or above this is in microseconds (in milliseconds it would be the year 5138).
MICROSECOND_STAMPS = 1e14
# Open times outside these (epoch ms) are no Binance kline: 2017-01-01 (before its first) and
# 2100-01-01. One such row (a 0, seconds for milliseconds) would stretch a replay's timeline over decades.
FIRST_OPEN_TIME, LAST_OPEN_TIME = 1_483_228_800_000, 4_102_444_800_000
# A folder of at least this many files is read with a progress line every tenth of them.
PROGRESS_FILES = 20
GZIP_MAGIC, ZIP_MAGIC = b"\x1f\x8b", b"PK\x03\x04"
Bad = list[tuple[int, str]]  # (line, reason) of the rows a file had to skip

log = logging.getLogger(__name__)


class KlineFileError(ValueError):
    """A kline file cannot be read; the message names the file and the problem."""


@dataclass(frozen=True, eq=False)
class KlineSeries:
    """One symbol's 1-minute klines as columns, sorted by open time, one row per minute present.

    ``values`` has the columns of ``VALUE_COLUMNS``; ``quote_volume_derived`` tells whether the
    quote volume was derived (OHLCV-only source).
    """

    symbol: str
    open_time: IntArray
    values: FloatArray
    quote_volume_derived: bool

    VALUE_COLUMNS = (
        "open", "high", "low", "close", "volume", "quote_volume",
        "trades", "taker_buy_volume", "taker_buy_quote_volume",
    )  # fmt: skip

    def __len__(self) -> int:
        return int(self.open_time.shape[0])

    @property
    def first_open_time(self) -> int:
        """Return the open time of the first minute."""
        return int(self.open_time[0])

    @property
    def last_open_time(self) -> int:
        """Return the open time of the last minute."""
        return int(self.open_time[-1])

    def candle(self, index: int, *, symbol: str | None = None, shift_ms: int = 0) -> Candle:
        """Return row ``index`` as a closed ``Candle`` (optionally renamed and moved in time)."""
        o, h, lo, c, v, q, n, tv, tq = self.values[index].tolist()
        return Candle(
            symbol=symbol or self.symbol,
            open_time=int(self.open_time[index]) + shift_ms,
            open=o,
            high=h,
            low=lo,
            close=c,
            volume=v,
            quote_volume=q,
            trades=int(n),
            taker_buy_volume=tv,
            taker_buy_quote_volume=tq,
            closed=True,
            quote_volume_derived=self.quote_volume_derived,
        )

    def candles(self, start_ms: int | None = None, end_ms: int | None = None) -> Iterator[Candle]:
        """Yield the candles with ``start_ms <= open_time < end_ms`` (both optional), in time order."""
        lo = 0 if start_ms is None else int(np.searchsorted(self.open_time, start_ms, side="left"))
        hi = len(self) if end_ms is None else int(np.searchsorted(self.open_time, end_ms, side="left"))
        for index in range(lo, hi):
            yield self.candle(index)

    def index_of(self, open_time: int) -> int | None:
        """Return the row of the minute that opened at ``open_time``, or None when it is missing."""
        index = int(np.searchsorted(self.open_time, open_time, side="left"))
        if index < len(self) and int(self.open_time[index]) == open_time:
            return index
        return None


def symbol_of(path: Path) -> str:
    """Return the symbol a kline file is named after (``btcusdt-1m-...csv.gz`` -> ``BTCUSDT``).

    A delivery or COIN-M contract keeps its suffix (``ETHUSDT_250627-1m-...`` -> ``ETHUSDT_250627``;
    see ``is_perpetual``).
    """
    match = _SYMBOL.match(path.name)
    if not match:
        raise KlineFileError(f"{path}: cannot tell the symbol from the file name (expected SYMBOL-1m-...)")
    return match.group(1).upper()


def is_perpetual(symbol: str) -> bool:
    """Return whether ``symbol`` is a USD-M perpetual (not ``ETHUSDT_250627``, delivery, or ``BTCUSD_PERP``)."""
    return "_" not in symbol


def read_klines(path: Path, symbol: str | None = None) -> KlineSeries:
    """Read one kline CSV (12-column Binance or 6-column OHLCV; plain, ``.gz`` or ``.zip``) into a series.

    Rows are sorted by open time and duplicate minutes dropped (the first is kept). A row that is
    not a valid candle (a malformed line, an open time off the minute, or what metrics.md calls
    invalid: prices not finite and > 0, low above or high below the open or close, negative
    volumes, an open time outside 2017-2099) is skipped and logged with its line and reason, so it
    cannot reach any window. Open times in microseconds (Binance's spot files since 2025) are read
    as milliseconds, ISO date-times (freqtrade's and pandas' exports) as UTC unless they say
    otherwise. Raise ``KlineFileError`` naming the file and the problem when it holds no valid row.
    """
    symbol = symbol or symbol_of(path)
    raw = _file_bytes(path).removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte order mark
    newline = raw.find(b"\n")
    first_line = (raw if newline < 0 else raw[:newline]).strip()
    has_header = bool(first_line) and not first_line[:1].isdigit()
    try:
        columns = [c.strip().strip('"').lower() for c in first_line.decode("utf-8").split(",")] if has_header else None
    except UnicodeDecodeError as exc:
        raise KlineFileError(f"{path}: {exc}") from None
    before = 1 if has_header else 0  # lines before the body
    start = (len(raw) if newline < 0 else newline + 1) if has_header else 0  # where the body begins in ``raw``
    table, lines, bad = _parse_table(path, raw, start, before)
    width = table.shape[1]
    if columns is not None:
        columns = columns[:width]  # a header naming more columns than the rows have (checked below)
    elif width >= 11:
        columns = list(BINANCE_COLUMNS[:width])
    elif width == 6:
        columns = list(OHLCV_COLUMNS)
    else:
        raise KlineFileError(f"{path}: {width} columns, expected 12 (Binance) or 6 (OHLCV)")
    index = {OPEN_TIME_NAMES.get(name, name): i for i, name in enumerate(columns)}
    missing = [name for name in OHLCV_COLUMNS if name not in index]
    if missing:
        raise KlineFileError(f"{path}: missing column(s) {missing}")
    open_time_column = table[:, index["open_time"]]
    finite = open_time_column[np.isfinite(open_time_column)]
    if finite.size and np.median(finite) >= MICROSECOND_STAMPS:  # the file's unit, not one stray row's
        log.info("%s: open_time in microseconds, read as milliseconds", path)
        open_time_column = open_time_column / 1000.0
    high, low, close, volume = (table[:, index[name]] for name in ("high", "low", "close", "volume"))
    derived = "quote_volume" not in index
    zeros = np.zeros_like(volume)

    def column(name: str) -> FloatArray:
        return table[:, index[name]] if name in index else zeros

    quote_volume = volume * (high + low + close) / 3.0 if derived else column("quote_volume")
    values = np.column_stack(
        [
            table[:, index["open"]], high, low, close, volume, quote_volume,
            column("count"), column("taker_buy_volume"), column("taker_buy_quote_volume"),
        ]
    ).astype(np.float64, copy=False)  # fmt: skip
    invalid = invalid_rows(open_time_column, values)
    if invalid:
        numbers = lines if lines is not None else _line_numbers(raw[start:], before)
        bad = sorted(bad + [(numbers[row], reason) for row, reason in invalid])
        keep = np.ones(len(values), dtype=bool)
        keep[[row for row, _ in invalid]] = False
        open_time_column, values = open_time_column[keep], values[keep]
    if bad:
        shown = "; ".join(f"line {line}: {reason}" for line, reason in bad[:5])
        more = f"; and {len(bad) - 5} more" if len(bad) > 5 else ""
        log.warning("%s: %d invalid row(s) skipped: %s%s", path, len(bad), shown, more)
    if not len(values):
        raise KlineFileError(f"{path}: no valid rows ({bad[0][1]} at line {bad[0][0]})")
    open_time = open_time_column.astype(np.int64)
    if np.all(np.diff(open_time) > 0):  # in order, one row a minute: as recorded
        return KlineSeries(symbol, open_time, values, derived)
    order = np.argsort(open_time, kind="stable")
    open_time, values = open_time[order], values[order]
    keep = np.concatenate(([True], np.diff(open_time) != 0))
    return KlineSeries(symbol, open_time[keep], values[keep], derived)


def read_columns(path: Path, names: Sequence[str]) -> tuple[IntArray, FloatArray, bool]:
    """Read the open times and the columns ``names`` (of ``KlineSeries.VALUE_COLUMNS``) of one kline CSV.

    Return the open times, the values (len(names), rows) and whether the quote volume was derived,
    read by ``read_klines``'s rules (invalid rows skipped, sorted, one row a minute).
    """
    series = read_klines(path)
    index = [KlineSeries.VALUE_COLUMNS.index(name) for name in names]
    return series.open_time, series.values.T[index], series.quote_volume_derived  # one copy, (names, rows)


def invalid_rows(open_time: FloatArray, values: FloatArray) -> list[tuple[int, str]]:
    """Return ``(row, reason)`` of every row that is not a valid candle (metrics.md), in row order.

    ``values`` has the columns of ``KlineSeries.VALUE_COLUMNS``; the checks are
    ``Candle.validation_error``'s, on whole columns.
    """
    if _all_valid(open_time, values):
        return []
    o, h, lo, c = values[:, 0], values[:, 1], values[:, 2], values[:, 3]
    prices, volumes = values[:, :4], values[:, 4:]
    with np.errstate(invalid="ignore"):
        checks = (
            (~(np.isfinite(open_time) & (open_time % MINUTE_MS == 0)), "open_time is not a whole minute in ms"),
            (~((open_time >= FIRST_OPEN_TIME) & (open_time < LAST_OPEN_TIME)), "open_time not within 2017-2099 in ms"),
            (~np.all(np.isfinite(prices) & (prices > 0), axis=1), "prices must be finite and > 0"),
            (lo > np.minimum(o, c), "low > min(open, close)"),
            (h < np.maximum(o, c), "high < max(open, close)"),
            (~np.all(np.isfinite(volumes) & (volumes >= 0), axis=1), "volumes and trades must be finite and >= 0"),
        )
    found: dict[int, str] = {}
    for mask, reason in checks:
        for row in np.flatnonzero(mask).tolist():
            found.setdefault(row, reason)
    return sorted(found.items())


def _all_valid(open_time: FloatArray, values: FloatArray) -> bool:
    """Return whether no row fails a check of ``invalid_rows`` (every file so far), mostly by reductions.

    A minimum or maximum is NaN when a value is, and every comparison with NaN is false, so each
    bound below holds only where every value is a number within it. With every value finite and
    >= 0, the prices are > 0 when the lows are: the open, close and high are at least the low.
    """
    if not len(open_time):
        return True
    if not (open_time.min() >= FIRST_OPEN_TIME and open_time.max() < LAST_OPEN_TIME):
        return False
    whole = open_time.astype(np.int64)  # exact: the open times are numbers within 2017-2099 (below 2**53)
    if not (bool((whole == open_time).all()) and bool((whole % MINUTE_MS == 0).all())):
        return False
    if not (values.min() >= 0 and values.max() < np.inf):
        return False
    o, h, lo, c = values[:, 0], values[:, 1], values[:, 2], values[:, 3]
    return lo.min() > 0 and bool((lo <= np.minimum(o, c)).all()) and bool((h >= np.maximum(o, c)).all())


def _file_bytes(path: Path) -> bytes:
    """Return the CSV text of ``path``: plain, gzip, or the one CSV in a zip (data.binance.vision's downloads).

    The compression is told from the content, whatever the name says.
    """
    try:
        raw = path.read_bytes()
        if raw.startswith(GZIP_MAGIC):  # by content, not name: a .csv may be compressed
            return _gunzip(raw)
        if raw.startswith(ZIP_MAGIC):
            with zipfile.ZipFile(io.BytesIO(raw)) as archive:
                members = [m for m in archive.namelist() if m.lower().endswith(".csv")]
                if len(members) != 1:
                    raise KlineFileError(f"{path}: expected one CSV file in the zip, found {members}")
                return archive.read(members[0])
        return raw
    except _READ_ERRORS as exc:
        raise KlineFileError(f"{path}: {exc}") from None


def _gunzip(data: bytes) -> bytes:
    """Return the bytes gzip-compressed in ``data`` (every member), with ISA-L's inflate (~3x zlib's speed)."""
    raw: bytes = igzip.decompress(data)  # type: ignore[no-untyped-call]  # isal's stub leaves it untyped
    return raw


# What reading and decompressing a file may raise (isal's stub types its error as an instance).
_READ_ERRORS: tuple[type[Exception], ...] = (
    OSError, EOFError, zipfile.BadZipFile, cast(type[Exception], isal_zlib.error),
)  # fmt: skip


def _line_numbers(body: bytes, before: int) -> list[int]:
    """Return the line number (from 1, in the file) of each non-blank line of ``body``."""
    return [before + i + 1 for i, line in enumerate(body.split(b"\n")) if line.strip()]


def _parse_table(path: Path, text: bytes, start: int, before: int) -> tuple[FloatArray, list[int] | None, Bad]:
    """Parse comma-separated numbers, one row per line, into a 2-D array (numpy's C parser).

    The rows are ``text`` from ``start`` on (the body, after any header). Return the table, the line
    number of each row (None: row ``i`` is the ``i``-th non-blank line of the body) and the ``(line,
    reason)`` of every line skipped. A line that does not parse (text where a number belongs, a row
    cut short: a width other than most lines') is skipped, so one damaged line costs that minute,
    not the file.
    """
    # Plain decimals (every recording so far): ``decimal_csv``, ~5x numpy's parser, reading the body
    # where it lies (not a copy); anything else (a sign, an exponent, a date, a ragged or damaged
    # row, no row) the general way below.
    newline = text.find(b"\n", start)
    width = text.count(b",", start, len(text) if newline < 0 else newline) + 1
    columns = parse_columns(memoryview(text)[start:], width, range(width))
    if columns is not None and columns.shape[1]:
        return np.ascontiguousarray(columns.T), None, []
    body = text[start:]
    if not body.strip():
        raise KlineFileError(f"{path}: no rows")
    try:
        table: FloatArray = np.loadtxt(io.BytesIO(body), delimiter=",", ndmin=2, dtype=np.float64)
        return table, None, []
    except ValueError:
        pass  # a malformed line: parse line by line, skipping the bad ones
    split = [(number, line.strip().split(b",")) for number, line in zip(
        _line_numbers(body, before), (line for line in body.split(b"\n") if line.strip()), strict=True
    )]  # fmt: skip
    widths = [len(cells) for _, cells in split[:1000]]
    width = max(set(widths), key=widths.count)
    rows: list[list[float]] = []
    lines: list[int] = []
    bad: Bad = []
    for number, cells in split:
        try:
            if len(cells) != width:
                raise ValueError(f"{len(cells)} columns, expected {width}")
            rows.append([_epoch_ms(cells[0]), *(float(cell) for cell in cells[1:])])
        except ValueError as exc:
            bad.append((number, str(exc)))
            continue
        lines.append(number)
    return np.array(rows, dtype=np.float64).reshape(len(rows), width), lines, bad


def _epoch_ms(cell: bytes) -> float:
    """Return an open time cell as epoch milliseconds: a number, or an ISO date-time (UTC unless it says).

    Exports of freqtrade or pandas write ``2025-05-04 15:33:00+00:00`` where Binance writes milliseconds.
    """
    try:
        return float(cell)
    except ValueError:
        pass
    try:
        instant = datetime.fromisoformat(cell.decode("utf-8").strip().strip('"').replace("Z", "+00:00"))
    except (UnicodeDecodeError, ValueError):
        raise ValueError(f"open time {cell.decode('utf-8', 'replace')!r} is neither a number nor a date") from None
    return (instant if instant.tzinfo else instant.replace(tzinfo=UTC)).timestamp() * 1000.0


def kline_files(folder: Path) -> list[Path]:
    """Return the kline CSV files in ``folder`` and its subfolders (``.csv``, ``.csv.gz``, ``.zip``, any case).

    Subfolders too, because Binance's download scripts file each symbol under its own
    (``futures/um/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2026-03.zip``). Sorted by file name.
    """
    if not folder.is_dir():
        raise KlineFileError(f"{folder}: not a folder of kline CSV files")
    found = (p for p in folder.rglob("*") if p.is_file() and p.name.lower().endswith(KLINE_SUFFIXES))
    return sorted(found, key=lambda p: (p.name, p))


def files_by_symbol(folder: Path, symbols: Sequence[str] | None = None) -> dict[str, list[Path]]:
    """Return the kline files of ``folder`` (or of ``symbols`` only) by symbol, each symbol's sorted by name.

    Only 1-minute klines of USD-M perpetuals are read: a file named after another interval
    (``BTCUSDT-1h-2026-02.zip``: its bars would pass for minutes), after no symbol, a delivery contract
    (``ETHUSDT_250627-...``, which expires and would sit beside its perpetual) or a COIN-M one
    (``BTCUSD_PERP``, volumes in contracts) is skipped with a warning. Raise ``KlineFileError`` when no file is left.
    """
    wanted = {s.upper() for s in symbols} if symbols else None
    files: dict[str, list[Path]] = {}
    for path in kline_files(folder):
        try:
            symbol = symbol_of(path)
        except KlineFileError as exc:
            log.warning("%s; skipped", exc)
            continue
        interval = _INTERVAL.match(path.name)
        if interval and interval.group(1).lower() != "1m":  # Binance's other intervals, downloaded alongside
            log.warning("%s: %s klines, not 1-minute ones; skipped", path, interval.group(1))
        elif not is_perpetual(symbol):
            log.warning("%s: %s is not a USD-M perpetual (a delivery or COIN-M contract); skipped", path, symbol)
        elif wanted is None or symbol in wanted:
            files.setdefault(symbol, []).append(path)
    if not files:
        raise KlineFileError(f"{folder}: no kline files" + (f" for {sorted(wanted)}" if wanted else ""))
    return dict(sorted(files.items()))


def read_folder(folder: Path, symbols: Sequence[str] | None = None) -> dict[str, KlineSeries]:
    """Read every kline file of ``folder`` (or only those of ``symbols``); return series by symbol.

    Several files of one symbol (e.g. consecutive months) are concatenated. A file that cannot be
    read (no valid row, damaged, an unknown layout) is skipped with a warning naming it and why;
    raise ``KlineFileError`` when none can be.
    """
    parts: dict[str, list[KlineSeries]] = {}
    spans: dict[str, list[tuple[Path, int, int]]] = {}
    files = [(symbol, path) for symbol, paths in files_by_symbol(folder, symbols).items() for path in paths]
    began = time.monotonic()
    for done, (symbol, path) in enumerate(files, 1):
        try:
            series = read_klines(path, symbol)
            parts.setdefault(symbol, []).append(series)
            spans.setdefault(symbol, []).append((path, series.first_open_time, series.last_open_time))
        except KlineFileError as exc:
            log.warning("%s; file skipped", exc)
        if len(files) >= PROGRESS_FILES and done % (len(files) // 10) == 0:  # a long start-up says how far it is
            log.info("read %d of %d kline files of %s (%.0f s)", done, len(files), folder, time.monotonic() - began)
    if not parts:
        raise KlineFileError(f"{folder}: no kline file could be read (see the warnings above)")
    for symbol_spans in spans.values():
        report_overlaps(symbol_spans)
    return {symbol: _concat(symbol, series) for symbol, series in parts.items()}


def report_overlaps(spans: Sequence[tuple[Path, int, int]]) -> None:
    """Log the files of one symbol (``(path, first, last open time)``, in name order) whose spans overlap.

    Their shared minutes are taken from the first file by name (as ``read_folder`` and
    ``marketdata.blocks`` do); the line says so, because two months that both hold a day are a
    download to check.
    """
    for (a, a_first, a_last), (b, b_first, b_last) in itertools.combinations(spans, 2):
        if a_first <= b_last and b_first <= a_last:
            log.info(
                "%s and %s share minutes %s to %s; those of %s are read",
                a, b, _iso(max(a_first, b_first)), _iso(min(a_last, b_last)), a.name,
            )  # fmt: skip


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def _concat(symbol: str, parts: list[KlineSeries]) -> KlineSeries:
    if len(parts) == 1:
        return parts[0]
    open_time = np.concatenate([p.open_time for p in parts])
    values = np.concatenate([p.values for p in parts])
    order = np.argsort(open_time, kind="stable")
    open_time, values = open_time[order], values[order]
    keep = np.concatenate(([True], np.diff(open_time) != 0))
    return KlineSeries(symbol, open_time[keep], values[keep], any(p.quote_volume_derived for p in parts))
