"""Fan-out benchmark: alert-to-client latency, delivery rate and memory per WebSocket connection.

The gateway runs as production runs it (``python -m screener.cli gateway``), one process or several
behind one port (``--gateways N``: SO_REUSEPORT, the kernel spreads the connections), on embedded
NATS, Redis and PostgreSQL. The WebSocket clients run in processes of their own (multiprocessing,
``--client-processes``), pinned to the cores the gateway does not use when there are some (``--pin``),
so the load generator does not take the gateway's core. This process publishes alert CloudEvents
through NATS, each stamped with its publish time; every client measures the latency of every frame
it receives against that stamp (same host, same clock).

Printed per run: p50, p99 and max over every frame delivered; "all" is the median over alerts of
the time until the *last* client had the alert; msgs/s; the gateway's memory per connection; the
gateway's own mean time of one pass handing the alerts to every client (from its /metrics, one process).

    .venv/bin/python bench/fanout.py                                  # 1,000, 5,000 and 10,000 clients
    .venv/bin/python bench/fanout.py --clients 10000 --gateways 1 2   # one and two gateway processes
    .venv/bin/python bench/fanout.py --clients 1000 --alerts 100 --rate 10
    .venv/bin/python bench/fanout.py --plot docs/img/fanout.png       # and draw the figures
"""

from __future__ import annotations

import argparse
import array
import asyncio
import base64
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from screener.embedded.servers import free_port, start_nats, start_postgres, start_redis  # noqa: E402
from screener.events.envelope import make_event, nats_subject  # noqa: E402
from screener.events.models import MINUTE_MS, Alert, alert_id, minute_close_iso  # noqa: E402
from screener.events.nats_binding import to_binary  # noqa: E402
from screener.names import EVENT_SOURCE_RULES, TYPE_ALERT_TRIGGERED  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
from socket_floor import SPARE_FDS, floor_ms, raise_fd_limit  # noqa: E402

STAMP = b'"sent_ns":'


