"""Start a replay from the settings: read the data, warm up the database, resume, stream."""

from __future__ import annotations

import logging
from pathlib import Path

import asyncpg

from collector.clock import Clock
from collector.emitter import CandleEmitter
from collector.replay.market import ReplayMarket
from collector.replay.readers import read_folder, read_klines
from collector.replay.source import ReplaySource, parse_speed, resume_minute
from collector.replay.warmup import warm_up, warmup_end
from screener.config import Settings

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
DEFAULT_REPLAY_DATA = REPO / "data" / "klines" / "binance-um-2026-02"


def load_market(settings: Settings, data: Path | None = None, symbols: list[str] | None = None) -> ReplayMarket:
    """Read the replay's recording (a folder of kline files, or one file) into a market."""
    path = data or settings.replay_data or DEFAULT_REPLAY_DATA
    wanted = symbols or settings.symbols or None
    if path.is_file():
        one = read_klines(path)
        series = {one.symbol: one}
    else:
        series = read_folder(path, wanted)
    market = ReplayMarket(series, settings.replay_virtual_symbols)
    log.info("replay of %s: %d symbols, %d minutes from %d", path, len(market.tracks), market.minutes, market.start_ms)
    return market


async def prepare_replay(
    market: ReplayMarket,
    emitter: CandleEmitter,
    clock: Clock,
    settings: Settings,
    pool: asyncpg.Pool | None,
) -> ReplaySource:
    """Warm the database up when it holds nothing of these symbols; return a source resuming after what is stored."""
    start = warmup_end(market, settings.replay_warmup_minutes)
    if pool is not None:
        async with pool.acquire() as conn:
            stored = await conn.fetchval(
                "SELECT (extract(epoch FROM max(open_time)) * 1000)::bigint FROM candles_1m WHERE symbol = ANY($1)",
                market.symbols,
            )
            if stored is None and settings.replay_warmup_minutes > 0:
                start = await warm_up(conn, market, settings.replay_warmup_minutes)
        start = resume_minute(market, stored, start)
    return ReplaySource(
        market, emitter, clock, speed=parse_speed(settings.replay_speed), loop=settings.replay_loop, start_ms=start
    )
