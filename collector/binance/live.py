"""The live collector: Binance kline streams, kept complete by REST backfill, emitted once per minute.

How nothing is lost and nothing is emitted twice:

* every closed minute is *claimed* in the ``MinuteLedger`` before it is published, whether it came
  from a stream frame or a REST row, so two sources of the same minute publish it once (and its
  deterministic id makes JetStream drop a re-publish after a crash);
* a sweeper compares the ledger with the clock: every minute that closed more than ``grace_ms``
  ago and was not emitted is fetched from ``/fapi/v1/klines``. It runs periodically, at start, and
  after every (re)connect, so missing closed messages, disconnects and rotations all end the same way;
* a stream candle whose predecessor is missing waits (up to ``hold_seconds``) while the sweeper
  fills the gap at once, and goes out with the filled minutes in one batch, so consumers see each
  symbol's minutes in time order;
* connections are replaced before their 24 h limit by opening the replacement first (overlap).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import aiohttp
import asyncpg

from collector.bars import upsert_bars
from collector.binance.backfill import Backfiller, seed_bars
from collector.binance.connection import MAX_STREAMS_PER_CONNECTION, ConnectionLost, KlineConnection
from collector.binance.ledger import MinuteLedger
from collector.binance.models import BinanceKlineEvent, MalformedFrame, kline_stream_name, to_candle
from collector.binance.rest import BinanceRest, BinanceRestError
from collector.binance.symbols import fetch_symbols
from collector.clock import Clock, last_closed_minute
from collector.emitter import CandleEmitter
from screener.config import Settings
from screener.events.models import MINUTE_MS, Candle

log = logging.getLogger(__name__)


@dataclass
class LiveStats:
    """Counters of the live collector (logged, and read by the tests)."""

    malformed: int = 0
    malformed_reasons: dict[str, int] = field(default_factory=dict)
    closed_frames: int = 0
    duplicates: int = 0
    connections_opened: int = 0
    disconnects: int = 0
    rotations: int = 0
    symbols_added: int = 0
    symbols_removed: int = 0
    publish_failures: int = 0


@dataclass(frozen=True)
class LiveTuning:
    """Timings that tests shorten; the defaults suit the real exchange."""

    grace_ms: int = 5_000  # a closed message later than this after the minute is taken as missing
    sweep_seconds: float = 5.0
    hold_seconds: float = 15.0
    backoff_base_seconds: float = 0.5
    backoff_cap_seconds: float = 60.0
    messages_per_second: float = 5.0
    max_streams_per_connection: int = MAX_STREAMS_PER_CONNECTION


class _Shard:
    """Up to 200 symbols served by one connection (two while it is being replaced)."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.symbols: set[str] = set()
        self.connection: KlineConnection | None = None
        self.lock = asyncio.Lock()
        self.changed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def streams(self) -> list[str]:
        return [kline_stream_name(s) for s in sorted(self.symbols)]


