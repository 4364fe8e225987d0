"""Candle to screen: one minute of N symbols published by the collector -> the last alert on a WebSocket client.

The whole path as production runs it, every function in its own process on embedded NATS, Redis and
PostgreSQL: ``screener run calculator`` (``--calculators`` processes), ``screener run rules``,
``screener gateway``, and real WebSocket clients (raw mode, the web client's) in a process of their
own. This process plays the collector: it publishes each minute's closed candles of every symbol
through ``CandleEmitter`` (what ``screener collector`` uses), after the symbols got a full day of real
state (``bench/calculator_burst.py``'s preparation). The 20 seeded rules rarely fire on that data,
so one more rule (``--rule``, fired every minute it holds) makes each minute raise alerts.

Printed per burst, from the instant the first candle is published: the last metrics event, the rules
consumer caught up (alerts stored and published, inputs acknowledged), and the first and the last
alert received by a client (the figure of the target), with the number of alerts.

    .venv/bin/python bench/candle_to_screen.py                      # 650 symbols, 6 bursts, 1 calculator
    .venv/bin/python bench/candle_to_screen.py --calculators 2
    .venv/bin/python bench/candle_to_screen.py --profile /tmp/prof  # py-spy on every function process
    .venv/bin/python bench/candle_to_screen.py --baseline ../base   # main's code and this tree, alternately
    .venv/bin/python bench/candle_to_screen.py --versus calculators=2   # one and two calculators, alternately
    .venv/bin/python bench/candle_to_screen.py --steady-minutes 20      # then sustained replay, collector to alerts

With ``--baseline`` the function processes and the gateway run the other checkout's code (PYTHONPATH);
this process (the collector side and the clients) keeps this tree's. The machine is shared: compare
the two in the same run, not figures of different runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import re
import resource
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
from nats.aio.msg import Msg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.calculator_burst import prepare, symbol_name  # noqa: E402
from bench.fanout import BenchClient, raise_fd_limit  # noqa: E402
from bench.fresh_pipeline import fresh_pipeline  # noqa: E402
from collector.emitter import CandleEmitter  # noqa: E402
from functions.rules.ruleset import Rule  # noqa: E402
from functions.rules.store import RULE_COLUMNS  # noqa: E402
from screener.config import Settings, load_settings  # noqa: E402
from screener.embedded.servers import free_port, start_nats, start_postgres, start_redis  # noqa: E402
from screener.events.models import MINUTE_MS  # noqa: E402
from screener.names import CONSUMER_RULES, STREAM_METRICS  # noqa: E402
from screener.runtime.publisher import Publisher  # noqa: E402

ID_KEY = b'"id":"'
SERVERS = ("nats-server", "redis-server", "postgres")
LINE_NUMBER = re.compile(r":\d+\)$")


# ----------------------------------------------------------------------------------- client process
async def watch_alerts(url: str, count: int, pipe: multiprocessing.connection.Connection) -> None:
    """Hold ``count`` raw-mode sockets; on "STOP", send back each alert id's last arrival (ns) and count."""
    raise_fd_limit(count + 200)
    loop = asyncio.get_running_loop()
    host_port, _, path = url.removeprefix("ws://").partition("/")
    host, _, port = host_port.partition(":")
    last: dict[bytes, int] = {}
    first: dict[bytes, int] = {}
    seen: Counter[bytes] = Counter()

    def record(buf: bytes, start: int, end: int, now: int) -> None:
        at = buf.find(ID_KEY, start, end)
        if at < 0:
            return
        at += len(ID_KEY)
        alert = buf[at : buf.find(b'"', at, end)]
        seen[alert] += 1
        first.setdefault(alert, now)
        if now > last.get(alert, 0):
            last[alert] = now

    clients = []
    for _ in range(count):
        client = BenchClient(host_port, "/" + path, -1, record, loop.create_future())
        await loop.create_connection(lambda c=client: c, host, int(port))
        clients.append(client)
    await asyncio.gather(*(c.upgraded for c in clients))
    pipe.send("READY")
    await loop.run_in_executor(None, pipe.recv)  # "STOP"
    for c in clients:
        if c.transport is not None:
            c.transport.close()
    pipe.send({k.decode(): (first[k], last[k], seen[k]) for k in last})


def client_process(url: str, count: int, pipe: multiprocessing.connection.Connection) -> None:
    """Entry point of the WebSocket clients' process."""
    import uvloop

    uvloop.run(watch_alerts(url, count, pipe))


