"""The collector's health: ready once it streams, alive while closed candles keep coming, over HTTP."""

from __future__ import annotations

import aiohttp

from collector.emitter import EmitterStats
from collector.health import CollectorHealth
from screener.embedded.servers import free_port
from screener.health import serve_health


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_starting_is_alive_streaming_is_ready_and_silence_beyond_the_limit_is_not_alive() -> None:
    clock, stats = Clock(), EmitterStats()
    health = CollectorHealth(stats, stale_seconds=180, clock=clock)
    clock.now += 3600  # an hour of warm-up or backfill: still alive, not ready
    assert health.alive()[0] and not health.ready
    health.streaming()
    assert health.ready
    clock.now += 179
    assert health.alive()[0]  # no candle yet, but the limit counts from when it began streaming
    clock.now += 2
    alive, reason = health.alive()
    assert not alive and "no closed candle published for 181 s" in reason
    stats.last_closed_at = clock.now  # a minute's candles went out
    assert health.alive() == (True, "last closed candle 0 s ago")
    assert health.counters()["seconds_since_last_closed"] == 0


async def test_the_endpoint_answers_the_probes_with_status_codes() -> None:
    clock, stats = Clock(), EmitterStats()
    health = CollectorHealth(stats, stale_seconds=60, clock=clock)
    port = free_port()
    runner = await serve_health(health, port, host="127.0.0.1")
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/readyz") as response:
                assert response.status == 503
            health.streaming()
            stats.closed, stats.last_closed_at = 650, clock.now
            async with http.get(f"{base}/readyz") as response:
                assert response.status == 200
            async with http.get(f"{base}/stats") as response:
                assert (await response.json())["closed"] == 650
            clock.now += 61
            async with http.get(f"{base}/healthz") as response:
                body = await response.json()
                assert response.status == 503 and body["status"] == "stalled" and body["process"] == "collector"
    finally:
        await runner.cleanup()
