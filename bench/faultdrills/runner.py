"""Run one drill: a clean slate, the pipeline's processes, the faults on schedule, drain, read the outcome."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
import redis.asyncio as aioredis
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from collector.replay.market import ReplayMarket
from collector.replay.runner import load_market
from collector.replay.warmup import warmup_end
from screener.config import Settings, load_settings
from screener.events.models import MINUTE_MS
from screener.stack import Stack

from . import observe
from .catalog import Action, Drill
from .outcome import Outcome, collect
from .poison import PoisonPublisher
from .processes import Pipeline, Proc, replay_time_supported
from .servers import Servers

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
ZERO_LAG_POLLS = 4  # lag 0 this many polls in a row (2 s) counts as drained
SUPERVISOR_RESTART_SECONDS = 1.0  # as `screener up` restarts a child that exits on its own


@dataclass(frozen=True)
class SuiteConfig:
    """What every run of a suite shares."""

    recording: Path
    minutes: int
    warmup: int
    speed: str
    drain_bound: float
    run_timeout: float
    work_dir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    live_minutes: int = 8
    progress_every: float = 5.0


@dataclass
class RunResult:
    """What one run of a drill did and produced."""

    drill: Drill
    number: int
    outcome: Outcome | None = None
    elapsed: float = 0.0
    drained: bool = False
    drain_seconds: float | None = None
    final_lag: str = ""
    dropped: Counter[str] = field(default_factory=Counter)
    naks: Counter[str] = field(default_factory=Counter)
    retried: int = 0
    poisoned: int = 0
    poison_kinds: list[str] = field(default_factory=list)  # the kind of poisoned event number n
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    # A drill that cannot be compared with the suite's reference (live mode) brings its own clean run.
    own_baseline: Outcome | None = None
    log_dir: Path | None = None


class Replay:
    """The recording's streamed span: which minutes, how many candles."""

    def __init__(self, config: SuiteConfig) -> None:
        settings = load_settings({}, replay_data=config.recording, replay_warmup_minutes=config.warmup)
        self.market: ReplayMarket = load_market(settings)
        self.first_ms = warmup_end(self.market, config.warmup)
        available = (self.market.last_ms - self.first_ms) // MINUTE_MS + 1
        self.minutes = min(config.minutes, available)
        self.end_ms = self.first_ms + self.minutes * MINUTE_MS
        self.candles = sum(
            len(self.market.track_arrays(track, self.first_ms, self.end_ms)[0]) for track in self.market.tracks
        )


