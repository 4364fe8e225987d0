"""What the recorder's roll-up of ``bars`` costs per minute's batch, against storing the minutes alone.

Stores one minute of N symbols at a time into ``candles_1m`` (real 2026-02 minutes, copied to N symbols)
with and without the roll-up (``insert_records(..., roll_up_bars=...)``), alternately minute by
minute in one run, on an embedded PostgreSQL (or ``--postgres-dsn``), and prints the median time of
each and their ratio. The run ends at a midnight, so every kind of bar closes in it.

    .venv/bin/python bench/recorder_rollup.py --symbols 650 --minutes 1440
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import asyncpg

from functions.recorder.store import candle_record, insert_records
from marketdata.klines import read_klines
from screener.db.migrate import migrate
from screener.db.partitions import PartitionCache
from screener.embedded.servers import start_postgres
from screener.events.models import MINUTE_MS

DAY_MS = 1440 * MINUTE_MS
DATA = Path(__file__).resolve().parents[1] / "data" / "klines" / "binance-um-2026-02"


async def measure(dsn: str, symbols: int, minutes: int) -> None:
    """Store ``minutes`` minutes of ``symbols`` symbols twice (two name spaces), alternating the two ways."""
    # The run ends at a midnight, so the day's, 8 hours' and 4 hours' bars close in it too.
    every = list(read_klines(DATA / "ALGOUSDT-1m-2026-02.csv.gz").candles())
    start = next(i for i, c in enumerate(every) if (c.open_time + minutes * MINUTE_MS) % DAY_MS == 0)
    candles = every[start : start + minutes]
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn, 24 * 365)
        partitions = PartitionCache()
        timings: dict[bool, list[float]] = {False: [], True: []}
        for index, candle in enumerate(candles):
            for roll_up in (index % 2 == 0, index % 2 == 1):  # alternate which goes first
                prefix = "R" if roll_up else "P"
                records = [
                    candle_record(candle.model_copy(update={"symbol": f"{prefix}{n:04d}USDT"})) for n in range(symbols)
                ]
                began = time.perf_counter()
                await insert_records(conn, records, partitions, roll_up_bars=roll_up)
                timings[roll_up].append(time.perf_counter() - began)
            if (index + 1) % 240 == 0:
                print(f"  {index + 1}/{len(candles)} minutes", flush=True)
        bars = await conn.fetchval("SELECT count(*) FROM bars WHERE symbol LIKE 'R%'")
    finally:
        await conn.close()
    alone, rolled = (statistics.median(timings[k]) * 1000 for k in (False, True))
    slowest = max(timings[True]) * 1000
    print(f"{symbols} symbols x {len(candles)} minutes, one minute per batch; {bars} bars rolled up")
    print(f"minutes alone:      median {alone:7.1f} ms per batch")
    print(f"with the roll-up:   median {rolled:7.1f} ms per batch ({rolled / alone:.2f}x), slowest {slowest:.1f} ms")


def main() -> None:
    """Parse the arguments, start PostgreSQL if none is given, and measure."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--symbols", type=int, default=650)
    parser.add_argument("--minutes", type=int, default=1440)
    parser.add_argument("--postgres-dsn", default=None)
    args = parser.parse_args()
    if args.postgres_dsn:
        asyncio.run(measure(args.postgres_dsn, args.symbols, args.minutes))
        return
    with tempfile.TemporaryDirectory() as folder:
        server = start_postgres(Path(folder) / "pg", durable=False)
        try:
            asyncio.run(measure(server.url, args.symbols, args.minutes))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