def rss_bytes(pid: int) -> int:
    """Return the resident set size of ``pid``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def listening_pids(port: int, pids: list[int]) -> set[int]:
    """Return which of ``pids`` hold a listening TCP socket on ``port`` (from /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    found = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    link = os.readlink(fd)
                    if link.startswith("socket:[") and link[8:-1] in inodes:
                        found.add(pid)
                        break
    return found


# ----------------------------------------------------------------------------------- client processes
# Called with the buffer, the start and end of a text frame's payload in it, and the arrival time (ns).
OnText = Callable[[bytes, int, int, int], None]


def stamp_recorder(sink: array.array[int]) -> OnText:
    """Return an ``OnText`` that appends (sent_ns, latency_ns) of each stamped alert to ``sink``."""

    def record(buf: bytes, start: int, end: int, now: int) -> None:
        at = buf.find(STAMP, start, end)
        if at >= 0:
            at += len(STAMP)
            stop = buf.find(b"}", at, end)
            comma = buf.find(b",", at, end)
            stop = comma if 0 <= comma < stop else stop
            sent = int(buf[at:stop])
            sink.append(sent)
            sink.append(now - sent)

    return record


class BenchClient(asyncio.Protocol):
    """A minimal WebSocket client: handshake, parse server frames, answer pings, time each alert.

    A bare protocol instead of aiohttp's client keeps the measuring side cheap, so the figures are
    the gateway's and not the load generator's.
    """

    def __init__(self, host: str, path: str, expected: int, on_text: OnText, done: asyncio.Future[None]) -> None:
        """Speak to ``path`` on ``host``; hand each text frame to ``on_text``; set ``done`` after ``expected``."""
        self.host, self.path, self.expected, self.on_text, self.done = host, path, expected, on_text, done
        self.buffer = b""
        self.upgraded = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.got = 0
        self.closed_early = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        buf = self.buffer + data if self.buffer else data
        if not self.upgraded.done():
            head, sep, rest = buf.partition(b"\r\n\r\n")
            if not sep:
                self.buffer = buf
                return
            if not head.startswith(b"HTTP/1.1 101"):
                self.upgraded.set_exception(RuntimeError(head[:80].decode(errors="replace")))
                return
            self.upgraded.set_result(None)
            buf = rest
        pos = 0
        while len(buf) - pos >= 2:
            opcode, length = buf[pos] & 0x0F, buf[pos + 1] & 0x7F
            header = 2
            if length == 126:
                if len(buf) - pos < 4:
                    break
                length, header = struct.unpack_from("!H", buf, pos + 2)[0], 4
            elif length == 127:
                if len(buf) - pos < 10:
                    break
                length, header = struct.unpack_from("!Q", buf, pos + 2)[0], 10
            if len(buf) - pos < header + length:
                break
            start, pos = pos + header, pos + header + length
            if opcode == 0x1:
                self.on_text(buf, start, pos, now)
                self.got += 1
                if self.got == self.expected and not self.done.done():
                    self.done.set_result(None)
            elif opcode == 0x9:  # ping: answer with a masked pong carrying the same payload
                self._send(0xA, buf[start:pos])
            elif opcode == 0x8:
                self.closed_early = self.got < self.expected
                if not self.done.done():
                    self.done.set_result(None)
        self.buffer = buf[pos:]

    def _send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        assert self.transport is not None
        assert len(payload) < 126
        self.transport.write(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.closed_early = True
            self.done.set_result(None)


async def run_clients(
    url: str, count: int, expected: int, limit_seconds: float, pipe: multiprocessing.connection.Connection
) -> None:
    """Open ``count`` sockets, say READY on ``pipe``, then collect latencies until ``expected`` frames each."""
    raise_fd_limit(count + SPARE_FDS)
    loop = asyncio.get_running_loop()
    host_port, _, path = url.removeprefix("ws://").partition("/")
    host, _, port = host_port.partition(":")
    stamps: array.array[int] = array.array("q")  # (sent_ns, latency_ns) pairs
    record = stamp_recorder(stamps)
    clients: list[BenchClient] = []
    for start in range(0, count, 200):  # connect in waves: the listen backlog stays sane
        wave = []
        for _ in range(start, min(count, start + 200)):
            client = BenchClient(host_port, "/" + path, expected, record, loop.create_future())
            wave.append(loop.create_connection(lambda c=client: c, host, int(port)))
            clients.append(client)
        await asyncio.gather(*wave)
        await asyncio.gather(*(c.upgraded for c in clients[start:]))
    pipe.send("READY")
    cpu_started = time.process_time()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(c.done for c in clients)), limit_seconds)
    for c in clients:
        if c.transport is not None:
            c.transport.close()
    pipe.send(
        {
            "received": sum(c.got for c in clients),
            "closed_early": sum(1 for c in clients if c.closed_early),
            "stamps": stamps.tobytes(),
            "cpu_seconds": time.process_time() - cpu_started,
        }
    )


def client_process(
    url: str, count: int, expected: int, cpus: list[int] | None, pipe: multiprocessing.connection.Connection
) -> None:
    """Entry point of one load-generator process."""
    if cpus:
        os.sched_setaffinity(0, cpus)
    import uvloop

    uvloop.run(run_clients(url, count, expected, 600, pipe))


# ----------------------------------------------------------------------------------- orchestrator
def alert_event(index: int) -> tuple[str, dict[str, str], bytes]:
    minute = 1_770_000_000_000 // MINUTE_MS * MINUTE_MS + index * MINUTE_MS
    alert = Alert(
        id=alert_id("futures_pioneer_bull", "BTCUSDT", minute),
        symbol="BTCUSDT",
        rule_type="futures_pioneer_bull",
        description="Scout Bull on BTCUSDT",
        timestamp=minute_close_iso(minute),
        price=65000.5,
        metadata={"c5m": 1.2, "c15m": 2.1, "v5m": 1250000.0, "sent_ns": time.time_ns()},
        minute=minute,
    )
    event = make_event(
        event_type=TYPE_ALERT_TRIGGERED, source=EVENT_SOURCE_RULES, event_id=alert.id, subject="BTCUSDT", data=alert
    )
    headers, body = to_binary(event)
    return nats_subject(event), headers, body


