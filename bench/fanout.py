"""Fan-out benchmark: alert-to-client latency, delivery rate and memory per WebSocket connection.

The gateway runs in its own process (``python -m screener.cli gateway``) on embedded NATS, Redis and
PostgreSQL; the WebSocket clients run in another process; this process publishes alert CloudEvents on
the alerts subject through NATS, each stamped with its publish time. A client measures the latency of
every frame it receives against that stamp (same host, same clock).

    .venv/bin/python bench/fanout.py                       # 1,000 and 5,000 clients
    .venv/bin/python bench/fanout.py --clients 1000 --alerts 100 --rate 10
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import resource
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from screener.embedded.servers import free_port, start_nats, start_postgres, start_redis  # noqa: E402
from screener.events.envelope import make_event, nats_subject  # noqa: E402
from screener.events.models import MINUTE_MS, Alert, alert_id, minute_close_iso  # noqa: E402
from screener.events.nats_binding import to_binary  # noqa: E402
from screener.names import EVENT_SOURCE_RULES, TYPE_ALERT_TRIGGERED  # noqa: E402

STAMP = b'"sent_ns":'


def raise_fd_limit() -> int:
    """Raise the open-files limit to the hard limit; return it."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def rss_bytes(pid: int) -> int:
    """Return the resident set size of ``pid``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


# ----------------------------------------------------------------------------------- client process
class BenchClient(asyncio.Protocol):
    """A minimal WebSocket client: handshake, parse server frames, answer pings, time each alert.

    A bare protocol instead of aiohttp's client keeps the measuring side cheap, so the figures are
    the gateway's and not the load generator's.
    """

    def __init__(self, host: str, path: str, expected: int, sink: list[float], done: asyncio.Future[None]) -> None:
        self.host, self.path, self.expected, self.sink, self.done = host, path, expected, sink, done
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
        self.buffer += data
        if not self.upgraded.done():
            head, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if not sep:
                return
            if not head.startswith(b"HTTP/1.1 101"):
                self.upgraded.set_exception(RuntimeError(head[:80].decode(errors="replace")))
                return
            self.upgraded.set_result(None)
            self.buffer = rest
        buf = self.buffer
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
            payload = buf[pos + header : pos + header + length]
            pos += header + length
            if opcode == 0x1:
                at = payload.find(STAMP)
                if at >= 0:
                    end = payload.find(b"}", at)
                    comma = payload.find(b",", at)
                    end = comma if 0 <= comma < end else end
                    self.sink.append((now - int(payload[at + len(STAMP) : end])) / 1e6)
                self.got += 1
                if self.got == self.expected and not self.done.done():
                    self.done.set_result(None)
            elif opcode == 0x9:  # ping: answer with a masked pong carrying the same payload
                self._send(0xA, payload)
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


async def run_clients(url: str, count: int, expected: int, limit_seconds: float) -> dict[str, object]:
    """Open ``count`` sockets, report READY, then collect latencies until ``expected`` frames each."""
    raise_fd_limit()
    loop = asyncio.get_running_loop()
    host_port, _, path = url.removeprefix("ws://").partition("/")
    host, _, port = host_port.partition(":")
    latencies: list[float] = []
    clients: list[BenchClient] = []
    for start in range(0, count, 200):  # connect in waves: the listen backlog stays sane
        wave = []
        for _ in range(start, min(count, start + 200)):
            client = BenchClient(host_port, "/" + path, expected, latencies, loop.create_future())
            wave.append(loop.create_connection(lambda c=client: c, host, int(port)))
            clients.append(client)
        await asyncio.gather(*wave)
        await asyncio.gather(*(c.upgraded for c in clients[start:]))
    print("READY", flush=True)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(c.done for c in clients)), limit_seconds)
    for c in clients:
        if c.transport is not None:
            c.transport.close()
    latencies.sort()
    received = sum(c.got for c in clients)
    return {
        "received": received,
        "expected": expected * count,
        "closed_early": sum(1 for c in clients if c.closed_early),
        "p50_ms": statistics.median(latencies) if latencies else None,
        "p99_ms": latencies[max(0, int(len(latencies) * 0.99) - 1)] if latencies else None,
        "max_ms": latencies[-1] if latencies else None,
    }


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


async def wait_ready(base: str, process: asyncio.subprocess.Process) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            if process.returncode is not None:
                raise RuntimeError("the gateway exited during start-up")
            try:
                async with session.get(f"{base}/health/ready") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("the gateway did not become ready")


async def mean_fanout_ms(base: str) -> float:
    """Return the gateway's own mean time to hand one alert to every client (from /metrics)."""
    async with aiohttp.ClientSession() as session, session.get(f"{base}/metrics") as response:
        text = await response.text()
    values = {}
    for line in text.splitlines():
        if line.startswith(("screener_gateway_fanout_seconds_sum", "screener_gateway_fanout_seconds_count")):
            name, value = line.split()
            values[name] = float(value)
    count = values.get("screener_gateway_fanout_seconds_count", 0.0)
    return values.get("screener_gateway_fanout_seconds_sum", 0.0) / count * 1000 if count else float("nan")