# ----------------------------------------------------------------------------------- orchestrator
@dataclass(frozen=True)
class Variant:
    """What one run starts: whose code, which extra settings, how many calculator processes."""

    label: str
    calculators: int
    code: Path | None = None  # None: this tree
    env: dict[str, str] = field(default_factory=dict)


def variants(args: argparse.Namespace) -> list[Variant]:
    """Return the variants to alternate: this tree alone, or a baseline or a change of settings and it."""
    mine = Variant("this tree", args.calculators)
    if args.baseline is not None:
        return [Variant(f"baseline {args.baseline}", args.calculators, code=args.baseline), mine]
    if args.versus:
        calculators, env = args.calculators, {}
        for item in args.versus:
            key, _, value = item.partition("=")
            if key == "calculators":
                calculators = int(value)
            else:
                env[key] = value
        return [mine, Variant(f"this tree with {' '.join(args.versus)}", calculators, env=env)]
    return [mine]


class Stack:
    """The function processes and the gateway, started as ``screener`` starts them."""

    def __init__(self, settings: Settings, variant: Variant) -> None:
        """Run the processes of ``variant`` (its code, its settings, its number of calculators)."""
        self._env = {k: v for k, v in os.environ.items() if not k.startswith("SCREENER_")}
        if variant.code is not None:
            self._env["PYTHONPATH"] = str(variant.code)  # ahead of this tree's editable install
        self._env.update(
            SCREENER_NATS_URL=settings.nats_url,
            SCREENER_REDIS_URL=settings.redis_url,
            SCREENER_POSTGRES_DSN=settings.postgres_dsn or "",
            SCREENER_LOG_LEVEL="WARNING",
            SCREENER_RATE_LIMIT_PER_MINUTE="100000000",
            SCREENER_WS_MAX_CONNECTIONS_PER_CLIENT="100000000",
            SCREENER_MAX_CONNECTIONS_PER_CLIENT="100000000",
        )
        # "calculator.SCREENER_X=1" sets X for that function's processes only; plain keys for all.
        self._only: dict[str, dict[str, str]] = {}
        for key, value in variant.env.items():
            target, dot, name = key.partition(".")
            if dot:
                self._only.setdefault(target, {})[name] = value
            else:
                self._env[key] = value
        self._calculators = variant.calculators
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self._health: dict[str, int] = {}
        self.gateway_port = free_port()
        self._profilers: list[asyncio.subprocess.Process] = []

    async def start(self) -> None:
        """Start every process and wait until each is ready."""
        screener = str(Path(sys.executable).parent / "screener")
        names = [f"calculator-{i + 1}" for i in range(self._calculators)] + ["rules"]
        for name in names:
            port = self._health[name] = free_port()
            function = name.split("-")[0]
            env = {**self._env, **self._only.get(function, {}), "SCREENER_HEALTH_PORT": str(port)}
            self.processes[name] = await asyncio.create_subprocess_exec(screener, "run", function, env=env, cwd=REPO)
        self.processes["gateway"] = await asyncio.create_subprocess_exec(
            screener,
            "gateway",
            "--port",
            str(self.gateway_port),
            env={**self._env, **self._only.get("gateway", {})},
            cwd=REPO,
        )
        urls = {n: f"http://127.0.0.1:{p}/readyz" for n, p in self._health.items()}
        urls["gateway"] = f"http://127.0.0.1:{self.gateway_port}/health/ready"
        deadline = time.monotonic() + 120
        async with aiohttp.ClientSession() as session:
            for name, url in urls.items():
                while True:
                    with contextlib.suppress(aiohttp.ClientError):
                        async with session.get(url) as response:
                            if response.status == 200:
                                break
                    if time.monotonic() > deadline or self.processes[name].returncode is not None:
                        raise RuntimeError(f"{name} did not become ready")
                    await asyncio.sleep(0.1)

    async def counters(self) -> dict[str, dict[str, Any]]:
        """Return each function process's worker counters (its health endpoint's /stats)."""
        found = {}
        async with aiohttp.ClientSession() as session:
            for name, port in self._health.items():
                async with session.get(f"http://127.0.0.1:{port}/stats") as response:
                    found[name] = await response.json()
        return found

    async def profile(self, folder: Path) -> None:
        """Attach py-spy to every process (raw stacks in ``folder``) until ``stop_profiling``."""
        os.makedirs(folder, exist_ok=True)
        py_spy = Path(sys.executable).parent / "py-spy"
        if not py_spy.exists():
            raise SystemExit(f"--profile needs py-spy in {py_spy.parent}: .venv/bin/pip install -e '.[bench]'")
        for name, process in self.processes.items():
            self._profilers.append(
                await asyncio.create_subprocess_exec(
                    str(py_spy),
                    "record",
                    "--pid",
                    str(process.pid),
                    "--rate",
                    "250",
                    "--format",
                    "raw",
                    "--output",
                    str(folder / f"{name}.txt"),
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
            )
        await asyncio.sleep(1.0)  # py-spy attaches

    async def stop_profiling(self) -> None:
        """Stop py-spy (SIGINT: it writes its file)."""
        for profiler in self._profilers:
            profiler.send_signal(signal.SIGINT)
        for profiler in self._profilers:
            await asyncio.wait_for(profiler.wait(), 30)

    async def stop(self) -> None:
        """SIGTERM every process (they drain) and wait."""
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()


def summarise_profile(path: Path, top: int) -> None:
    """Print the functions where a process spent its samples (own time, and with callees)."""
    if not path.exists():
        print(f"  no profile at {path}")
        return
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        samples = int(count)
        frames = [LINE_NUMBER.sub(")", frame) for frame in stack.split(";")]  # per function, not per line
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    total = sum(own.values())
    print(f"  {path.stem}: {total} samples; with callees:")
    for frame, samples in inclusive.most_common(top):
        print(f"    {samples / total:6.1%} {frame}")
    print(f"  {path.stem}, own time:")
    for frame, samples in own.most_common(top // 2):
        print(f"    {samples / total:6.1%} {frame}")


def tree_cpu_seconds(pid: int) -> float:
    """Return the CPU time (user + system) of ``pid`` and its live descendants (PostgreSQL's backends)."""
    ticks = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime (proc(5), fields 14 and 15)
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue  # gone meanwhile
    return ticks / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds each process of the run spends between ``start`` and ``stop``."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._started: dict[str, float] = {}
        self.spent: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        now = {name: tree_cpu_seconds(pid) for name, pid in self.pids.items()}
        usage = resource.getrusage(resource.RUSAGE_SELF)
        now["collector side (this process)"] = usage.ru_utime + usage.ru_stime
        return now

    def start(self) -> None:
        """Take the starting figures."""
        self._started = self._now()

    def stop(self) -> None:
        """Take the CPU spent since ``start``."""
        self.spent = {name: value - self._started.get(name, 0.0) for name, value in self._now().items()}


async def metrics_stored(js: Any, at_least: int) -> int:
    """Return when (ns) the METRICS stream stored its ``at_least``-th event: the server's own timestamp.

    Read from the stream, not by subscribing: a subscription would add a consumer of every snapshot
    (650 a minute) to the machine the pipeline runs on.
    """
    while True:
        state = (await js.stream_info(STREAM_METRICS.name)).state
        if state.messages >= at_least:
            stored = (await js.get_msg(STREAM_METRICS.name, seq=state.last_seq)).time
            return int(stored.timestamp() * 1e9) if isinstance(stored, datetime) else time.time_ns()
        await asyncio.sleep(0.01)


async def rules_caught_up(js: Any, delivered_at_least: int) -> int:
    """Return the time (ns) at which the rules consumer has every expected event acknowledged (10 ms steps)."""
    while True:
        info = await js.consumer_info(CONSUMER_RULES.stream.name, CONSUMER_RULES.durable)
        if info.delivered.consumer_seq >= delivered_at_least and info.num_pending == 0 and info.num_ack_pending == 0:
            return time.time_ns()
        # Not tighter: each poll is a JetStream API request, CPU the pipeline's processes need.
        await asyncio.sleep(0.01)


async def add_bench_rule(conn: asyncpg.Connection, expression: str) -> None:
    """Add the rule that makes every minute raise alerts (fired each minute it holds)."""
    rule = Rule(
        rule_type="bench_minute",
        name="Bench minute",
        expression=expression,
        frequency="once_per_bar_close",
        cooldown_seconds=0,
    )
    columns = ", ".join(RULE_COLUMNS)
    placeholders = ", ".join(f"${i}" for i in range(1, len(RULE_COLUMNS) + 1))
    await conn.execute(
        f"INSERT INTO alert_rules ({columns}) VALUES ({placeholders}) ON CONFLICT (rule_type) DO NOTHING",
        *[getattr(rule, c) for c in RULE_COLUMNS],
    )


async def measure(
    args: argparse.Namespace, settings: Settings, servers: dict[str, int], variant: Variant
) -> list[float]:
    """Run the bursts on ``variant``; print them; return the warm figures (ms)."""
    redis, nc, js = await fresh_pipeline(settings, lambda conn: add_bench_rule(conn, args.rule))
    count = args.symbols
    future, last_history = await prepare(redis, count, args.bursts + args.steady_minutes + 1)
    minute_of_alert: dict[str, int] = {}

    async def on_alert(msg: Msg) -> None:
        data = orjson.loads(msg.data)
        minute_of_alert[data["id"]] = data["minute"]

    await nc.subscribe("alerts.>", cb=on_alert)
    stack = Stack(settings, variant)
    await stack.start()
    context = multiprocessing.get_context("spawn")
    mine, theirs = context.Pipe()
    watcher = context.Process(
        target=client_process,
        args=(f"ws://127.0.0.1:{stack.gateway_port}/ws/alerts", args.clients, theirs),
        daemon=True,
    )
    watcher.start()
    loop = asyncio.get_running_loop()
    if await loop.run_in_executor(None, lambda: mine.recv() if mine.poll(120) else None) != "READY":
        raise RuntimeError("the WebSocket clients did not connect")
    print(
        f"{variant.label}: {count} symbols, {variant.calculators} calculator process(es), 1 rules, 1 gateway, "
        f"{args.clients} WebSocket clients in another process; rule {args.rule!r}; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    emitter = CandleEmitter(Publisher(js))
    bursts: list[dict[str, Any]] = []
    meter = CpuMeter({})
    try:
        for k in range(args.bursts):
            minute = last_history + (k + 1) * MINUTE_MS
            candles = [future[i % len(future)][k].model_copy(update={"symbol": symbol_name(i)}) for i in range(count)]
            start = time.time_ns()
            await emitter.emit_closed(candles)
            published = time.time_ns()
            metrics_at = await asyncio.wait_for(metrics_stored(js, (k + 1) * count), 120)
            rules_at = await asyncio.wait_for(rules_caught_up(js, (k + 1) * count), 120)
            bursts.append(
                {"minute": minute, "start": start, "published": published, "metrics": metrics_at, "rules": rules_at}
            )
            await asyncio.sleep(args.pause)  # the last alerts reach the clients; then the next minute
            if k == 0:
                pids = {name: p.pid for name, p in stack.processes.items()}
                meter = CpuMeter({**pids, **servers, "WebSocket clients": watcher.pid or 0})
                meter.start()  # the warm bursts only
                if args.profile:
                    await stack.profile(args.profile)
        meter.stop()
        warm_wall = (time.time_ns() - bursts[1]["start"]) / 1e9 if len(bursts) > 1 else float("nan")
        if args.steady_minutes:
            before = await stack.counters()
            steady = CpuMeter(meter.pids)
            steady.start()
            began = time.perf_counter()
            # As `--speed max` replays: minute after minute, each published (and acknowledged) at once.
            for k in range(args.bursts, args.bursts + args.steady_minutes):
                await emitter.emit_closed(
                    [future[i % len(future)][k].model_copy(update={"symbol": symbol_name(i)}) for i in range(count)]
                )
            collector_done = time.perf_counter() - began
            await asyncio.wait_for(rules_caught_up(js, (args.bursts + args.steady_minutes) * count), 600)
            elapsed = time.perf_counter() - began
            steady.stop()
            candles = args.steady_minutes * count
            print(
                f"steady: {args.steady_minutes} minutes x {count} symbols = {candles} candles, collector done in "
                f"{collector_done:.2f} s, alerts persisted (rules caught up) in {elapsed:.2f} s: "
                f"{candles / elapsed:,.0f} candles/s end to end; CPU (s): "
                + ", ".join(f"{n} {v:.2f}" for n, v in sorted(steady.spent.items(), key=lambda i: -i[1]))
            )
            after = await stack.counters()
            keys = ("batches", "processed", "emitted", "waited", "retried")
            for name, stats in after.items():
                print(f"  {name}: " + ", ".join(f"{k} {stats[k] - before[name].get(k, 0)}" for k in keys))
    finally:
        if args.profile:
            await stack.stop_profiling()
        mine.send("STOP")
        received = await loop.run_in_executor(None, lambda: mine.recv() if mine.poll(60) else {})
        watcher.join(10)
        await stack.stop()
        await redis.aclose()
        await nc.drain()
    screens = report(bursts, received, minute_of_alert)
    warm = max(1, len(bursts) - 1)
    total = sum(meter.spent.values())
    print(
        f"CPU per warm burst (ms; {warm} bursts, {1e3 * warm_wall / warm:.0f} ms of wall time each with the pause; "
        f"{os.cpu_count()} cores): total {1e3 * total / warm:.0f}: "
        + ", ".join(
            f"{name} {1e3 * spent / warm:.0f}" for name, spent in sorted(meter.spent.items(), key=lambda i: -i[1])
        )
    )
    if args.profile:
        print(f"where the time goes (py-spy, share of samples with callees; raw stacks in {args.profile}):")
        for name in stack.processes:
            summarise_profile(args.profile / f"{name}.txt", args.top)
    return screens


def report(
    bursts: list[dict[str, Any]], received: dict[str, tuple[int, int, int]], minute_of: dict[str, int]
) -> list[float]:
    """Print each burst's timeline and the summary of the warm bursts; return their figures (ms)."""
    screens = []
    for k, burst in enumerate(bursts):
        ids = [a for a, m in minute_of.items() if m == burst["minute"]]
        arrived = [received[a] for a in ids if a in received]

        def ms(at: float, start: int = burst["start"]) -> float:
            return (at - start) / 1e6

        line = (
            f"burst {k + 1}: published {ms(burst['published']):6.1f} ms, last metrics {ms(burst['metrics']):6.1f} ms, "
            f"rules done {ms(burst['rules']):6.1f} ms, {len(ids):4d} alerts"
        )
        if arrived:
            last = max(a[1] for a in arrived)
            line += f": first on a client {ms(min(a[0] for a in arrived)):6.1f} ms, last {ms(last):6.1f} ms"
            if len(arrived) < len(ids):
                line += f" ({len(ids) - len(arrived)} never arrived)"
            if k > 0:
                screens.append(ms(last))
        print(line + (" [cold: rings read back]" if k == 0 else ""))
    if screens:
        print(
            "warm bursts: first candle published -> last alert on a client "
            f"median {statistics.median(screens):.1f} ms, max {max(screens):.1f} ms"
        )
    return screens


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        servers = [start_nats(Path(tmp) / "nats"), start_redis(Path(tmp) / "redis")]
        servers.append(start_postgres(Path(tmp) / "pg", durable=False))
        settings = load_settings({}, nats_url=servers[0].url, redis_url=servers[1].url, postgres_dsn=servers[2].url)
        pids = {name: server.process.pid for name, server in zip(SERVERS, servers, strict=True)}
        try:
            runs = variants(args)
            if len(runs) == 1:
                await measure(args, settings, pids, runs[0])
                return
            # Alternate the two, so both see the same (shared, noisy) machine.
            figures: dict[str, list[float]] = {run.label: [] for run in runs}
            for _ in range(args.rounds):
                for run in runs:
                    figures[run.label] += await measure(args, settings, pids, run)
            (first, a), (second, b) = (
                (label, statistics.median(f) if f else float("nan")) for label, f in figures.items()
            )
            print(
                f"over {args.rounds} rounds, warm bursts: {first}: median {a:.1f} ms; {second}: median {b:.1f} ms "
                f"({b / a:.2f} of the first)"
            )
        finally:
            for server in servers:
                server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", type=int, default=650)
    parser.add_argument("--bursts", type=int, default=6)
    parser.add_argument("--calculators", type=int, default=1, help="calculator processes")
    parser.add_argument("--clients", type=int, default=100, help="WebSocket clients (raw mode)")
    parser.add_argument(
        "--rule",
        default="c5m < -0.25 and c5m > -0.3",
        help="expression of the extra rule (the default holds for 1 to 3 of the 7 real series a minute: "
        "93 to 279 alerts)",
    )
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between bursts")
    parser.add_argument(
        "--steady-minutes",
        type=int,
        default=0,
        help="after the bursts, replay this many minutes back to back (as --speed max) and time them to alerts",
    )
    parser.add_argument(
        "--profile", type=Path, default=None, help="record py-spy profiles of every process (warm bursts) here"
    )
    parser.add_argument("--top", type=int, default=25, help="lines of each profile summary")
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="a checkout of other code (`git worktree add --detach ../base main`) to run alternately with this tree",
    )
    parser.add_argument(
        "--versus",
        nargs="+",
        default=None,
        metavar="KEY=VALUE",
        help="run this tree alternately as is and with these changes: calculators=N, or SCREENER_* settings "
        "of the function and gateway processes (SCREENER_BATCH_SIZE=200), or of one of them "
        "(calculator.SCREENER_BATCH_SIZE=200)",
    )
    parser.add_argument("--rounds", type=int, default=2, help="alternations with --baseline or --versus")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
