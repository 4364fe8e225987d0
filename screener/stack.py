"""``screener up``: the whole pipeline on one machine, under one supervisor.

It uses the servers the settings name and starts its own (NATS, Redis, PostgreSQL from their PyPI
packages) for the ones they don't, prepares the streams, schema and rules, then runs every function,
the collector and the gateway as child processes. A child that crashes is restarted with backoff,
except one that cannot listen because its port is taken: the gateway's port is checked before
anything starts, and "screener is up" is printed only once the gateway answers. An embedded server
that dies is restarted on its port and data. Ctrl-C (or SIGTERM) stops the children first (each log
then ends with a line saying so), then the embedded servers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
import nats
from nats.js import JetStreamContext

from marketdata.klines import KLINE_SUFFIXES, KlineFileError, files_by_symbol
from screener import ports, stackfiles
from screener.config import DEFAULT_REPLAY_RECORDING, Settings
from screener.db.migrate import migrate
from screener.embedded.lifetime import terminate_with_parent
from screener.embedded.servers import (
    EmbeddedServer,
    EmbeddedServerError,
    free_port,
    start_nats,
    start_postgres,
    start_redis,
)
from screener.names import CONSUMERS, STREAM_CANDLES, STREAM_DEAD_LETTERS, STREAM_METRICS
from screener.ports import EXIT_CONFIG
from screener.progress import alert_counts
from screener.streams import ensure_all

log = logging.getLogger("screener.up")

FUNCTIONS = ("recorder", "calculator", "rules", "notifier")
MAX_RESTART_DELAY = 30.0
SERVER_POLL_SECONDS = 1.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``screener up``."""
    parser.add_argument(
        "--data",
        type=Path,
        metavar="DIR",
        help="folder of recorded klines to replay "
        f"(default: SCREENER_REPLAY_DATA or data/klines/{DEFAULT_REPLAY_RECORDING})",
    )
    parser.add_argument(
        "--speed", metavar="SPEED", help='replay speed: a factor like "60" (the default), "realtime" or "max"'
    )
    parser.add_argument(
        "--port",
        type=int,
        metavar="N",
        help="gateway port (default: SCREENER_GATEWAY_PORT or 8080); checked before start",
    )
    parser.add_argument(
        "--source", choices=("replay", "binance"), help="where candles come from (default: SCREENER_SOURCE or replay)"
    )