async def measure(env: dict[str, str], clients: int, alerts: int, rate: float) -> dict[str, object]:
    port = free_port()
    # The children inherit this process's raised open-files limit.
    gateway = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "screener.cli",
        "gateway",
        "--port",
        str(port),
        env={**env, "SCREENER_GATEWAY_PORT": str(port)},
        cwd=REPO,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        await wait_ready(base, gateway)
        rss_before = rss_bytes(gateway.pid)
        client = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--client",
            f"ws://127.0.0.1:{port}/ws/alerts",
            str(clients),
            str(alerts),
            stdout=asyncio.subprocess.PIPE,
            cwd=REPO,
        )
        assert client.stdout is not None
        line = await asyncio.wait_for(client.stdout.readline(), 300)
        if line.strip() != b"READY":
            raise RuntimeError(f"client process failed: {line!r}")
        await asyncio.sleep(1.0)  # let the gateway settle its buffers before reading its memory
        rss_after = rss_bytes(gateway.pid)
        began = time.perf_counter()
        published_in = await publish(env["SCREENER_NATS_URL"], alerts, rate)
        output = await asyncio.wait_for(client.stdout.read(), 600)
        delivered_in = time.perf_counter() - began
        await client.wait()
        fanout_ms = await mean_fanout_ms(base)
        result = json.loads(output.decode().strip().splitlines()[-1])
        result.update(
            clients=clients,
            alerts=alerts,
            publish_seconds=published_in,
            seconds=delivered_in,
            fanout_ms=fanout_ms,
            rss_per_connection_kib=(rss_after - rss_before) / clients / 1024,
            rss_before_mib=rss_before / 2**20,
            rss_after_mib=rss_after / 2**20,
        )
        return result
    finally:
        gateway.terminate()
        await asyncio.wait_for(gateway.wait(), 30)


async def main_async(args: argparse.Namespace) -> None:
    limit = raise_fd_limit()
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
            "SCREENER_LOG_LEVEL": "WARNING",
        }
        print(f"open-files limit {limit}; {os.cpu_count()} CPUs; {args.alerts} alerts at {args.rate}/s per run")
        print(
            f"{'clients':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'msgs/s':>10} {'KiB/conn':>9} {'delivered':>12}"
        )
        for clients in args.clients:
            r = await measure(env, clients, args.alerts, args.rate)
            rate = r["received"] / r["seconds"] if r["seconds"] else float("nan")
            print(
                f"{clients:>8} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['max_ms']:>8.1f} {rate:>10.0f} "
                f"{r['rss_per_connection_kib']:>9.1f} {r['fanout_ms']:>10.2f} {r['received']:>7}/{r['expected']:<7}"
                + (f" closed early: {r['closed_early']}" if r["closed_early"] else ""),
                flush=True,
            )
    finally:
        for server in (pg_server, redis_server, nats_server):
            server.stop()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        url, count, expected = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        import uvloop

        result = uvloop.run(run_clients(url, count, expected, limit_seconds=600))
        print(json.dumps(result), flush=True)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--alerts", type=int, default=100, help="alerts published per run")
    parser.add_argument("--rate", type=float, default=10.0, help="alerts per second (0: as fast as possible)")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
