"""Start a replay from the settings: read the data, warm up the database, resume, stream."""

from __future__ import annotations

import logging
from pathlib import Path

import asyncpg

from collector.clock import Clock
from collector.emitter import CandleEmitter
from collector.replay.market import ReplayMarket
from collector.replay.source import ReplaySource, parse_speed, resume_minute
from collector.replay.warmup import warm_up, warmup_end
from marketdata.klines import read_folder, read_klines
from screener.config import DEFAULT_REPLAY_RECORDING, Settings
from screener.events.models import MINUTE_MS

log = logging.getLogger(__name__)
DAY_MS = 1440 * MINUTE_MS

REPO = Path(__file__).resolve().parents[2]
DEFAULT_REPLAY_DATA = REPO / "data" / "klines" / DEFAULT_REPLAY_RECORDING


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


def live_shift(market: ReplayMarket, settings: Settings, now_ms: int) -> int:
    """Return the shift (whole days) putting the first streamed minute ``replay_catch_up_minutes`` or more back.

    Whole days keep every UTC-aligned bar of the recording whole (the warm-up seeds the same bars as
    a replay with recorded times), so the catch-up is between ``replay_catch_up_minutes`` and a day
    more. The replay plays it at its speed, with timestamps of the recent past (the web client's
    48-hour windows show them), and runs in real time once it reaches now.
    """
    first_recorded = warmup_end(market, settings.warmup_minutes) - market.time_shift_ms
    target = now_ms - now_ms % MINUTE_MS - settings.replay_catch_up_minutes * MINUTE_MS
    return (target - first_recorded) // DAY_MS * DAY_MS


async def anchor_time(
    conn: asyncpg.Connection | None, market: ReplayMarket, settings: Settings, clock: Clock, stored: int | None
) -> None:
    """Shift ``market`` for ``replay_time=live``: by the shift this database already uses, else a new one.

    A database that holds this replay's candles without an anchor was filled with recorded times;
    it keeps them (a shift now would leave a gap of years in every window).
    """
    if settings.replay_time != "live":
        return
    key = f"{settings.replay_recording}:{market.recorded_start_ms}"
    if conn is None:
        market.shift_time(live_shift(market, settings, clock.now_ms()))
        return
    # Its key, else one the same recording got under an earlier start (before the timeline spanned
    # every file, it began where all symbols overlap): a shift maps recorded to shown times, whatever
    # the span, so a database kept from then stays on its timeline.
    shift = await conn.fetchval(
        """SELECT shift_ms FROM replay_anchors WHERE recording = $1 OR left(recording, length($2)) = $2
           ORDER BY recording = $1 DESC LIMIT 1""",
        key,
        f"{settings.replay_recording}:",
    )
    if shift is None and stored is not None:
        log.warning("replay: the database holds %s with recorded times; keeping them (new data dir to go live)", key)
        return
    if shift is None:
        shift = await conn.fetchval(
            """INSERT INTO replay_anchors (recording, shift_ms) VALUES ($1, $2)
               ON CONFLICT (recording) DO UPDATE SET recording = EXCLUDED.recording RETURNING shift_ms""",
            key,
            live_shift(market, settings, clock.now_ms()),
        )
    market.shift_time(int(shift))
    log.info("replay of %s shifted by %d minutes to run at the present", key, int(shift) // MINUTE_MS)


async def prepare_replay(
    market: ReplayMarket,
    emitter: CandleEmitter,
    clock: Clock,
    settings: Settings,
    pool: asyncpg.Pool | None,
) -> ReplaySource:
    """Warm the database up when it holds nothing of these symbols; return a source resuming after what is stored.

    With ``replay_time=live`` the market is first shifted to the present (``anchor_time``).
    """
    live = settings.replay_time == "live"
    if pool is None:
        await anchor_time(None, market, settings, clock, None)
    start = warmup_end(market, settings.warmup_minutes)
    if pool is not None:
        async with pool.acquire() as conn:
            stored = await conn.fetchval(
                "SELECT (extract(epoch FROM max(open_time)) * 1000)::bigint FROM candles_1m WHERE symbol = ANY($1)",
                market.symbols,
            )
            await anchor_time(conn, market, settings, clock, stored)
            start = warmup_end(market, settings.warmup_minutes)
            if stored is None and settings.warmup_minutes > 0:
                start = await warm_up(conn, market, settings.warmup_minutes)
        start = resume_minute(market, stored, start)
    return ReplaySource(
        market,
        emitter,
        clock,
        speed=parse_speed(settings.replay_speed),
        loop=settings.replay_loop,
        start_ms=start,
        live=live and market.time_shift_ms != 0,
    )