@dataclass
class Child:
    """A supervised child process."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    health_url: str | None = None
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started_at: float = field(default_factory=time.monotonic)


class Stack:
    """The servers and child processes of ``screener up``."""

    def __init__(self, settings: Settings, args: argparse.Namespace) -> None:
        self.settings = settings
        self.args = args
        self.data_dir = settings.data_dir.resolve()
        self.servers: list[EmbeddedServer] = []
        self.children: list[Child] = []
        self.urls: dict[str, str] = {}
        self.gateway_port: int = args.port if args.port is not None else settings.gateway_port
        self.failure: str | None = None  # why the stack stopped by itself, when it did
        self.server_restarts = 0
        # One thread starts and restarts every embedded server, for the whole run: the kernel stops a
        # server when the thread that started it ends (terminate_with_parent), and blocking waits for
        # a server (up to a minute for PostgreSQL) must not stop the loop supervising the children.
        self._server_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedded-servers")
        self._stopping = asyncio.Event()

    def replay_data_problem(self) -> str | None:
        """Return why the replay's data cannot be played (no such folder, no kline file in it), or None."""
        source = self.args.source or self.settings.source
        data = self.args.data or self.settings.replay_data
        if source != "replay" or data is None:
            return None  # live, or the shipped recording
        if data.is_file():
            return None if data.name.lower().endswith(KLINE_SUFFIXES) else f"{data}: not a kline CSV file"
        try:
            files_by_symbol(data)
        except KlineFileError as exc:
            return str(exc)
        return None

    # --- servers ---------------------------------------------------------------------------------
    def start_servers(self) -> None:
        """Start an embedded server for every URL the settings leave empty."""
        s = self.settings
        if s.nats_url:
            self.urls["nats"] = s.nats_url
            self.urls["nats_monitor"] = s.nats_monitor_url or ""
        else:
            server = self._keep(start_nats(self.data_dir / "nats"))
            self.urls["nats"], self.urls["nats_monitor"] = server.url, server.extra_urls["monitor"]
        self.urls["redis"] = s.redis_url or self._keep(start_redis(self.data_dir / "redis")).url
        self.urls["postgres"] = s.postgres_dsn or self._keep(start_postgres(self.data_dir / "postgres")).url
        for name in ("nats", "redis", "postgres"):
            embedded = any(server.name == name for server in self.servers)
            log.info("%-8s %s%s", name, _redact(self.urls[name]), "  (embedded)" if embedded else "")
        if not s.postgres_dsn:  # `screener users` in another terminal finds the embedded database here
            stackfiles.write_servers(self.data_dir, {"postgres": self.urls["postgres"]})

    def _keep(self, server: EmbeddedServer) -> EmbeddedServer:
        self.servers.append(server)
        return server

    async def supervise_servers(self) -> None:
        """Restart an embedded server that died (a kill, an OOM) on its ports and data, with backoff.

        The functions, the collector and the gateway ride out the outage with their own retries and
        reconnect to the same URLs; JetStream and PostgreSQL recover their data from disk, Redis
        starts empty and the calculator rebuilds its rings (docs/exactly-once.md).
        """
        delay: dict[str, float] = {}
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SERVER_POLL_SECONDS):
                    await self._stopping.wait()
            for server in self.servers:
                code = server.exited
                if code is None or self._stopping.is_set():
                    continue
                log.error("%s (embedded) exited with %s; restarting it on the same port", server.name, code)
                try:
                    await asyncio.get_running_loop().run_in_executor(self._server_thread, server.restart)
                except EmbeddedServerError as exc:
                    wait = delay[server.name] = min(MAX_RESTART_DELAY, 2 * delay.get(server.name, 0.5))
                    log.error("%s could not be restarted (%s); trying again in %.0fs", server.name, exc, wait)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait):
                            await self._stopping.wait()
                    continue
                delay.pop(server.name, None)
                self.server_restarts += 1
                log.info("%s (embedded) is back", server.name)

    def stop_servers(self) -> None:
        """Stop the embedded servers, newest first."""
        for server in reversed(self.servers):
            server.stop()

    # --- preparation -----------------------------------------------------------------------------
    async def prepare(self) -> None:
        """Apply migrations, seed the rules and create the streams and consumers."""
        conn = await asyncpg.connect(self.urls["postgres"])
        try:
            applied = await migrate(conn, self.settings.retention_hours)
            log.info("database schema ready (applied now: %s)", applied or "nothing new")
            from functions.rules.store import seed_rules

            log.info("alert rules seeded (%s new)", await seed_rules(conn))
        finally:
            await conn.close()
        nc = await nats.connect(self.urls["nats"])
        try:
            await ensure_all(nc.jetstream(), self._child_settings())
        finally:
            await nc.drain()
        log.info("streams and consumers ready")

    def _child_settings(self) -> Settings:
        return self.settings.model_copy(
            update={
                "nats_url": self.urls["nats"],
                "redis_url": self.urls["redis"],
                "postgres_dsn": self.urls["postgres"],
                "nats_monitor_url": self.urls.get("nats_monitor") or None,
            }
        )

    # --- children --------------------------------------------------------------------------------
    def plan_children(self) -> None:
        """Decide the child processes and their environment."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCREENER_")}
        env.update({k: v for k, v in os.environ.items() if k.startswith("SCREENER_")})
        env.update(
            {
                "SCREENER_NATS_URL": self.urls["nats"],
                "SCREENER_REDIS_URL": self.urls["redis"],
                "SCREENER_POSTGRES_DSN": self.urls["postgres"],
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.urls.get("nats_monitor"):
            env["SCREENER_NATS_MONITOR_URL"] = self.urls["nats_monitor"]
        if not self.settings.jwt_secret:  # decision 4: generated once, kept with the data
            env["SCREENER_JWT_SECRET"] = stackfiles.jwt_secret(self.data_dir)
        if self.args.data:
            env["SCREENER_REPLAY_DATA"] = str(self.args.data.resolve())
        if self.args.speed:
            env["SCREENER_REPLAY_SPEED"] = self.args.speed
        if self.args.source:
            env["SCREENER_SOURCE"] = self.args.source
        env["SCREENER_GATEWAY_PORT"] = str(self.gateway_port)
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        python = [sys.executable, "-m", "screener.cli"]
        for function in FUNCTIONS:
            port = free_port()
            child_env = {**env, "SCREENER_HEALTH_PORT": str(port)}
            self.children.append(
                Child(
                    function,
                    [*python, "run", function],
                    child_env,
                    logs / f"{function}.log",
                    f"http://127.0.0.1:{port}/readyz",
                )
            )
        self.children.append(
            Child(
                "gateway",
                [*python, "gateway"],
                env,
                logs / "gateway.log",
                f"http://127.0.0.1:{self.gateway_port}/health/ready",
            )
        )
        # The collector's /healthz, not /readyz: its replay warm-up may outlast the start-up wait.
        collector_port = free_port()
        self.children.append(
            Child(
                "collector",
                [*python, "collector"],
                {**env, "SCREENER_HEALTH_PORT": str(collector_port)},
                logs / "collector.log",
                f"http://127.0.0.1:{collector_port}/healthz",
            )
        )

    async def start_child(self, child: Child) -> None:
        """Start (or restart) one child, its output appended to its log file."""
        handle = await asyncio.to_thread(child.log_path.open, "ab")
        child.process = await asyncio.create_subprocess_exec(
            *child.argv,
            env=child.env,
            stdout=handle,
            stderr=handle,
            start_new_session=True,
            preexec_fn=terminate_with_parent,
        )
        handle.close()
        child.started_at = time.monotonic()

    async def supervise(self, child: Child) -> None:
        """Keep ``child`` running: restart it with backoff whenever it exits, until the stack stops."""
        delay = 1.0
        while not self._stopping.is_set():
            await self.start_child(child)
            assert child.process is not None
            code = await child.process.wait()
            if self._stopping.is_set():
                return
            lived = time.monotonic() - child.started_at
            if code == 0 and child.name == "collector" and not self.settings.replay_loop:
                # A replay without loop ended: nothing to restart. (With the loop on, a collector ends
                # only when stopped from outside, SIGTERM included: it is restarted like any child.)
                await asyncio.to_thread(_append_line, child.log_path, "collector finished its replay; not restarted")
                log.info("collector finished its replay (SCREENER_REPLAY_LOOP=false); the rest keeps serving")
                return
            if code == EXIT_CONFIG:  # a restart would meet the same taken port or unreadable data: stop
                await asyncio.to_thread(
                    _append_line, child.log_path, f"{child.name} cannot run as configured; not restarted"
                )
                self.fail(f"{child.name} cannot run as configured: {_last_line(child.log_path)}")
                return
            delay = 1.0 if lived > 60 else min(MAX_RESTART_DELAY, delay * 2)
            child.restarts += 1
            await asyncio.to_thread(
                _append_line, child.log_path, f"{child.name} exited with {code}; restarting in {delay:.0f}s"
            )
            log.error(
                "%s exited with %s after %.0fs; restarting in %.0fs (log: %s)",
                child.name,
                code,
                lived,
                delay,
                child.log_path,
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()

    async def wait_healthy(self, within_seconds: float | None = 90.0, only: str | None = None) -> bool:
        """Wait until every child (or the one named ``only``) with a health URL answers 200; log which do not."""
        pending = {c.name: c.health_url for c in self.children if c.health_url and only in (None, c.name)}
        deadline = time.monotonic() + (within_seconds if within_seconds is not None else float("inf"))
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while pending and time.monotonic() < deadline and not self._stopping.is_set():
                for name, url in list(pending.items()):
                    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                        async with session.get(url) as response:
                            if response.status == 200:
                                pending.pop(name)
                await asyncio.sleep(0.5)
        if pending and not self._stopping.is_set():
            log.warning("not healthy yet: %s (see %s)", ", ".join(pending), self.data_dir / "logs")
        return not pending

    async def announce_when_serving(self) -> None:
        """Print where to look once the gateway answers, and only then: never "up" for a gateway not serving."""
        gateway = next(c for c in self.children if c.name == "gateway")
        if not await self.wait_healthy(None, only="gateway"):
            return
        if gateway.process is not None and gateway.process.returncode is None:
            self.print_where_to_look()

    async def report_progress(self) -> None:
        """Print what flows through the pipeline every 10 seconds."""
        nc = await nats.connect(self.urls["nats"], max_reconnect_attempts=-1, reconnect_time_wait=0.5)
        js = nc.jetstream()
        # A pool, not a connection: it reconnects after PostgreSQL restarts.
        pool = await asyncpg.create_pool(self.urls["postgres"], min_size=1, max_size=1)
        try:
            while not self._stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(10):
                        await self._stopping.wait()
                if self._stopping.is_set():
                    break
                counts = []
                for stream in (STREAM_CANDLES, STREAM_METRICS):
                    try:
                        counts.append(f"{stream.name.lower()} {(await js.stream_info(stream.name)).state.messages}")
                    except Exception as exc:  # a progress line must never stop the stack
                        counts.append(f"{stream.name.lower()} ? ({exc})")
                if counts[0] == f"{STREAM_CANDLES.name.lower()} 0":  # still starting: say how far it is
                    collector = next((c for c in self.children if c.name == "collector"), None)
                    if collector is not None:
                        counts[0] += f" (collector: {await asyncio.to_thread(_latest_message, collector.log_path)})"
                try:  # what the dashboard shows a visitor, not the stream's every alert
                    async with pool.acquire() as conn:
                        counts.append((await alert_counts(conn)).describe())
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    counts.append(f"alerts ? ({exc})")
                restarts = sum(c.restarts for c in self.children)
                servers = f", servers restarted {self.server_restarts}" if self.server_restarts else ""
                log.info(
                    "flowing: %s | %s | restarts %d%s", ", ".join(counts), await _delivery_report(js), restarts, servers
                )
        finally:
            await pool.close()
            await nc.drain()

    async def stop_children(self, grace: float = 15.0) -> None:
        """SIGTERM every child, then SIGKILL the ones still running after ``grace`` seconds."""
        self._stopping.set()
        running = [c.process for c in self.children if c.process and c.process.returncode is None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        _, late = await asyncio.wait([asyncio.create_task(p.wait()) for p in running], timeout=grace)
        killed = set()
        if late:
            for process in running:
                if process.returncode is None:
                    killed.add(process.pid)
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                    await process.wait()
        for child in self.children:  # every log ends saying so, whatever the child managed to write
            if child.process is None:
                continue
            code = child.process.returncode
            how = f"killed after {grace:.0f}s" if child.process.pid in killed else f"exit status {code}"
            await asyncio.to_thread(_append_line, child.log_path, f"{child.name} stopped ({how})")

    def request_stop(self) -> None:
        """Begin a clean shutdown (Ctrl-C, SIGTERM)."""
        self._stopping.set()

    def fail(self, reason: str) -> None:
        """Stop the stack because it cannot run as configured; ``run`` then exits non-zero."""
        if self.failure is None:
            self.failure = reason
            log.error("%s", reason)
        self._stopping.set()

    def print_where_to_look(self) -> None:
        """Tell the user where everything is."""
        lines = [
            "",
            "screener is up.",
            f"  dashboard     http://127.0.0.1:{self.gateway_port}/",
            f"  REST API      http://127.0.0.1:{self.gateway_port}/api/metrics/  (OpenAPI: /api/openapi.json)",
            f"  live alerts   ws://127.0.0.1:{self.gateway_port}/ws/alerts",
            f"  NATS monitor  {self.urls.get('nats_monitor') or '(configured server)'}/jsz",
            f"  logs          {self.data_dir / 'logs'}/",
            "  first user    .venv/bin/screener users create-admin --email you@example.com",
            "  stop          Ctrl-C",
            "",
        ]
        print("\n".join(lines), flush=True)

    async def run(self) -> int:
        """Bring everything up, supervise until asked to stop, then shut down cleanly."""
        taken_ports = ports.taken([ports.gateway_port(self.settings.gateway_host, self.gateway_port)])
        if taken_ports:  # before anything starts: one line per port and the way to choose another
            for port in taken_ports:
                print(f"screener up: {port.taken_message()}", file=sys.stderr, flush=True)
            return 1
        missing = self.replay_data_problem()
        if missing:  # before anything starts, rather than a collector restarted over and over
            print(f"screener up: {missing}", file=sys.stderr, flush=True)
            return 2
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_stop)
        await asyncio.get_running_loop().run_in_executor(self._server_thread, self.start_servers)
        try:
            await self.prepare()
            self.plan_children()
            supervisors = [asyncio.create_task(self.supervise(child)) for child in self.children]
            helpers = [asyncio.create_task(self.report_progress()), asyncio.create_task(self.supervise_servers())]
            if await self.wait_healthy():
                self.print_where_to_look()
                log.info("all %d processes healthy", len(self.children))
            else:  # the address is printed once the gateway answers (at once when only others lag)
                helpers.append(asyncio.create_task(self.announce_when_serving()))
            await self._stopping.wait()
            log.info("stopping: draining the functions and the gateway")
            await self.stop_children()
            for task in (*supervisors, *helpers):
                task.cancel()
            await asyncio.gather(*supervisors, *helpers, return_exceptions=True)
        finally:
            stackfiles.remove_servers(self.data_dir)
            await asyncio.get_running_loop().run_in_executor(self._server_thread, self.stop_servers)
            self._server_thread.shutdown()
            if self.failure is None:
                log.info("stopped")
            else:
                log.error("stopped: %s", self.failure)
        return 0 if self.failure is None else 1


def _append_line(path: Path, text: str) -> None:
    """Append one stamped line of the supervisor to a child's log (its last line, when the child stopped)."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
    with path.open("a", encoding="utf-8") as handle:
        handle.write(f"{stamp} screener up: {text}\n")