class LiveCollector:
    """Collect closed 1m candles of Binance USD-M perpetuals into JetStream."""

    def __init__(
        self,
        settings: Settings,
        emitter: CandleEmitter,
        session: aiohttp.ClientSession,
        clock: Clock,
        *,
        rest: BinanceRest | None = None,
        pool: asyncpg.Pool | None = None,
        tuning: LiveTuning | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.stats = LiveStats()
        self.ledger = MinuteLedger()
        self.rest = rest or BinanceRest(session, settings.binance_rest_url, clock)
        self.symbols: set[str] = set()
        self.ready = asyncio.Event()  # set once the first backfill is done
        self._seeded: set[str] = set()  # symbols whose bars were seeded (or tried) by this process
        self._emitter = emitter
        self._session = session
        self._clock = clock
        self._pool = pool
        self._tuning = tuning or LiveTuning()
        self._rng = rng or random.Random()
        self._shards: list[_Shard] = []
        self._backfiller = Backfiller(self.rest, self.ledger, self._publish_backfill)
        self._queue: list[tuple[Candle, int | None]] = []
        self._forming: list[tuple[Candle, int]] = []
        self._last_forming: dict[str, float] = {}
        self._held: dict[str, list[tuple[Candle, int | None]]] = {}
        self._held_since: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._sweep_now = asyncio.Event()
        self._sweep_lock = asyncio.Lock()  # one sweep at a time: two would fetch the same gaps twice
        self._tasks: list[asyncio.Task[None]] = []

    # --- life cycle ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Collect until cancelled."""
        symbols = await fetch_symbols(self.rest, fixed=self.settings.symbols, top_n=self.settings.top_n)
        log.info("collecting %d symbols", len(symbols))
        await self.apply_symbols(symbols)
        self._tasks = [
            asyncio.create_task(self._publish_loop(), name="collector-publish"),
            asyncio.create_task(self._sweep_loop(), name="collector-sweep"),
            asyncio.create_task(self._refresh_loop(), name="collector-refresh"),
            asyncio.create_task(self._report_loop(), name="collector-report"),
        ]
        try:
            try:
                await self._sweep()
            except BinanceRestError as exc:
                log.warning("initial backfill failed, retrying on the next sweep: %s", exc)
            self.ready.set()
            await asyncio.gather(*self._tasks)
        finally:
            await self.close()

    async def close(self) -> None:
        """Stop every task and connection."""
        tasks = self._tasks + [s.task for s in self._shards if s.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for shard in self._shards:
            if shard.connection is not None:
                await shard.connection.close()
        self._tasks = []

    # --- symbols ---------------------------------------------------------------------------------

    async def apply_symbols(self, wanted: Sequence[str]) -> None:
        """Follow a new symbol list: subscribe the additions, unsubscribe the removals."""
        added = sorted(set(wanted) - self.symbols)
        removed = sorted(self.symbols - set(wanted))
        # Forget first, so frames still arriving before the unsubscribe is acknowledged are ignored.
        self.symbols.difference_update(removed)
        for symbol in removed:
            self.ledger.forget(symbol)
            self._held.pop(symbol, None)
            self._held_since.pop(symbol, None)
            self._last_forming.pop(symbol, None)
        for shard in self._shards:
            gone = sorted(shard.symbols.intersection(removed))
            if gone:
                shard.symbols.difference_update(gone)
                await self._change_subscription(shard, gone, subscribe=False)
        if added:
            await self._track(added)
            self.symbols.update(added)
            await self._place(added)
        self.stats.symbols_added += len(added)
        self.stats.symbols_removed += len(removed)
        if added or removed:
            log.info("symbols: +%d %s, -%d %s", len(added), added[:10], len(removed), removed[:10])
        if added:
            self._sweep_now.set()

    async def _track(self, symbols: Sequence[str]) -> None:
        first = last_closed_minute(self._clock.now_ms()) - (self.settings.backfill_minutes - 1) * MINUTE_MS
        for symbol in symbols:
            self.ledger.track(symbol, first)
        if self._pool is None:
            return
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT symbol, (extract(epoch FROM open_time) * 1000)::bigint AS t FROM candles_1m "
                "WHERE symbol = ANY($1) AND open_time >= to_timestamp($2 / 1000.0)",
                list(symbols),
                first,
            )
        stored: dict[str, list[int]] = {}
        for row in rows:
            stored.setdefault(row["symbol"], []).append(row["t"])
        for symbol, times in stored.items():
            self.ledger.done(symbol, times)
        log.info("%d stored minutes of %d symbols found in candles_1m", len(rows), len(stored))

    async def _place(self, symbols: Sequence[str]) -> None:
        pending = list(symbols)
        limit = self._tuning.max_streams_per_connection
        for shard in self._shards:
            room = limit - len(shard.symbols)
            if room > 0 and pending:
                take, pending = pending[:room], pending[room:]
                shard.symbols.update(take)
                await self._change_subscription(shard, take, subscribe=True)
        while pending:
            shard = _Shard(len(self._shards))
            take, pending = pending[:limit], pending[limit:]
            shard.symbols.update(take)
            self._shards.append(shard)
            shard.task = asyncio.create_task(self._run_shard(shard), name=f"collector-shard-{shard.index}")

    async def _change_subscription(self, shard: _Shard, symbols: Sequence[str], *, subscribe: bool) -> None:
        shard.changed.set()
        async with shard.lock:
            conn = shard.connection
            if conn is None or not conn.alive:
                return  # the next (re)connect subscribes from shard.symbols
            streams = [kline_stream_name(s) for s in symbols]
            try:
                await (conn.subscribe(streams) if subscribe else conn.unsubscribe(streams))
            except ConnectionLost as exc:
                log.warning("shard %d: subscription change failed (%s); it will reconnect", shard.index, exc)
                await conn.close()

    async def _refresh_loop(self) -> None:
        while True:
            await self._clock.sleep(self.settings.symbols_refresh_seconds)
            try:
                symbols = await fetch_symbols(self.rest, fixed=self.settings.symbols, top_n=self.settings.top_n)
                await self.apply_symbols(symbols)
            except BinanceRestError as exc:
                log.warning("symbol refresh failed, keeping the current list: %s", exc)
            except Exception:  # a loop boundary: the next refresh tries again
                log.exception("symbol refresh failed")

    async def _report_loop(self, every_seconds: float = 60.0) -> None:
        while True:
            await self._clock.sleep(every_seconds)
            s, rest = self.stats, self.rest.stats
            log.info(
                "collector: %d symbols on %d connections; %d closed emitted (%d from REST), %d duplicates dropped, "
                "%d malformed, %d disconnects, %d rotations; REST %d requests, %d throttled, %d banned",
                len(self.symbols), sum(1 for sh in self._shards if sh.connection is not None and sh.connection.alive),
                self._emitter.stats.closed, self._backfiller.filled, s.duplicates, s.malformed, s.disconnects,
                s.rotations, rest.requests, rest.throttled, rest.banned,
            )  # fmt: skip

    async def _seed(self, symbols: Iterable[str]) -> None:
        """Store the closed higher-timeframe bars of the ``symbols`` not seeded yet by this process.

        Called before a symbol's first backfilled minutes are published: the calculator rebuilds a
        symbol's rings from ``bars`` when its first minutes arrive, so bars stored later would never
        reach them, and whether they had would depend on timing (two identical pipelines computed
        different metrics). Tried once per symbol: a failure is logged and its metrics start from
        the minutes alone rather than holding them back.
        """
        todo = sorted(set(symbols) - self._seeded)
        if self._pool is None or not todo:
            return
        self._seeded.update(todo)
        try:
            bars = await seed_bars(self.rest, todo, self._clock.now_ms())
        except BinanceRestError as exc:
            log.warning("seeding bars of %d symbols failed: %s", len(todo), exc)
            return
        async with self._pool.acquire() as conn:
            await upsert_bars(conn, bars)

    # --- connections -----------------------------------------------------------------------------

    def _connection(self, shard: _Shard, generation: int) -> KlineConnection:
        return KlineConnection(
            self._session,
            self.settings.binance_ws_url,
            self._clock,
            on_kline=self._on_kline,
            on_malformed=self._on_malformed,
            stale_seconds=self.settings.stale_connection_seconds,
            messages_per_second=self._tuning.messages_per_second,
            name=f"shard-{shard.index}.{generation}",
        )

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self._tuning.backoff_cap_seconds, self._tuning.backoff_base_seconds * 2.0**attempt)
        return ceiling * self._rng.uniform(0.5, 1.0)  # "equal jitter": never zero, never in lockstep

    async def _open(self, shard: _Shard, generation: int) -> KlineConnection:
        conn = self._connection(shard, generation)
        try:
            await conn.open(shard.streams())
        except (ConnectionLost, ValueError):
            await conn.close()
            raise
        self.stats.connections_opened += 1
        self._sweep_now.set()  # a (re)connect may have missed minutes
        return conn

    async def _run_shard(self, shard: _Shard) -> None:
        attempt = 0
        generation = 0
        lifetime = self.settings.connection_lifetime_seconds
        while True:
            if not shard.symbols:
                if shard.connection is not None:
                    await shard.connection.close()  # nothing left to listen to
                    shard.connection = None
                shard.changed.clear()
                await shard.changed.wait()
                continue
            conn = shard.connection
            if conn is None or not conn.alive:
                generation += 1
                try:
                    async with shard.lock:
                        shard.connection = await self._open(shard, generation)
                except ConnectionLost as exc:
                    shard.connection = None
                    delay = self._backoff(attempt)
                    attempt += 1
                    log.warning("shard %d: %s; retry in %.2fs", shard.index, exc, delay)
                    await self._clock.sleep(delay)
                    continue
                continue
            opened = conn.opened_at if conn.opened_at is not None else self._clock.monotonic()
            try:
                await conn.wait_closed(at_most=max(0.0, opened + lifetime - self._clock.monotonic()))
            except ConnectionLost as exc:
                self.stats.disconnects += 1
                attempt = 0 if conn.frames else attempt + 1
                delay = self._backoff(attempt)
                log.warning("shard %d: %s; reconnecting in %.2fs", shard.index, exc, delay)
                await conn.close()
                shard.connection = None
                await self._clock.sleep(delay)
                continue
            # Lifetime reached: open the replacement first, then drop the old one (overlap).
            generation += 1
            try:
                async with shard.lock:
                    replacement = await self._open(shard, generation)
                    shard.connection = replacement
            except ConnectionLost as exc:
                log.warning("shard %d: replacement failed (%s); keeping the old connection", shard.index, exc)
                await self._clock.sleep(self._backoff(0))
                continue
            await conn.close()
            self.stats.rotations += 1
            log.info("shard %d: connection replaced before its lifetime ended", shard.index)

    # --- frames ----------------------------------------------------------------------------------

    def _on_malformed(self, reason: str) -> None:
        self.stats.malformed += 1
        key = reason.split(":", maxsplit=1)[0][:80]
        self.stats.malformed_reasons[key] = self.stats.malformed_reasons.get(key, 0) + 1
        log.warning("malformed frame skipped: %s", reason[:300])

    def _on_kline(self, event: BinanceKlineEvent) -> None:
        k = event.k
        if k.i != "1m" or k.s not in self.symbols:
            return
        if not k.x:
            self._on_forming(event)
            return
        self.stats.closed_frames += 1
        if not self.ledger.claim(k.s, k.t):
            self.stats.duplicates += 1
            return
        try:
            candle = to_candle(k)
        except MalformedFrame as exc:
            self.ledger.release(k.s, [k.t])
            self._on_malformed(exc.reason)
            return
        if k.s not in self._held_since and self.ledger.missing(k.s, k.t - MINUTE_MS):
            # An earlier minute never came (a lost closed message, a reconnect): fill it first.
            self._held_since[k.s] = self._clock.monotonic()
            self._sweep_now.set()
        if k.s in self._held_since:
            self._held.setdefault(k.s, []).append((candle, event.E))
        else:
            self._queue.append((candle, event.E))
            self._wake.set()

    def _on_forming(self, event: BinanceKlineEvent) -> None:
        if not self.settings.emit_forming:
            return
        now = self._clock.monotonic()
        if now - self._last_forming.get(event.k.s, -1e18) < self.settings.forming_throttle_seconds:
            return
        try:
            candle = to_candle(event.k)
        except MalformedFrame as exc:
            self._on_malformed(exc.reason)
            return
        self._last_forming[event.k.s] = now
        self._forming.append((candle, event.E))
        self._wake.set()

    # --- publishing ------------------------------------------------------------------------------

    def _release_if_filled(self, symbol: str) -> None:
        """Publish ``symbol``'s held candles that no missing minute precedes any more."""
        held = sorted(self._held.get(symbol, []), key=lambda item: item[0].open_time)
        if not held:
            self._release(symbol)
            return
        hole = next(iter(self.ledger.missing(symbol, held[-1][0].open_time)), None)
        if hole is None:
            self._release(symbol)
            return
        ready = [item for item in held if item[0].open_time < hole]
        if ready:  # up to the first hole; the rest waits for the next sweep
            self._held[symbol] = [item for item in held if item[0].open_time > hole]
            self._queue.extend(ready)
            self._wake.set()

    def _release_filled(self) -> None:
        for symbol in list(self._held_since):
            self._release_if_filled(symbol)

    def _release(self, symbol: str) -> None:
        self._held_since.pop(symbol, None)
        held = self._held.pop(symbol, [])
        if held:
            self._queue.extend(sorted(held, key=lambda item: item[0].open_time))
            self._wake.set()

    async def _publish_loop(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that
            # lands as the event is set, and this loop would then never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._wake.wait()
            self._wake.clear()
            now = self._clock.monotonic()
            for symbol, since in list(self._held_since.items()):
                if now - since > self._tuning.hold_seconds:
                    log.warning("%s: gap fill is slow; emitting newer minutes without waiting", symbol)
                    self._release(symbol)
            batch, self._queue = self._queue, []
            forming, self._forming = self._forming, []
            if batch:
                await self._publish_closed(batch)
            if forming:
                try:
                    await self._emitter.emit_forming(forming)
                except Exception as exc:  # a loop boundary: a forming update is superseded within a second
                    log.warning("publishing %d forming updates failed: %s", len(forming), exc)

    async def _publish_closed(self, batch: list[tuple[Candle, int | None]]) -> None:
        attempt = 0
        while True:
            try:
                await self._emitter.emit_closed([c for c, _ in batch], [t for _, t in batch])
                break
            except Exception as exc:  # a loop boundary: JetStream unreachable; keep the candles, retry
                self.stats.publish_failures += 1
                delay = self._backoff(attempt)
                attempt += 1
                log.warning("publishing %d candles failed (%s); retry in %.1fs", len(batch), exc, delay)
                await self._clock.sleep(delay)
        for candle, _ in batch:
            self.ledger.done(candle.symbol, [candle.open_time])

    async def _publish_backfill(self, candles: Sequence[Candle]) -> None:
        await self._seed({c.symbol for c in candles})
        # Held stream candles older than the newest filled minute go out in the same batch, in
        # time order: a REST span can straddle a minute the stream delivered while it was held.
        items: list[tuple[Candle, int | None]] = [(c, None) for c in candles]
        taken: dict[str, list[tuple[Candle, int | None]]] = {}
        for symbol in {c.symbol for c in candles}:
            newest = max(c.open_time for c in candles if c.symbol == symbol)
            held = self._held.get(symbol, [])
            taken[symbol] = [item for item in held if item[0].open_time < newest]
            if taken[symbol]:
                self._held[symbol] = [item for item in held if item[0].open_time > newest]
                items += taken[symbol]
        items.sort(key=lambda item: (item[0].symbol, item[0].open_time))
        try:
            await self._emitter.emit_closed([c for c, _ in items], [t for _, t in items])
        except BaseException:
            for symbol, back in taken.items():
                self._held[symbol] = back + self._held.get(symbol, [])
            raise
        for candle, _ in items:
            self.ledger.done(candle.symbol, [candle.open_time])

    # --- gaps ------------------------------------------------------------------------------------

    async def _sweep_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._tuning.sweep_seconds):
                    await self._sweep_now.wait()
            try:
                await self._sweep()
            except BinanceRestError as exc:
                log.warning("backfill failed, retrying on the next sweep: %s", exc)
            except Exception:  # a loop boundary (JetStream or PostgreSQL away): the next sweep retries
                log.exception("backfill failed, retrying on the next sweep")

    async def _sweep(self) -> int:
        """Fill every minute that closed more than the grace period ago and was not emitted."""
        async with self._sweep_lock:
            return await self._sweep_once()

    async def _sweep_once(self) -> int:
        self._sweep_now.clear()
        up_to = last_closed_minute(self._clock.now_ms() - self._tuning.grace_ms)
        gaps = [s for s in sorted(self.symbols) if self.ledger.missing(s, up_to)]
        if not gaps:
            self._release_filled()
            return 0
        now = self._clock.monotonic()
        for symbol in gaps:
            self._held_since.setdefault(symbol, now)
        try:
            return await self._backfiller.fill(gaps, up_to, on_symbol_done=self._release_if_filled)
        finally:
            self._release_filled()
