"""Rule-churn benchmark: the gateway's latency for everyone else while one user churns rules.

The gateway runs in its own process (``python -m screener.cli gateway``) on embedded NATS, Redis and
PostgreSQL, with the product's rate limit (300 requests per minute per user). A second process is
the hostile user: it fills its rule budget with expressions near the size caps, then creates and
deletes such rules (each with new text, so nothing is served from the compile cache) and writes its
preferences, as fast as the rate limit lets it (it waits out every 429). This process meanwhile
asks ``/health/live`` every 20 ms, as another client would, and prints the percentiles.

    .venv/bin/python bench/rule_churn.py                  # 30 s of churn
    .venv/bin/python bench/rule_churn.py --seconds 60

Target (issue 13): p99 of /health/live under 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import jwt

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from screener.embedded.servers import free_port, start_nats, start_postgres, start_redis  # noqa: E402

SECRET = "bench-secret-0123456789-0123456789-0123"
PROBE_INTERVAL = 0.02


def bearer(user: str) -> dict[str, str]:
    """Return the Authorization header of ``user``."""
    claims = {"sub": user, "aud": "authenticated", "exp": int(time.time()) + 3600}
    return {"Authorization": f"Bearer {jwt.encode(claims, SECRET, algorithm='HS256')}"}


def long_expression(seed: int) -> str:
    """Return an expression near the parser's node cap, unique to ``seed``."""
    return " and ".join(f"(c5m > {seed}.{i} or v1h < {i * 1000 + 1})" for i in range(55))


# ----------------------------------------------------------------------------------- churn process
async def churn(base: str, seconds: float) -> dict[str, int]:
    """Create and delete rules and write preferences as fast as the rate limit allows."""
    headers = bearer("churner")
    counts = {"created": 0, "deleted": 0, "preferences": 0, "limited": 0, "refused": 0}
    seed = 0
    deadline = time.monotonic() + seconds

    async def call(session: aiohttp.ClientSession, method: str, path: str, body: object) -> dict[str, object] | None:
        while time.monotonic() < deadline:
            async with session.request(method, base + path, json=body, headers=headers) as response:
                if response.status == 429:
                    counts["limited"] += 1
                    await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
                    continue
                data = await response.json()
                if response.status >= 400:
                    counts["refused"] += 1
                    return None
                return data if isinstance(data, dict) else None
        return None

    async with aiohttp.ClientSession() as session:
        mine: list[str] = []
        while time.monotonic() < deadline:
            seed += 1
            created = await call(
                session, "POST", "/api/alert-rules", {"name": f"c{seed}", "expression": long_expression(seed)}
            )
            if created is not None:
                counts["created"] += 1
                mine.append(str(created["id"]))
            full = created is None or len(mine) > 8  # the budget is full: make room
            if full and mine and await call(session, "DELETE", f"/api/alert-rules/{mine.pop(0)}", None) is not None:
                counts["deleted"] += 1
            if await call(session, "POST", "/settings", {"preferences": {"seed": seed}}) is not None:
                counts["preferences"] += 1
    return counts


# ----------------------------------------------------------------------------------- measuring side
async def probe(base: str, seconds: float) -> list[float]:
    """Return the latencies (ms) of /health/live asked every ``PROBE_INTERVAL`` for ``seconds``."""
    latencies: list[float] = []
    async with aiohttp.ClientSession() as session:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            started = time.perf_counter()
            async with session.get(base + "/health/live") as response:
                await response.read()
                assert response.status == 200
            latencies.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(PROBE_INTERVAL)
    return latencies


def percentile(values: list[float], fraction: float) -> float:
    """Return the ``fraction`` percentile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def wait_ready(base: str, process: asyncio.subprocess.Process) -> None:
    """Wait until the gateway answers /health/ready."""
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
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


async def main_async(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="screener-churn-"))
    servers = [start_nats(work / "nats"), start_redis(work / "redis"), start_postgres(work / "pg", durable=False)]
    nats_server, redis_server, pg_server = servers
    try:
        import asyncpg

        from functions.rules.store import seed_rules
        from screener.db.migrate import migrate

        conn = await asyncpg.connect(pg_server.url)
        await migrate(conn)
        await seed_rules(conn)
        await conn.close()
        port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SCREENER_")},
            "SCREENER_NATS_URL": nats_server.url,
            "SCREENER_REDIS_URL": redis_server.url,
            "SCREENER_POSTGRES_DSN": pg_server.url,
            "SCREENER_JWT_SECRET": SECRET,
            "SCREENER_GATEWAY_PORT": str(port),
            "SCREENER_LOG_LEVEL": "WARNING",
        }
        gateway = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "screener.cli", "gateway", "--port", str(port), env=env, cwd=REPO
        )
        base = f"http://127.0.0.1:{port}"
        try:
            await wait_ready(base, gateway)
            quiet = await probe(base, 3.0)
            load = await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--churn", base, str(args.seconds), stdout=asyncio.subprocess.PIPE, cwd=REPO
            )
            await asyncio.sleep(1.0)  # let the churn reach its pace
            busy = await probe(base, args.seconds - 2.0)
            output, _ = await load.communicate()
            counts = json.loads(output.decode().strip().splitlines()[-1])
        finally:
            gateway.terminate()
            await asyncio.wait_for(gateway.wait(), 30)
        print(f"churn over {args.seconds:g} s by one user: {counts}")
        print(f"{'/health/live':<14} {'probes':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        for label, values in (("quiet", quiet), ("during churn", busy)):
            print(
                f"{label:<14} {len(values):>7} {statistics.median(values):>8.2f} {percentile(values, 0.99):>8.2f} "
                f"{max(values):>8.2f}"
            )
        verdict = "met" if percentile(busy, 0.99) < 20.0 else "MISSED"
        print(f"target p99 < 20 ms during churn: {verdict}")
    finally:
        for server in reversed(servers):
            server.stop()


def main() -> None:
    """Run the benchmark (or, with ``--churn``, the churning user's process)."""
    if len(sys.argv) > 1 and sys.argv[1] == "--churn":
        counts = asyncio.run(churn(sys.argv[2], float(sys.argv[3])))
        print(json.dumps(counts), flush=True)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="how long one user churns rules")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