def base_env(servers: Servers, dsn: str, config: SuiteConfig, drill: Drill) -> dict[str, str]:
    """Return the environment of every process of a run (SCREENER_* from the harness only)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCREENER_")}
    env.update(
        {
            "SCREENER_NATS_URL": servers.nats_url,
            "SCREENER_REDIS_URL": servers.redis_url,
            "SCREENER_POSTGRES_DSN": dsn,
            "SCREENER_REPLAY_DATA": str(config.recording.resolve()),
            "SCREENER_REPLAY_SPEED": drill.speed or config.speed,
            "SCREENER_REPLAY_LOOP": "false",
            "SCREENER_REPLAY_WARMUP_MINUTES": str(config.warmup),
            "SCREENER_DATA_DIR": str(config.work_dir / "data"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    if servers.nats_monitor_url:
        env["SCREENER_NATS_MONITOR_URL"] = servers.nats_monitor_url
    if replay_time_supported():
        # Keep recorded times, so runs at any speed and moment are comparable by id.
        env["SCREENER_REPLAY_TIME"] = "recorded"
    env.update(drill.env)
    env.update(config.extra_env)
    return env


async def prepare(settings: Settings, servers: Servers, dsn: str) -> None:
    """Migrate, seed the rules and create streams and consumers, exactly as `screener up` does."""
    stack = Stack(settings, argparse.Namespace(data=None, speed=None, port=None, source=None))
    stack.urls = {
        "nats": servers.nats_url,
        "nats_monitor": servers.nats_monitor_url,
        "redis": servers.redis_url,
        "postgres": dsn,
    }
    await stack.prepare()


def add_functions(pipeline: Pipeline, calculators: int = 1, rules: int = 1) -> None:
    """Plan the function processes: one recorder and notifier, ``calculators`` and ``rules`` replicas."""
    for function, replicas in (("recorder", 1), ("calculator", calculators), ("rules", rules), ("notifier", 1)):
        for index in range(replicas):
            pipeline.add_function(function, index)


class DrillRun:
    """One run of one drill."""

    def __init__(self, servers: Servers, config: SuiteConfig, replay: Replay, drill: Drill, number: int) -> None:
        self.servers = servers
        self.config = config
        self.replay = replay
        self.drill = drill
        self.result = RunResult(drill, number)
        self.published = 0
        self.collector_done_at: float | None = None
        self.schedule_done_at: float | None = None
        self.lag: observe.Lag | None = None
        self.dsn = ""
        self.started = time.monotonic()
        self._restart_at: dict[int, float] = {}  # id(proc) -> when to start it again
        self._held: set[int] = set()  # processes scaled in: never restarted
        self._own_exits: dict[str, list[int | None]] = {}  # exits the drill did not cause
        self._poison = PoisonPublisher(replay.market, replay.first_ms, replay.end_ms, drill.poisoned)

    @property
    def fraction(self) -> float:
        """Return the share of the run's candles on the stream."""
        return self.published / max(1, self.replay.candles)

    # --- the run ----------------------------------------------------------------------------------
    async def run(self) -> RunResult:
        """Run the drill from a clean state to its outcome."""
        run_dir = self.config.work_dir / f"{self.drill.name}-{self.result.number}"
        run_dir.mkdir(parents=True, exist_ok=True)
        self.result.log_dir = run_dir
        self.dsn = await self.servers.reset()
        env = base_env(self.servers, self.dsn, self.config, self.drill)
        settings = load_settings({k: v for k, v in env.items() if k.startswith("SCREENER_")})
        await prepare(settings, self.servers, self.dsn)
        nc = await observe.connect(self.servers.nats_url)
        js = nc.jetstream()
        await observe.capture_advisories(js)
        pipeline = Pipeline(env, run_dir)
        add_functions(pipeline, self.drill.calculators, self.drill.rules)
        collector = pipeline.add_collector(["--no-loop", "--minutes", str(self.replay.minutes)])
        self.started = time.monotonic()
        try:
            for proc in pipeline.procs:
                proc.start()
            await self._until_drained(pipeline, collector, js, nc)
            self.result.outcome = await collect(js, self.dsn)
            advisories = await observe.advisory_counts(js)
            self.result.dropped = advisories["MAX_DELIVERIES"]
            self.result.naks = advisories["MSG_NAKED"]
        except Exception as exc:  # one broken run must not end the suite: it is reported as an error
            log.exception("drill %s run %d failed", self.drill.name, self.result.number)
            self.result.error = f"{type(exc).__name__}: {exc}"
        finally:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
                for proc in pipeline.procs:
                    await proc.read_counters(session)
            await asyncio.to_thread(pipeline.stop_all)
            with contextlib.suppress(NatsError, TimeoutError):
                await nc.close()
        self.result.retried = sum(p.counter("retried") for p in pipeline.procs)
        self.result.poisoned = len(self._poison.published)
        self.result.poison_kinds = [event.kind for event in self._poison.published]
        self.result.elapsed = time.monotonic() - self.started
        for name, codes in sorted(self._own_exits.items()):
            self.result.notes.append(f"{name} exited on its own {len(codes)}x (status {', '.join(map(str, codes))})")
        return self.result

    # --- supervision, schedule and drain ----------------------------------------------------------
    async def _until_drained(self, pipeline: Pipeline, collector: Proc, js: JetStreamContext, nc: Client) -> None:
        schedule = asyncio.create_task(self._schedule(pipeline, js))
        zero = 0
        first_zero: float | None = None
        last_print = 0.0
        settle_from: float | None = None
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as session:
            try:
                while True:
                    await asyncio.sleep(POLL_SECONDS)
                    now = time.monotonic()
                    await self._supervise(pipeline, collector, js)
                    for proc in pipeline.procs:
                        await proc.read_counters(session)
                    self.lag = await observe.consumer_lag(js)
                    candles = await observe.stream_messages(js, "CANDLES")
                    if candles is not None:
                        self.published = candles - len(self._poison.published)
                    if now - last_print >= self.config.progress_every:
                        last_print = now
                        self._print_progress(now)
                    if schedule.done() and self.schedule_done_at is None:
                        schedule.result()  # a failed fault is the run's error
                        self.schedule_done_at = now
                    if self.schedule_done_at is None or self.collector_done_at is None:
                        if now - self.started > self.config.run_timeout:
                            self.result.notes.append(f"gave up after {self.config.run_timeout:.0f} s")
                            break
                        continue
                    settle_from = settle_from or max(self.schedule_done_at, self.collector_done_at)
                    running = all(p.running or id(p) in self._held or p is collector for p in pipeline.procs)
                    if self.lag is not None and self.lag.total == 0 and running:
                        zero += 1
                        first_zero = first_zero or now
                        if zero >= ZERO_LAG_POLLS:
                            self.result.drained = True
                            self.result.drain_seconds = max(0.0, first_zero - settle_from)
                            break
                    else:
                        zero, first_zero = 0, None
                    if now - settle_from > self.config.drain_bound:
                        break
            finally:
                if not schedule.done():
                    schedule.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await schedule
        self.result.final_lag = self.lag.short() if self.lag is not None else "?"
        self._print_progress(time.monotonic(), final=True)

    def _print_progress(self, now: float, *, final: bool = False) -> None:
        lag = self.lag.short() if self.lag is not None else "? (NATS not answering)"
        state = "drained" if self.result.drained else ("done" if final else "running")
        print(
            f"  [{self.drill.name} #{self.result.number}] {now - self.started:6.1f}s  "
            f"published {self.published:,}/{self.replay.candles:,} ({100 * self.fraction:.0f}%)  lag {lag}  {state}",
            flush=True,
        )

    async def _supervise(self, pipeline: Pipeline, collector: Proc, js: JetStreamContext) -> None:
        """Restart what exited, as a supervisor would; note when the collector has finished its minutes."""
        now = time.monotonic()
        for proc in pipeline.procs:
            if proc.running or id(proc) in self._held:
                continue
            code = proc.reap()
            key = id(proc)
            if proc is collector and self.collector_done_at is not None:
                continue  # it has streamed every minute
            if proc is collector and code == 0 and key not in self._restart_at:
                self.collector_done_at = now
                continue
            if key not in self._restart_at:  # exited on its own: restart like `screener up`
                self._own_exits.setdefault(proc.name, []).append(code)
                self._restart_at[key] = now + SUPERVISOR_RESTART_SECONDS
            if now < self._restart_at[key]:
                continue
            del self._restart_at[key]
            if proc is collector:
                remaining = await self._remaining_minutes(js)
                if remaining <= 0:
                    self.collector_done_at = now
                    continue
                argv = [*proc.argv[: proc.argv.index("--minutes")], "--minutes", str(remaining)]
                proc.start(argv)
            else:
                proc.start()

    async def _remaining_minutes(self, js: JetStreamContext) -> int:
        """Return how many minutes a restarted collector still has to stream.

        It resumes after the newest candle the recorder stored, so the recorder is let catch up first
        (up to 60 s): then the stored maximum is what the collector will read.
        """
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            lag = await observe.consumer_lag(js)
            if lag is not None and not any(v for k, v in lag.per_consumer.items() if "recorder" in k):
                break
            await asyncio.sleep(POLL_SECONDS)
        conn = await asyncpg.connect(self.dsn)
        try:
            stored = await conn.fetchval(
                "SELECT (extract(epoch FROM max(open_time)) * 1000)::bigint FROM candles_1m WHERE symbol = ANY($1)",
                self.replay.market.symbols,
            )
        finally:
            await conn.close()
        resume = self.replay.first_ms if stored is None else max(int(stored) + MINUTE_MS, self.replay.first_ms)
        return int((self.replay.end_ms - resume) // MINUTE_MS)

    async def _schedule(self, pipeline: Pipeline, js: JetStreamContext) -> None:
        for action in sorted(self.drill.actions, key=lambda a: a.at):
            while self.fraction < action.at and self.collector_done_at is None:
                await asyncio.sleep(0.1)
            print(f"  [{self.drill.name} #{self.result.number}] {self._describe(action)}", flush=True)
            await self._do(action, pipeline, js)

    def _describe(self, action: Action) -> str:
        at = f"at {100 * self.fraction:.0f}%"
        if action.kind == "kill":
            return f"{at}: {action.signal} {action.role}-{action.index}"
        if action.kind == "poison":
            return f"{at}: publishing {action.count} poisoned events"
        return f"{at}: {action.kind} {action.down_seconds:.0f} s".rstrip(" 0s")

    async def _do(self, action: Action, pipeline: Pipeline, js: JetStreamContext) -> None:
        sig = signal.Signals[action.signal]
        if action.kind == "kill":
            proc = pipeline.of(action.role)[action.index]
            key = id(proc)
            if action.restart_after is None:
                self._held.add(key)
            else:
                self._restart_at[key] = time.monotonic() + action.restart_after
            proc.signal(sig)
        elif action.kind == "poison":
            await self._poison.burst(js, action.count, self.fraction)
        elif action.kind == "redis-flush":
            client = aioredis.from_url(self.servers.redis_url)
            try:
                await client.flushdb()
            finally:
                await client.aclose()
        else:
            server = {"redis-kill": "redis", "postgres-stop": "postgres", "nats-kill": "nats"}[action.kind]
            # PostgreSQL: SIGINT is its fast shutdown (SIGTERM would wait for every client to leave).
            stop_with = signal.SIGINT if server == "postgres" else sig
            await asyncio.to_thread(self.servers.kill, server, stop_with)
            await asyncio.sleep(action.down_seconds)
            await asyncio.to_thread(self.servers.restart, server)
