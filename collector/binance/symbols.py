"""Which symbols to collect: USDT perpetuals that are trading, optionally the top N or a fixed list."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from collector.binance.rest import BinanceRest

log = logging.getLogger(__name__)


def tradable_usdt_perpetuals(exchange_info: dict[str, Any]) -> list[str]:
    """Return the symbols of ``exchangeInfo`` that are USDT-margined perpetuals in status TRADING."""
    return sorted(
        s["symbol"]
        for s in exchange_info.get("symbols", [])
        if s.get("contractType") == "PERPETUAL" and s.get("quoteAsset") == "USDT" and s.get("status") == "TRADING"
    )


def top_by_quote_volume(symbols: Sequence[str], tickers: Sequence[dict[str, Any]], n: int) -> list[str]:
    """Return the ``n`` of ``symbols`` with the largest 24h quote volume (ticker ``quoteVolume``)."""
    volume = {t.get("symbol"): float(t.get("quoteVolume") or 0.0) for t in tickers}
    ranked = sorted(symbols, key=lambda s: (-volume.get(s, 0.0), s))
    return sorted(ranked[:n])


def choose_symbols(
    exchange_info: dict[str, Any],
    tickers: Sequence[dict[str, Any]] | None,
    *,
    fixed: Sequence[str] = (),
    top_n: int = 0,
) -> list[str]:
    """Return the symbols to collect.

    A fixed list wins (kept only while its symbols trade, so a delisting drops them); otherwise
    every tradable USDT perpetual, cut to the top ``top_n`` by 24h quote volume when ``top_n`` > 0.
    """
    tradable = tradable_usdt_perpetuals(exchange_info)
    if fixed:
        wanted = {s.upper() for s in fixed}
        unknown = sorted(wanted.difference(tradable))
        if unknown:
            log.warning("symbols not trading as USDT perpetuals, skipped: %s", ", ".join(unknown))
        return sorted(wanted.intersection(tradable))
    if top_n > 0 and tickers is not None:
        return top_by_quote_volume(tradable, tickers, top_n)
    return tradable


async def fetch_symbols(rest: BinanceRest, *, fixed: Sequence[str] = (), top_n: int = 0) -> list[str]:
    """Ask Binance for the current symbol list (exchangeInfo, plus the 24h tickers for a top N)."""
    info = await rest.exchange_info()
    tickers = await rest.tickers_24h() if top_n > 0 and not fixed else None
    return choose_symbols(info, tickers, fixed=fixed, top_n=top_n)
