"""Recompute a symbol's metrics of a past minute from the calculator's rings, with its own code.

The metrics store keeps only the last few minutes per symbol. When the rules lag further behind
(a backlog, a replay at full speed), a snapshot they need (``BTC.c1h`` of minute t, or a symbol's
minute before the one being evaluated) may already be gone. The calculator's compute is a pure
function of the minutes stored up to t (``functions.calculator.compute``, "the determinism rule"),
and the rings keep ``state.layout.MARGIN_MINUTES`` of newer minutes without disturbing t's
windows and bars, so the snapshot can be computed again, exactly, from the rings.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from functions.calculator.compute import compute_snapshots
from screener.events.models import MINUTE_MS, MetricsSnapshot
from state import layout
from state.candles import CandleStore


class RingRecompute:
    """Compute snapshots of past minutes from the 1-minute and bar rings in Redis."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._candles = CandleStore(client)

    async def snapshot(self, symbol: str, minute: int) -> MetricsSnapshot | None:
        """Return ``symbol``'s metrics of ``minute``; None when its candle is not stored or too old."""
        state = (await self._candles.read([symbol])).get(symbol)
        if state is None:
            return None
        latest = state.latest_minute()
        if latest is None or latest > minute + layout.MARGIN_MINUTES * MINUTE_MS:
            return None  # newer minutes may have overwritten what minute's bars and windows read
        computed = compute_snapshots(minute, [state])
        return computed[0] if computed else None
