"""WebSocket pings are spread in time: sockets that connected together do not ping together for ever.

aiohttp rounds timers above its ``timeout_ceil_threshold`` up to whole seconds, and every socket had
the same interval: 10,000 sockets of a reconnect storm pinged in one loop iteration every 20 s, and
each such burst held every alert back for some 300 ms (bench/fanout.py --rate 2: p99 822-922 ms
before, 210-419 ms after).
"""

from __future__ import annotations

from aiohttp import web

from gateway.server import GatewayRunner
from gateway.ws import HEARTBEAT_JITTER, heartbeat_seconds
from screener.config import load_settings


def test_each_socket_pings_at_its_own_interval_around_the_setting() -> None:
    intervals = [heartbeat_seconds(20.0) for _ in range(1000)]
    assert all(20.0 * (1 - HEARTBEAT_JITTER) <= i <= 20.0 * (1 + HEARTBEAT_JITTER) for i in intervals)
    assert max(intervals) - min(intervals) > 20.0 * HEARTBEAT_JITTER  # spread, not one value


def test_the_gateway_does_not_round_heartbeat_timers_to_whole_seconds() -> None:
    longest = load_settings({}).ws_heartbeat_seconds * (1 + HEARTBEAT_JITTER)
    runner = GatewayRunner(web.Application())
    assert runner._kwargs["timeout_ceil_threshold"] > longest
