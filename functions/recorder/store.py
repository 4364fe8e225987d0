"""Write candles into ``candles_1m``: batched through COPY, idempotent through ON CONFLICT DO NOTHING.

The recorder also rolls the ``bars`` they close up from them, in the same transaction
(``screener.db.bars``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import asyncpg

from screener.db.bars import roll_up, roll_up_statements
from screener.db.partitions import PartitionCache
from screener.events.models import Candle

CANDLE_COLUMNS = (
    "symbol", "open_time", "open", "high", "low", "close", "volume", "quote_volume",
    "trades", "taker_buy_volume", "taker_buy_quote_volume", "quote_volume_derived",
)  # fmt: skip
_STAGE = "recorder_stage"
# A session-local staging table with epoch-ms open times: COPY is the fastest way in, and
# ON COMMIT DELETE ROWS empties it after every batch.
_CREATE_STAGE = f"""
CREATE TEMP TABLE IF NOT EXISTS {_STAGE} (
    symbol text, open_time bigint, open double precision, high double precision, low double precision,
    close double precision, volume double precision, quote_volume double precision, trades bigint,
    taker_buy_volume double precision, taker_buy_quote_volume double precision, quote_volume_derived boolean
) ON COMMIT DELETE ROWS
"""
_INSERT = f"""
INSERT INTO candles_1m ({", ".join(CANDLE_COLUMNS)})
SELECT symbol, to_timestamp(open_time / 1000.0), open, high, low, close, volume, quote_volume,
       trades, taker_buy_volume, taker_buy_quote_volume, quote_volume_derived
FROM {_STAGE}
ON CONFLICT (symbol, open_time) DO NOTHING
"""
_ROLL_UPS = roll_up_statements(_STAGE)


def unique_candles(candles: Iterable[Candle]) -> list[Candle]:
    """Return ``candles`` without repeated (symbol, open time), keeping the first of each."""
    seen: dict[tuple[str, int], Candle] = {}
    for candle in candles:
        seen.setdefault((candle.symbol, candle.open_time), candle)
    return list(seen.values())


CandleRecord = tuple[str, int, float, float, float, float, float, float, int, float, float, bool]


def candle_record(c: Candle) -> CandleRecord:
    """Return ``c`` as a row of ``CANDLE_COLUMNS`` (open time in epoch ms)."""
    return (
        c.symbol, c.open_time, c.open, c.high, c.low, c.close, c.volume, c.quote_volume,
        c.trades, c.taker_buy_volume, c.taker_buy_quote_volume, c.quote_volume_derived,
    )  # fmt: skip


async def insert_candles(conn: asyncpg.Connection, candles: Sequence[Candle], partitions: PartitionCache) -> int:
    """Insert ``candles`` that are not stored yet and roll up the bars they close; return how many rows were new.

    A candle already stored is left as it is: a closed minute is final, so a second copy (a
    redelivery, a REST backfill of a minute the stream delivered) is equal to the first.
    """
    records = [candle_record(c) for c in unique_candles(candles)]
    return await insert_records(conn, records, partitions, roll_up_bars=True)


async def insert_records(
    conn: asyncpg.Connection, records: Sequence[CandleRecord], partitions: PartitionCache, *, roll_up_bars: bool = False
) -> int:
    """Insert rows of ``CANDLE_COLUMNS`` (unique per symbol and open time); return how many were new.

    The bulk path of the replay warm-up, which has rows rather than ``Candle`` objects (and writes
    its bars itself). With ``roll_up_bars``, every bar of ``bars`` the rows touch is rolled up
    again once whole, in the same transaction: a redelivered batch writes the same bars.
    """
    if not records:
        return 0
    await partitions.ensure(conn, "candles_1m", {r[1] for r in records})
    async with conn.transaction():
        await conn.execute(_CREATE_STAGE)
        await conn.copy_records_to_table(_STAGE, records=records, columns=CANDLE_COLUMNS)
        status = await conn.execute(_INSERT)
        if roll_up_bars:
            await roll_up(conn, _ROLL_UPS)
    return int(status.rsplit(" ", 1)[-1])
