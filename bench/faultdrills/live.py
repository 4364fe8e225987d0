"""The live-mode drill: two pipelines side by side on the local Binance server, one losing its connection.

A live collector reads the wall clock, so its minutes cannot be replayed later: the clean run is a
twin pipeline (its own NATS, Redis and PostgreSQL, always embedded) fed by a second local Binance
server over the same recording and the same minutes. Both servers step their market at every real
minute boundary; the drill's server drops every connection every ``DROP_EVERY_SECONDS``. Both
collectors start inside the same minute (so they backfill the same span) and stop together, after
the same closed minute; then each pipeline drains and the drill's outputs are compared with the
twin's.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time

import aiohttp
from nats.aio.client import Client
from nats.errors import Error as NatsError

from collector.clock import SimulatedClock
from collector.replay.market import ReplayMarket
from marketdata.klines import read_folder
from screener.config import load_settings
from screener.events.models import MINUTE_MS
from tests.fakes.binance_server import FakeBinance

from . import observe
from .catalog import Drill
from .outcome import collect
from .processes import Pipeline, Proc
from .runner import POLL_SECONDS, ZERO_LAG_POLLS, RunResult, SuiteConfig, add_functions, base_env, prepare
from .servers import Servers

DROP_EVERY_SECONDS = 30.0


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class _Side:
    """One of the two pipelines: its servers, local Binance, processes and NATS connection."""

    def __init__(self, name: str, servers: Servers, fake: FakeBinance) -> None:
        self.name = name
        self.servers = servers
        self.fake = fake
        self.pipeline: Pipeline | None = None
        self.collector: Proc | None = None
        self.dsn = ""
        self.nc: Client | None = None
        self.lag: observe.Lag | None = None
        self.exits: list[str] = []  # processes that exited on their own, with their status

    async def setup(self, config: SuiteConfig, drill: Drill, symbols: list[str], run_dir_name: str) -> None:
        self.dsn = await self.servers.reset()
        env = base_env(self.servers, self.dsn, config, drill)
        env.update(
            {
                "SCREENER_SOURCE": "binance",
                "SCREENER_BINANCE_REST_URL": self.fake.rest_url,
                "SCREENER_BINANCE_WS_URL": self.fake.ws_url,
                "SCREENER_SYMBOLS": ",".join(symbols),
            }
        )
        settings = load_settings({k: v for k, v in env.items() if k.startswith("SCREENER_")})
        await prepare(settings, self.servers, self.dsn)
        self.nc = await observe.connect(self.servers.nats_url)
        await observe.capture_advisories(self.nc.jetstream())
        log_dir = config.work_dir / run_dir_name / self.name
        log_dir.mkdir(parents=True, exist_ok=True)
        self.pipeline = Pipeline(env, log_dir)
        add_functions(self.pipeline)
        self.collector = self.pipeline.add_collector([])

    def supervise(self, *, collector_too: bool = True) -> None:
        """Restart what exited on its own, as a supervisor would (the collector only until it is stopped)."""
        assert self.pipeline is not None
        for proc in self.pipeline.procs:
            if proc.running or proc.popen is None or (proc is self.collector and not collector_too):
                continue
            code = proc.reap()
            self.exits.append(f"{proc.name} {code}")
            proc.start()


class LiveDrillRun:
    """Run the live drill once."""

    def __init__(self, servers: Servers, config: SuiteConfig, drill: Drill, number: int) -> None:
        self.servers = servers
        self.config = config
        self.drill = drill
        self.result = RunResult(drill, number)
        self.drops = 0

    async def run(self) -> RunResult:
        """Run both pipelines, drop the drill's connections, drain, and return the outcome and the twin's."""
        started = time.monotonic()
        name = f"{self.drill.name}-{self.result.number}"
        self.result.log_dir = self.config.work_dir / name
        twin_servers = Servers(self.config.work_dir / name / "twin-servers")
        await asyncio.to_thread(twin_servers.start)
        market = ReplayMarket(read_folder(self.config.recording))
        fakes = [FakeBinance(market, SimulatedClock(_now_ms())) for _ in range(2)]
        sides = [_Side("drops", self.servers, fakes[0]), _Side("clean", twin_servers, fakes[1])]
        tasks: list[asyncio.Task[None]] = []
        try:
            for fake in fakes:
                await fake.start()
            for side in sides:
                await side.setup(self.config, self.drill, market.symbols, name)
            # Both collectors must start inside one minute so that they backfill the same span.
            while not 2 <= (_now_ms() % MINUTE_MS) / 1000 <= 30:
                await asyncio.sleep(0.2)
            for side in sides:
                assert side.pipeline is not None
                for proc in side.pipeline.procs:
                    proc.start()
            tasks = [asyncio.create_task(self._tick(fakes)), asyncio.create_task(self._drop(fakes[0]))]
            stop_at = (_now_ms() // MINUTE_MS + self.config.live_minutes + 1) * MINUTE_MS + 20_000
            while _now_ms() < stop_at:
                await asyncio.sleep(POLL_SECONDS * 4)
                for side in sides:
                    side.supervise()
                    side.lag = await observe.consumer_lag(side.nc.jetstream()) if side.nc else None
                print(
                    f"  [{self.drill.name} #{self.result.number}] {time.monotonic() - started:6.1f}s  "
                    f"drops {self.drops}  lag drops: {sides[0].lag.short() if sides[0].lag else '?'}  "
                    f"clean: {sides[1].lag.short() if sides[1].lag else '?'}",
                    flush=True,
                )
            for task in tasks:
                task.cancel()
            for side in sides:
                assert side.collector is not None
                side.collector.signal(signal.SIGTERM)
            stopped = time.monotonic()
            drained = await self._drain(sides)
            self.result.drained = drained[0] is not None and drained[1] is not None
            self.result.drain_seconds = None if drained[0] is None else drained[0] - stopped
            self.result.final_lag = sides[0].lag.short() if sides[0].lag else "?"
            assert sides[0].nc is not None
            assert sides[1].nc is not None
            self.result.outcome = await collect(sides[0].nc.jetstream(), sides[0].dsn)
            self.result.own_baseline = await collect(sides[1].nc.jetstream(), sides[1].dsn)
            advisories = await observe.advisory_counts(sides[0].nc.jetstream())
            self.result.dropped, self.result.naks = advisories["MAX_DELIVERIES"], advisories["MSG_NAKED"]
            self.result.notes.append(f"{self.drops} connection drops; the clean run is a twin pipeline")
            for side in sides:
                if side.exits:
                    self.result.notes.append(f"{side.name}: exited on their own: {', '.join(side.exits)}")
            if drained[1] is None:
                self.result.notes.append("the twin pipeline did not drain")
        except Exception as exc:  # reported as the run's error, the suite goes on
            self.result.error = f"{type(exc).__name__}: {exc}"
        finally:
            for task in tasks:
                task.cancel()
            for side in sides:
                if side.pipeline is not None:
                    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
                        for proc in side.pipeline.procs:
                            await proc.read_counters(session)
                    if side is sides[0]:
                        self.result.retried = sum(p.counter("retried") for p in side.pipeline.procs)
                    await asyncio.to_thread(side.pipeline.stop_all)
                if side.nc is not None:
                    with contextlib.suppress(NatsError, TimeoutError):
                        await side.nc.close()
            for fake in fakes:
                await fake.stop()
            await twin_servers.drop_database()
            await asyncio.to_thread(twin_servers.stop)
        self.result.elapsed = time.monotonic() - started
        return self.result

    async def _tick(self, fakes: list[FakeBinance]) -> None:
        """Step both markets at every real minute boundary (50 ms after it, as the exchange closes)."""
        while True:
            await asyncio.sleep((MINUTE_MS - _now_ms() % MINUTE_MS + 50) / 1000)
            for fake in fakes:
                await fake.advance(1)

    async def _drop(self, fake: FakeBinance) -> None:
        while True:
            await asyncio.sleep(DROP_EVERY_SECONDS)
            self.drops += await fake.disconnect()

    async def _drain(self, sides: list[_Side]) -> list[float | None]:
        """Wait until each side's lag is zero for a while; return when each drained (None: not in time)."""
        done: list[float | None] = [None, None]
        zero = [0, 0]
        deadline = time.monotonic() + self.config.drain_bound
        while time.monotonic() < deadline and None in done:
            await asyncio.sleep(POLL_SECONDS)
            for i, side in enumerate(sides):
                side.supervise(collector_too=False)
                assert side.nc is not None
                side.lag = await observe.consumer_lag(side.nc.jetstream())
                collector_done = side.collector is not None and not side.collector.running
                if side.lag is not None and side.lag.total == 0 and collector_done:
                    zero[i] += 1
                    if zero[i] >= ZERO_LAG_POLLS and done[i] is None:
                        done[i] = time.monotonic()
                else:
                    zero[i] = 0
        return done