async def publish(nats_url: str, alerts: int, rate: float) -> float:
    import nats

    nc = await nats.connect(nats_url)
    started = time.perf_counter()
    for i in range(alerts):
        subject, headers, body = alert_event(i)
        await nc.publish(subject, body, headers=headers)
        await nc.flush()
        delay = started + (i + 1) / rate - time.perf_counter() if rate > 0 else 0.0
        if delay > 0:
            await asyncio.sleep(delay)
    elapsed = time.perf_counter() - started
    await nc.close()
    return elapsed


async def wait_listening(port: int, processes: list[asyncio.subprocess.Process]) -> None:
    """Wait until every gateway process listens on ``port`` and one answers /health/ready."""
    pids = [p.pid for p in processes]
    async with aiohttp.ClientSession() as session:
        for _ in range(600):
            if any(p.returncode is not None for p in processes):
                raise RuntimeError("a gateway exited during start-up")
            if listening_pids(port, pids) == set(pids):
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"http://127.0.0.1:{port}/health/ready") as response:
                        if response.status == 200:
                            return
            await asyncio.sleep(0.1)
    raise RuntimeError("the gateways did not become ready")


async def mean_fanout_ms(base: str) -> float:
    """Return a gateway's own mean time to hand one alert to every client (from /metrics)."""
    async with aiohttp.ClientSession() as session, session.get(f"{base}/metrics") as response:
        text = await response.text()
    values = {}
    for line in text.splitlines():
        if line.startswith(("screener_gateway_fanout_seconds_sum", "screener_gateway_fanout_seconds_count")):
            name, value = line.split()
            values[name] = float(value)
    count = values.get("screener_gateway_fanout_seconds_count", 0.0)
    return values.get("screener_gateway_fanout_seconds_sum", 0.0) / count * 1000 if count else float("nan")


def pinning(gateways: int, pin: bool) -> tuple[list[list[int]] | None, list[int] | None]:
    """Return the cores of each gateway and of the load generator (None: not pinned).

    One core per gateway process, the rest for the clients; with no core left over nothing is pinned.
    """
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) <= gateways:
        return None, None
    return [[c] for c in cpus[:gateways]], cpus[gateways:]


async def measure(env: dict[str, str], args: argparse.Namespace, gateways: int, clients: int) -> dict[str, Any]:
    port = free_port()
    gateway_cpus, client_cpus = pinning(gateways, args.pin)
    processes = []
    for index in range(gateways):
        cpus = gateway_cpus[index] if gateway_cpus else None
        processes.append(
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "screener.cli",
                "gateway",
                "--port",
                str(port),
                env={**env, "SCREENER_GATEWAY_REUSE_PORT": "true" if gateways > 1 else "false"},
                cwd=REPO,
                preexec_fn=(lambda c=cpus: os.sched_setaffinity(0, c)) if cpus else None,
            )
        )
    context = multiprocessing.get_context("spawn")
    workers: list[tuple[multiprocessing.process.BaseProcess, multiprocessing.connection.Connection]] = []
    try:
        await wait_listening(port, processes)
        rss_before = sum(rss_bytes(p.pid) for p in processes)
        per, extra = divmod(clients, args.client_processes)
        shares = [per + (i < extra) for i in range(args.client_processes)]
        for share in shares:
            mine, theirs = context.Pipe()
            worker = context.Process(
                target=client_process,
                args=(f"ws://127.0.0.1:{port}/ws/alerts", share, args.alerts, client_cpus, theirs),
                daemon=True,
            )
            worker.start()
            workers.append((worker, mine))
        loop = asyncio.get_running_loop()
        for worker, pipe in workers:
            ready = await loop.run_in_executor(None, lambda p=pipe: p.recv() if p.poll(300) else None)
            if ready != "READY":
                raise RuntimeError(f"client process {worker.pid} did not connect its sockets")
        await asyncio.sleep(1.0)  # let the gateways settle their buffers before reading their memory
        rss_after = sum(rss_bytes(p.pid) for p in processes)
        began = time.perf_counter()
        published_in = await publish(env["SCREENER_NATS_URL"], args.alerts, args.rate)
        results = []
        for _, pipe in workers:
            results.append(await loop.run_in_executor(None, lambda p=pipe: p.recv() if p.poll(600) else None))
        delivered_in = time.perf_counter() - began
        if any(r is None for r in results):
            raise RuntimeError("a client process sent no results")
        fanout_ms = await mean_fanout_ms(f"http://127.0.0.1:{port}") if gateways == 1 else float("nan")
    finally:
        for worker, _ in workers:
            worker.join(10)
            if worker.is_alive():
                worker.kill()
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
        for process in processes:
            await asyncio.wait_for(process.wait(), 30)
    pairs = array.array("q")
    for r in results:
        pairs.frombytes(r["stamps"])
    latencies = sorted(pairs[1::2])
    last_by_alert: dict[int, int] = {}
    for sent, latency in zip(pairs[0::2], pairs[1::2], strict=True):
        if latency > last_by_alert.get(sent, -1):
            last_by_alert[sent] = latency
    return {
        "received": sum(r["received"] for r in results),
        "expected": args.alerts * clients,
        "closed_early": sum(r["closed_early"] for r in results),
        "p50_ms": statistics.median(latencies) / 1e6 if latencies else float("nan"),
        "p99_ms": latencies[max(0, int(len(latencies) * 0.99) - 1)] / 1e6 if latencies else float("nan"),
        "max_ms": latencies[-1] / 1e6 if latencies else float("nan"),
        "all_ms": statistics.median(last_by_alert.values()) / 1e6 if last_by_alert else float("nan"),
        "publish_seconds": published_in,
        "seconds": delivered_in,
        "fanout_ms": fanout_ms,
        # The load generator's CPU over its cores while the alerts went out: near 100%, its own
        # queueing is part of the latencies.
        "generator_busy": sum(r["cpu_seconds"] for r in results)
        / (delivered_in * (len(client_cpus) if client_cpus else os.cpu_count() or 1)),
        "rss_per_connection_kib": (rss_after - rss_before) / clients / 1024,
        "pinned": f"gateway on {gateway_cpus}, clients on {client_cpus}" if gateway_cpus else "not pinned",
    }