def _last_line(path: Path) -> str:
    """Return the last line a child printed before the supervisor's own lines (its reason to exit)."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return f"see {path}"
    own = [line for line in lines if line.strip() and " screener up: " not in line]
    return own[-1].strip() if own else f"see {path}"


def _latest_message(path: Path) -> str:
    """Return the message of the newest log line of a child (``... LEVEL logger: message``), read from its tail."""
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - 4096))
            lines = handle.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return "starting"
    own = [line for line in lines if line.strip() and " screener up: " not in line]
    return own[-1].split(": ", 1)[-1].strip() if own else "starting"


def _redact(url: str) -> str:
    if "@" in url and ":" in url.split("@", 1)[0].split("//", 1)[-1]:
        scheme, rest = url.split("//", 1)
        user = rest.split(":", 1)[0]
        return f"{scheme}//{user}:***@{rest.split('@', 1)[1]}"
    return url


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run the whole pipeline until Ctrl-C."""
    return asyncio.run(Stack(settings, args).run())


async def _delivery_report(js: JetStreamContext) -> str:
    """Return what was retried, what waits and what went to the dead letters, per function."""
    parts = []
    for spec in CONSUMERS.values():
        try:
            info = await js.consumer_info(spec.stream.name, spec.durable)
        except Exception:  # not created yet, or NATS away: the line says so instead of failing
            parts.append(f"{spec.function} ?")
            continue
        lag = (info.num_pending or 0) + (info.num_ack_pending or 0)
        parts.append(f"{spec.function} lag {lag} retried {info.num_redelivered or 0}")
    try:
        dead = (await js.stream_info(STREAM_DEAD_LETTERS.name)).state.messages
    except Exception:
        dead = -1
    parts.append(f"dead letters {dead if dead >= 0 else '?'}")
    return ", ".join(parts)
