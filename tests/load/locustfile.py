"""Load test of the gateway: REST users (the web client's calls) and WebSocket users (live alerts).

Start a gateway whose rate limit and connection cap do not throttle the load generator (every user
comes from one IP):

    SCREENER_RATE_LIMIT_PER_MINUTE=100000000 SCREENER_WS_MAX_CONNECTIONS_PER_CLIENT=100000000 \
        SCREENER_MAX_CONNECTIONS_PER_CLIENT=100000000 screener up   # or: screener gateway, with URLs set

then, headless with CSV output (``<prefix>_stats.csv``, ``_stats_history.csv``, ``_failures.csv``):

    .venv/bin/locust -f tests/load/locustfile.py --headless --host http://127.0.0.1:8080 \\
        -u 300 -r 50 -t 60s --csv bench/results/locust --only-summary

``RestUser`` and ``WebSocketUser`` share the users 4:1 by default. Each REST user waits 0.5-1.5 s between
calls, so 300 users make roughly 250 requests per second.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

import gevent
import websocket
from locust import HttpUser, User, between, events, task

FALLBACK_SYMBOLS = ["BTCUSDT", "ETHUSDT", "LINKUSDT", "AVAXUSDT"]
INTERVALS = ["1m", "5m", "15m", "1h", "4h", "1d"]
_symbols: list[str] = []


@events.test_start.add_listener
def _discover_symbols(environment: Any, **_: Any) -> None:
    """Read the tracked symbols once, so requests hit real data."""
    import urllib.request

    host = environment.host or "http://127.0.0.1:8080"
    try:
        with urllib.request.urlopen(f"{host}/api/symbols", timeout=10) as response:
            _symbols[:] = [row["symbol"] for row in json.load(response)] or FALLBACK_SYMBOLS
    except OSError:
        _symbols[:] = FALLBACK_SYMBOLS


def _symbol() -> str:
    return random.choice(_symbols or FALLBACK_SYMBOLS)


class RestUser(HttpUser):
    """A trader's browser: the screener table, history, charts, rules and tickers."""

    weight = 4
    wait_time = between(0.5, 1.5)

    @task(5)
    def all_metrics(self) -> None:
        self.client.get("/api/metrics/", name="/api/metrics/")

    @task(3)
    def one_symbol(self) -> None:
        self.client.get(f"/api/metrics/{_symbol()}", name="/api/metrics/{symbol}")

    @task(3)
    def alert_history(self) -> None:
        self.client.get("/api/alerts?limit=100", name="/api/alerts")

    @task(2)
    def alerts_of_a_symbol(self) -> None:
        self.client.get(f"/api/alerts?symbol={_symbol()}&limit=50", name="/api/alerts?symbol")

    @task(3)
    def klines(self) -> None:
        interval = random.choice(INTERVALS)
        self.client.get(f"/api/klines?symbol={_symbol()}&interval={interval}&limit=500", name="/api/klines")

    @task(1)
    def tickers(self) -> None:
        self.client.get("/api/tickers", name="/api/tickers")

    @task(1)
    def rules(self) -> None:
        self.client.get("/api/alert-rules", name="/api/alert-rules")

    @task(1)
    def health(self) -> None:
        self.client.get("/api/health", name="/api/health")


class WebSocketUser(User):
    """A dashboard left open: one raw-mode socket, receiving alerts and pinging every 10 s like the web client."""

    weight = 1
    wait_time = between(10, 10)

    def on_start(self) -> None:
        url = (self.host or "http://127.0.0.1:8080").replace("http", "ws", 1) + "/ws/alerts"
        started = time.perf_counter()
        try:
            self.ws = websocket.create_connection(url, timeout=10)
        except Exception as exc:
            self._fire("connect", started, 0, exc)
            raise
        self._fire("connect", started, 0, None)
        self.ws.settimeout(None)  # alerts may be minutes apart: wait for them without a read timeout
        self.reader = gevent.spawn(self._receive)

    def _fire(self, name: str, started: float, length: int, exc: BaseException | None) -> None:
        self.environment.events.request.fire(
            request_type="WS",
            name=name,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=length,
            exception=exc,
            context={},
        )

    def _receive(self) -> None:
        while True:
            try:
                frame = self.ws.recv()
            except Exception as exc:
                self._fire("closed", time.perf_counter(), 0, exc)
                return
            started = time.perf_counter()
            try:
                alert = json.loads(frame)
                problem = None if isinstance(alert, dict) and "rule_type" in alert else ValueError("not an alert")
            except ValueError as exc:
                problem = exc
            # Raw mode must carry alerts only (api.md); anything else counts as a failure.
            self._fire("alert", started, len(frame), problem)

    @task
    def ping(self) -> None:
        started = time.perf_counter()
        try:
            self.ws.send(json.dumps({"type": "ping"}))
        except Exception as exc:
            self._fire("ping", started, 0, exc)
            raise
        self._fire("ping", started, 0, None)

    def on_stop(self) -> None:
        self.reader.kill()
        self.ws.close()