def plot(path: Path, rows: list[tuple[int, int, dict[str, Any]]], floors: dict[int, float]) -> None:
    """Draw p50 and p99 alert-to-client latency per client count, with the gateway's pass and the floor (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 4), dpi=110)
    for gateways in sorted({g for g, _, _ in rows}):
        mine = sorted((c, r) for g, c, r in rows if g == gateways)
        clients = [c for c, _ in mine]
        label = f"{gateways} gateway{'s' if gateways > 1 else ''}"
        axis.plot(clients, [r["p99_ms"] for _, r in mine], marker="o", label=f"p99, {label}")
        axis.plot(clients, [r["p50_ms"] for _, r in mine], marker="o", linestyle=":", label=f"p50, {label}")
        if gateways == 1:
            axis.plot(clients, [r["fanout_ms"] for _, r in mine], marker="s", label="gateway's pass, 1 gateway")
    if floors:
        counts = sorted(floors)
        floor = [floors[c] for c in counts]
        axis.plot(counts, floor, color="#333333", linestyle="--", label="kernel floor (send loop)")
    axis.axhline(100, color="#eb5757", linewidth=1, label="target p99 100 ms")
    axis.set_xlabel("WebSocket clients")
    axis.set_ylabel("ms")
    axis.set_title("Alert fan-out on loopback, 2 cores: latency to the clients and the floor")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


async def kernel_floor(args: argparse.Namespace, clients: int) -> float:
    """Return the median time (ms) of one plain ``send`` per socket to ``clients`` loopback sockets.

    On the gateway's core, the readers on the load generator's: the least a pass over every socket can take here.
    """
    gateway_cpus, client_cpus = pinning(1, args.pin)
    frame_bytes = len(alert_event(0)[2])
    times = await asyncio.get_running_loop().run_in_executor(
        None,
        lambda: floor_ms(
            clients,
            frame_bytes,
            writer_cpus=gateway_cpus[0] if gateway_cpus else None,
            reader_cpus=client_cpus,
            reader_processes=args.client_processes,
        ),
    )
    return statistics.median(times)


async def main_async(args: argparse.Namespace) -> None:
    biggest = max(args.clients)
    # This process only opens a few sockets; the figure is checked per process where the sockets are.
    limit = raise_fd_limit(SPARE_FDS)
    per_gateway = biggest // min(args.gateways) + SPARE_FDS
    per_client_process = biggest // args.client_processes + SPARE_FDS
    if limit < max(per_gateway, per_client_process):
        raise SystemExit(
            f"open-files limit is {limit} (hard); {biggest} clients need {per_gateway} per gateway process and "
            f"{per_client_process} per client process: raise `ulimit -Hn` or use more processes"
        )
    work = Path(tempfile.mkdtemp(prefix="screener-fanout-"))
    nats_server = start_nats(work / "nats")
    redis_server = start_redis(work / "redis")
    pg_server = start_postgres(work / "pg", durable=False)
    try:
        import asyncpg

        from screener.db.migrate import migrate

        conn = await asyncpg.connect(pg_server.url)
        await migrate(conn)
        await conn.close()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SCREENER_")},
            "SCREENER_NATS_URL": nats_server.url,
            "SCREENER_REDIS_URL": redis_server.url,
            "SCREENER_POSTGRES_DSN": pg_server.url,
            "SCREENER_RATE_LIMIT_PER_MINUTE": "100000000",  # every client connects from 127.0.0.1
            "SCREENER_WS_MAX_CONNECTIONS_PER_CLIENT": "100000000",  # ... and holds its connection open
            "SCREENER_MAX_CONNECTIONS_PER_CLIENT": "100000000",
            "SCREENER_LOG_LEVEL": "ERROR",
        }
        print(f"load average {os.getloadavg()[0]:.2f} at start (the machine is shared: figures are noisy)")
        print(
            f"open-files limit {limit} (raised to the hard limit; the children inherit it); {os.cpu_count()} CPUs; "
            f"{args.alerts} alerts at {args.rate}/s per run; {args.client_processes} client processes"
        )
        print(
            f"{'gw':>3} {'clients':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'all ms':>8} {'msgs/s':>9} "
            f"{'KiB/conn':>9} {'fanout ms':>10} {'floor ms':>9} {'x floor':>8} {'gen busy':>8} {'delivered':>15}  cores"
        )
        floors: dict[int, float] = {}
        rows: list[tuple[int, int, dict[str, Any]]] = []
        for gateways in args.gateways:
            for clients in args.clients:
                r = await measure(env, args, gateways, clients)
                rows.append((gateways, clients, r))
                rate = r["received"] / r["seconds"] if r["seconds"] else float("nan")
                if args.floor and clients not in floors:
                    floors[clients] = await kernel_floor(args, clients)
                floor = floors.get(clients, float("nan"))
                print(
                    f"{gateways:>3} {clients:>8} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['max_ms']:>8.1f} "
                    f"{r['all_ms']:>8.1f} {rate:>9.0f} {r['rss_per_connection_kib']:>9.1f} {r['fanout_ms']:>10.2f} "
                    f"{floor:>9.1f} {r['fanout_ms'] / floor:>8.2f} {r['generator_busy']:>8.0%} "
                    f"{r['received']:>7}/{r['expected']:<7}  {r['pinned']}"
                    + (f" closed early: {r['closed_early']}" if r["closed_early"] else ""),
                    flush=True,
                )
        print(f"load average {os.getloadavg()[0]:.2f} at the end")
        if args.plot:
            plot(args.plot, rows, floors)
            print(f"plot written to {args.plot}")
    finally:
        for server in (pg_server, redis_server, nats_server):
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, nargs="+", default=[1000, 5000, 10000])
    parser.add_argument("--gateways", type=int, nargs="+", default=[1], help="gateway processes behind one port")
    parser.add_argument("--client-processes", type=int, default=2, help="load-generator processes")
    parser.add_argument("--alerts", type=int, default=100, help="alerts published per run")
    parser.add_argument("--rate", type=float, default=10.0, help="alerts per second (0: as fast as possible)")
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="pin each gateway to a core and the clients to the others (when cores are left over)",
    )
    parser.add_argument("--plot", type=Path, help="write a PNG of the figures there (e.g. docs/img/fanout.png)")
    parser.add_argument(
        "--floor",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time a plain send loop to as many loopback sockets (the kernel's floor)",
    )
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
