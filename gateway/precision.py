"""Prices and quantities as Binance spells them: fixed decimals of the symbol's tick size and step size.

Sums and ratios of doubles carry noise (``0.0013999999999999985``); Binance writes a price with the
decimals of the symbol's ``tickSize`` (BTCUSDT: ``"103905.8"``) and a quantity with those of its
``stepSize`` (``"23.241"``). The sizes of the symbols in ``data/klines`` are derived from the
recordings themselves and shipped as ``gateway/precision_table.py``::

    python -m gateway.precision --write gateway/precision_table.py

A symbol the table does not know (a live one) falls back to 8 significant digits, at most 8
decimals, trailing zeros dropped: the noise goes, the digits a market quotes stay.
"""

from __future__ import annotations

import argparse
import gzip
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from gateway.precision_table import PRECISION
from gateway.views import decimal_text

REPO = Path(__file__).resolve().parents[1]
KLINES = REPO / "data" / "klines"
# A recording's decimals are those covering this share of its values: a stray longer value (one of
# 160,000 SOLUSDT prices in the 2025-05 set) is a rounding artefact of the file, not the tick.
COVERAGE = 0.999
FALLBACK_DIGITS = 8
MAX_DECIMALS = 8


@dataclass(frozen=True)
class SymbolPrecision:
    """Decimals of a symbol's prices (tick size) and quantities (step size)."""

    price: int
    quantity: int

    @property
    def quote(self) -> int:
        """Return the decimals of a quote amount (price times quantity is exact with these)."""
        return min(self.price + self.quantity, MAX_DECIMALS)


def precision_of(symbol: str) -> SymbolPrecision | None:
    """Return the symbol's decimals from the shipped table, or None when it does not know the symbol."""
    known = PRECISION.get(symbol)
    return SymbolPrecision(*known) if known else None


def fixed(value: float, decimals: int | None) -> str:
    """Return ``value`` with exactly ``decimals`` decimals (None: the fallback), never ``-0``."""
    if decimals is None:
        return significant(value)
    text = f"{value:.{decimals}f}"
    return text[1:] if text.startswith("-") and not text.strip("-0.") else text


def significant(value: float) -> str:
    """Return ``value`` at ``FALLBACK_DIGITS`` significant digits (at most 8 decimals), no trailing zeros."""
    if value == 0 or not math.isfinite(value):
        return decimal_text(0.0 if value == 0 else value)
    decimals = min(MAX_DECIMALS, max(0, FALLBACK_DIGITS - 1 - math.floor(math.log10(abs(value)))))
    text = f"{value:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


class Formatter:
    """Spell one symbol's prices, quantities and quote amounts."""

    def __init__(self, symbol: str) -> None:
        """Look the symbol up once."""
        self._precision = precision_of(symbol)

    def price(self, value: float) -> str:
        """Return a price at the tick size's decimals."""
        return fixed(value, self._precision.price if self._precision else None)

    def quantity(self, value: float) -> str:
        """Return a base-asset quantity at the step size's decimals."""
        return fixed(value, self._precision.quantity if self._precision else None)

    def quote(self, value: float) -> str:
        """Return a quote-asset amount (USDT)."""
        return fixed(value, self._precision.quote if self._precision else None)


def percent(value: float) -> str:
    """Return a percentage as Binance's tickers do: three decimals."""
    return fixed(value, 3)


# --- deriving the table from the recordings ------------------------------------------------------
def _decimals(text: str) -> int:
    whole, _, fraction = text.strip().partition(".")
    del whole
    return len(fraction.rstrip("0"))


def _covering(counts: Counter[int]) -> int:
    total = sum(counts.values())
    seen = 0
    for decimals in sorted(counts):
        seen += counts[decimals]
        if seen >= COVERAGE * total:
            return decimals
    return 0


def derive(paths: Iterable[Path]) -> dict[str, tuple[int, int]]:
    """Return {symbol: (price decimals, quantity decimals)} read from recorded kline files."""
    prices: dict[str, Counter[int]] = {}
    quantities: dict[str, Counter[int]] = {}
    for path in sorted(paths):
        symbol = path.name.split("-", 1)[0]
        price_counts = prices.setdefault(symbol, Counter())
        quantity_counts = quantities.setdefault(symbol, Counter())
        with gzip.open(path, "rt") if path.suffix == ".gz" else path.open() as handle:
            for line in handle:
                fields = line.split(",")
                if not fields[0].strip().isdigit():  # a header row
                    continue
                price_counts.update(_decimals(field) for field in fields[1:5])
                quantity_counts[_decimals(fields[5])] += 1
    return {symbol: (_covering(prices[symbol]), _covering(quantities[symbol])) for symbol in sorted(prices)}


def render_table(table: dict[str, tuple[int, int]]) -> str:
    """Return the source of ``gateway/precision_table.py`` for ``table``."""
    rows = "\n".join(f'    "{symbol}": {decimals},' for symbol, decimals in sorted(table.items()))
    return (
        '"""Decimals of the recorded symbols\' prices and quantities (tick size, step size).\n\n'
        "Generated from data/klines by ``python -m gateway.precision --write gateway/precision_table.py``;\n"
        "do not edit by hand.\n"
        '"""\n\n'
        "# symbol: (price decimals, quantity decimals)\n"
        f"PRECISION: dict[str, tuple[int, int]] = {{\n{rows}\n}}\n"
    )


def recorded_files(root: Path = KLINES) -> list[Path]:
    """Return every recorded kline file under ``root``."""
    return sorted(p for p in root.glob("*/*") if p.name.endswith((".csv", ".csv.gz")))


def main() -> None:
    """Print the table derived from data/klines, or write it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--write", type=Path, help="module to write (gateway/precision_table.py)")
    args = parser.parse_args()
    source = render_table(derive(recorded_files()))
    if args.write:
        args.write.write_text(source)
    else:
        print(source, end="")


if __name__ == "__main__":
    main()
