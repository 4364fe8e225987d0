"""The rules' positions in the METRICS stream, kept durably in PostgreSQL beside the alerts.

``screener.runtime.sequence`` keeps positions in Redis; this is their copy that survives a Redis
restart (``stream_positions``). A position only moves forward, in either store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import asyncpg

from screener.runtime.sequence import Position

FUNCTION = "rules"

_UPSERT = """
INSERT INTO stream_positions (function, symbol, minute, sequence)
SELECT $1, u.symbol, u.minute, u.sequence
FROM unnest($2::text[], $3::bigint[], $4::bigint[]) AS u(symbol, minute, sequence)
ON CONFLICT (function, symbol) DO UPDATE
SET minute = excluded.minute, sequence = excluded.sequence, updated_at = now()
WHERE stream_positions.minute < excluded.minute
"""
_SELECT = "SELECT symbol, minute, sequence FROM stream_positions WHERE function = $1 AND symbol = ANY($2::text[])"


async def save_positions(pool: asyncpg.Pool, positions: Mapping[str, Position]) -> None:
    """Store ``positions`` (one statement); an older one never replaces a newer one."""
    if not positions:
        return
    symbols = sorted(positions)
    await pool.execute(
        _UPSERT,
        FUNCTION,
        symbols,
        [positions[s].minute for s in symbols],
        [positions[s].sequence for s in symbols],
    )


async def load_positions(pool: asyncpg.Pool, symbols: Sequence[str]) -> dict[str, Position]:
    """Return the stored positions of ``symbols`` (those without one are absent)."""
    rows = await pool.fetch(_SELECT, FUNCTION, list(symbols))
    return {r["symbol"]: Position(r["minute"], r["sequence"]) for r in rows}
