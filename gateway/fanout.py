"""One NATS subscription per gateway process, fanned out to every WebSocket client.

The older Go backend opened a NATS subscription per client; here one core subscription on the alert
subjects feeds every connection, and one on the computed-metrics subjects while any protocol-2 client
asked for metrics (a minute brings one metrics event per symbol, 650 messages that most gateways, whose
clients are the web client's raw mode, would only read to drop). Each event is serialized and
framed once (server frames are unmasked, so the same bytes suit every client) and written to each
client's transport. A client whose socket does not keep up collects frames in its own bounded send
queue (``ws_send_queue`` frames beyond a 64 KiB socket buffer); when that is full the client is closed
with 4008 and a reason. The broadcast never waits for any client, so nobody else notices.

Alerts reach the clients in passes (``Hub._fan_out_alerts``): a pass hands each client, in one write,
every alert it has not had yet, and looks at NATS every ``PASS_CHUNK`` clients. A pass over 10,000
loopback sockets takes about 100 ms (the ``send`` system call), so an alert that arrives during one
joins it: the clients still ahead get it in this pass, those already passed in the next one, and no
client waits more than about one pass for any alert (written as one flush per batch of alerts, an
alert arriving mid-flush waited for the whole flush before its own began: up to two).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import struct
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription
from nats.errors import Error as NatsError

from gateway.prom import Registry
from gateway.switches import RuleSwitches
from gateway.views import metrics_view
from screener.events.envelope import InvalidEvent, parse_data
from screener.events.models import Alert, MetricsSnapshot
from screener.events.nats_binding import from_message
from screener.names import SUBJECT_PREFIX_BY_TYPE, TYPE_ALERT_TRIGGERED, TYPE_METRICS_COMPUTED
from screener.tracing import start_event_span

log = logging.getLogger(__name__)

ALERT_SUBJECTS = f"{SUBJECT_PREFIX_BY_TYPE[TYPE_ALERT_TRIGGERED]}.>"
METRICS_SUBJECTS = f"{SUBJECT_PREFIX_BY_TYPE[TYPE_METRICS_COMPUTED]}.>"
CLOSE_SLOW = 4008
CLOSE_GOING_AWAY = 1001
WRITE_BUFFER_LIMIT = 64 * 1024
BACKLOG_POLL_SECONDS = 0.005
# Metrics events coalesced into one write per client at most; alerts read from NATS between two
# chances for the fan-out and HTTP requests to run.
MAX_BATCH = 64
# Clients a fan-out pass writes to between two looks at the event loop (new alerts, HTTP requests).
PASS_CHUNK = 256


def text_frame(text: str) -> bytes:
    """Return ``text`` as one unmasked WebSocket text frame (RFC 6455, section 5.2)."""
    payload = text.encode()
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x81, size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x81, 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 127, size)
    return header + payload


@dataclass
class Filters:
    """A protocol-v2 client's subscription: which alerts and metrics it wants (None = all)."""

    alerts: bool = True
    symbols: set[str] | None = None
    excluded_symbols: set[str] = field(default_factory=set)
    rule_types: set[str] | None = None
    excluded_rule_types: set[str] = field(default_factory=set)
    metrics: bool = False
    metric_symbols: set[str] | None = None

    def wants_alert(self, alert: Alert) -> bool:
        """Return whether this subscription covers ``alert``."""
        if not self.alerts or alert.symbol in self.excluded_symbols or alert.rule_type in self.excluded_rule_types:
            return False
        if self.symbols is not None and alert.symbol not in self.symbols:
            return False
        return self.rule_types is None or alert.rule_type in self.rule_types

    def wants_metrics(self, symbol: str) -> bool:
        """Return whether this subscription covers metrics of ``symbol``."""
        return self.metrics and (self.metric_symbols is None or symbol in self.metric_symbols)

    def summary(self) -> dict[str, Any]:
        """Return the subscription's flags and the size of each set (None = everything)."""
        return {
            "alerts": self.alerts,
            "symbols": len(self.symbols) if self.symbols is not None else None,
            "excluded_symbols": len(self.excluded_symbols),
            "rule_types": len(self.rule_types) if self.rule_types is not None else None,
            "excluded_rule_types": len(self.excluded_rule_types),
            "metrics": self.metrics,
            "metric_symbols": len(self.metric_symbols) if self.metric_symbols is not None else None,
        }


class Client:
    """One WebSocket connection: its identity, protocol, filters and bounded send queue."""

    def __init__(
        self, ws: web.WebSocketResponse, transport: asyncio.Transport | None, user_id: str | None, protocol: int
    ) -> None:
        self.ws = ws
        self.transport = transport
        self.user_id = user_id
        self.protocol = protocol
        self.filters = Filters()
        self.backlog: deque[bytes] = deque()
        self.flusher: asyncio.Task[None] | None = None
        self.closing = False
        # While a resume replays history, live alerts wait here so they follow the replay in order.
        self.replaying = False
        self.held: list[tuple[Alert, bytes]] = []
        # The sequence number of the newest alert this client was handed (or passed over: not for it).
        self.alert_seq = 0


@dataclass(frozen=True)
class _FramedAlert:
    """An alert with its frames, serialised once for every client; ``seq`` counts alerts in this process."""

    seq: int
    alert: Alert
    raw: bytes
    envelope: bytes


class Hub:
    """Own the process's NATS subscriptions and every connected client."""

    def __init__(self, nc: NATS, switches: RuleSwitches, registry: Registry, queue_size: int) -> None:
        self._nc = nc
        self._switches = switches
        self._registry = registry
        self._queue_size = queue_size
        self.clients: set[Client] = set()
        self._subscriptions: list[NatsSubscription] = []
        self._metrics_subscription: NatsSubscription | None = None
        # The protocol-2 clients whose filters ask for metrics (``follow_metrics_interest``).
        self._metrics_watchers: set[Client] = set()
        self._metrics_lock = asyncio.Lock()
        self._closers: set[asyncio.Task[bool]] = set()
        # The alerts some client has not been handed yet, oldest first, and the newest one's number.
        self._alerts: deque[_FramedAlert] = deque()
        self._alert_seq = 0
        self._alerts_since_yield = 0
        self._fan_out: asyncio.Task[None] | None = None
        self._pending_metrics: list[Msg] = []
        self._flush_scheduled = False
        self.draining = False
        self.last_alert_at: float | None = None
        registry.add_gauge("screener_gateway_ws_connections", "Open WebSocket connections by protocol.", self._gauge)

    def _gauge(self) -> dict[tuple[tuple[str, str], ...], float]:
        counts: dict[tuple[tuple[str, str], ...], float] = {(("protocol", "1"),): 0.0, (("protocol", "2"),): 0.0}
        for client in self.clients:
            counts[(("protocol", str(client.protocol)),)] += 1
        return counts

    async def start(self) -> None:
        """Subscribe once to the alert subjects (metrics: ``follow_metrics_interest``)."""
        self._subscriptions.append(await self._nc.subscribe(ALERT_SUBJECTS, cb=self._on_alert))

    @property
    def reads_metrics(self) -> bool:
        """Whether this process is subscribed to the metrics subjects now."""
        return self._metrics_subscription is not None

    async def follow_metrics_interest(self, client: Client) -> None:
        """Note whether ``client`` wants metrics; subscribe to them while any client does, unsubscribe after the last.

        Called after every change of a client's filters and when a client leaves (constant time: a
        set of watchers, not a scan of every socket per subscribe message). The lock keeps two such
        calls from subscribing twice (each await is a point where another call can run).
        """
        if client.protocol == 2 and client.filters.metrics and client in self.clients:
            self._metrics_watchers.add(client)
        else:
            self._metrics_watchers.discard(client)
        async with self._metrics_lock:
            wanted = not self.draining and bool(self._metrics_watchers)
            if wanted and self._metrics_subscription is None:
                try:
                    self._metrics_subscription = await self._nc.subscribe(METRICS_SUBJECTS, cb=self._on_metrics)
                except NatsError as exc:  # the connection is closed: the next change of filters tries again
                    log.warning("subscribing to metrics failed: %s", exc)
            elif not wanted and self._metrics_subscription is not None:
                subscription, self._metrics_subscription = self._metrics_subscription, None
                await _unsubscribe(subscription)

    # --- clients --------------------------------------------------------------------------------
    def register(
        self, ws: web.WebSocketResponse, transport: asyncio.Transport | None, user_id: str | None, protocol: int
    ) -> Client:
        """Add a prepared connection."""
        client = Client(ws, transport, user_id, protocol)
        client.alert_seq = self._alert_seq  # live alerts from now on (a resume replays older ones)
        self.clients.add(client)
        return client

    async def unregister(self, client: Client) -> None:
        """Remove a connection whose reader has ended."""
        self.clients.discard(client)
        client.closing = True
        if client.flusher is not None and not client.flusher.done():
            client.flusher.cancel()
            await asyncio.gather(client.flusher, return_exceptions=True)
        if client in self._metrics_watchers:
            await self.follow_metrics_interest(client)

    def send(self, client: Client, frame: bytes) -> None:
        """Write a framed message to ``client`` now, or queue it; close the client with 4008 when full."""
        transport = client.transport
        if client.closing or transport is None or transport.is_closing():
            return
        if not client.backlog and transport.get_write_buffer_size() <= WRITE_BUFFER_LIMIT:
            transport.write(frame)
            return
        if len(client.backlog) >= self._queue_size:
            self._registry.slow_closes.inc()
            self.close(client, CLOSE_SLOW, f"send queue full ({self._queue_size} frames): client too slow")
            return
        client.backlog.append(frame)
        if client.flusher is None or client.flusher.done():
            client.flusher = asyncio.create_task(self._feed_backlog(client), name="gateway-ws-flush")

    def send_json(self, client: Client, message: dict[str, Any]) -> None:
        """Send a JSON message to ``client``."""
        self._registry.frames_sent.inc(type=str(message.get("type", "?")))
        self.send(client, text_frame(json.dumps(message, separators=(",", ":"))))

    def close(self, client: Client, code: int, reason: str) -> None:
        """Close ``client`` in the background (never blocks the caller)."""
        if client.closing:
            return
        client.closing = True
        client.backlog.clear()
        if client.flusher is not None:
            client.flusher.cancel()
        task = asyncio.create_task(client.ws.close(code=code, message=reason.encode()[:120]))
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)

    async def _feed_backlog(self, client: Client) -> None:
        """Feed a lagging client's queue to its socket as the socket drains."""
        while client.backlog:
            transport = client.transport
            if client.closing or transport is None or transport.is_closing():
                return
            if transport.get_write_buffer_size() > WRITE_BUFFER_LIMIT:
                # Only lagging clients get here; a short poll keeps aiohttp's protocol internals untouched.
                await asyncio.sleep(BACKLOG_POLL_SECONDS)
                continue
            transport.write(client.backlog.popleft())

    # --- events ---------------------------------------------------------------------------------
    async def _on_alert(self, msg: Msg) -> None:
        try:
            event = from_message(msg.headers, msg.data)
            alert = parse_data(event, Alert)
        except InvalidEvent as exc:
            self._registry.invalid_events.inc(subject="alerts")
            log.warning("ignoring an undecodable alert on %s: %s", msg.subject, exc)
            return
        self._registry.alerts_received.inc()
        # The last hop of the candle's trace: the alert's frames queued for every WebSocket client.
        span, _ = start_event_span(event, "gateway.fanout")
        try:
            sent = self.broadcast_alert(alert)
        finally:
            span.end()
        if sent:
            await asyncio.sleep(0)  # a long burst still lets HTTP requests and flushers run

    async def _on_metrics(self, msg: Msg) -> None:
        self._registry.metrics_received.inc()
        # Decoded at flush time, and only when a client wants metrics: a minute brings one event per
        # symbol, and most connections (the web client's raw mode) never ask for them.
        self._pending_metrics.append(msg)
        if self._schedule_flush():
            await asyncio.sleep(0)

    def _decode_metrics(self, msg: Msg) -> MetricsSnapshot | None:
        try:
            return parse_data(from_message(msg.headers, msg.data), MetricsSnapshot)
        except InvalidEvent as exc:
            self._registry.invalid_events.inc(subject="metrics")
            log.warning("ignoring undecodable metrics on %s: %s", msg.subject, exc)
            return None

    def alert_frames(self, alert: Alert) -> tuple[bytes, bytes]:
        """Return the raw frame (api.md's alert object) and the protocol-v2 envelope frame of ``alert``."""
        view = alert.public_view()
        raw = json.dumps(view, separators=(",", ":"))
        envelope = {"type": "alert", "rule_name": self._switches.name_of(alert.rule_type), "data": view}
        return text_frame(raw), text_frame(json.dumps(envelope, separators=(",", ":")))

    def broadcast_alert(self, alert: Alert) -> bool:
        """Queue ``alert`` for every client its audience, switches and filters include.

        Returns True every ``MAX_BATCH`` alerts: a burst read from NATS without suspending should then
        let the fan-out and HTTP requests run.
        """
        self.last_alert_at = time.time()
        self._alert_seq += 1
        self._alerts.append(_FramedAlert(self._alert_seq, alert, *self.alert_frames(alert)))
        if self._fan_out is None or self._fan_out.done():
            self._fan_out = asyncio.create_task(self._fan_out_alerts(), name="gateway-fan-out")
        self._alerts_since_yield += 1
        if self._alerts_since_yield >= MAX_BATCH:
            self._alerts_since_yield = 0
            return True
        return False

    async def _fan_out_alerts(self) -> None:
        """Hand every client the alerts it has not had, pass after pass, until none is behind."""
        while True:
            self._forget_handed_alerts()
            head = self._alert_seq
            behind = [client for client in self.clients if client.alert_seq < head]
            if not behind:
                return
            started = time.perf_counter()
            # Per (user, first, last alert): the alerts that user gets, and their raw frames joined, so
            # audience and switches are decided once per user, not per socket.
            wanted: dict[tuple[str | None, int, int], tuple[list[_FramedAlert], bytes]] = {}
            sent = 0
            for at in range(0, len(behind), PASS_CHUNK):
                for client in behind[at : at + PASS_CHUNK]:
                    sent += self._hand_alerts(client, wanted)
                await asyncio.sleep(0)  # new alerts join this pass for the clients still ahead
            self._registry.fanout.observe(time.perf_counter() - started)
            self._registry.frames_sent.inc(sent, type="alert")

    def _hand_alerts(
        self, client: Client, wanted: dict[tuple[str | None, int, int], tuple[list[_FramedAlert], bytes]]
    ) -> int:
        """Write to ``client`` every alert after the last it was handed that is for it; return how many."""
        first, head = client.alert_seq, self._alert_seq
        client.alert_seq = head
        if client.closing:
            return 0
        key = (client.user_id, first, head)
        for_user = wanted.get(key)
        if for_user is None:
            alerts = [f for f in self._alerts_after(first) if self._switches.delivers(client.user_id, f.alert)]
            for_user = wanted[key] = (alerts, b"".join(f.raw for f in alerts))
        alerts, raw = for_user
        if not alerts:
            return 0
        if client.protocol != 2:
            self._write(client, raw)
            return len(alerts)
        parts = []
        for framed in alerts:
            if not client.filters.wants_alert(framed.alert):
                continue
            if client.replaying:
                client.held.append((framed.alert, framed.envelope))
                continue
            parts.append(framed.envelope)
        if parts:
            self._write(client, b"".join(parts))
        return len(parts)

    def _alerts_after(self, seq: int) -> list[_FramedAlert]:
        """Return the alerts numbered after ``seq``, oldest first."""
        if not self._alerts:
            return []
        skip = max(0, seq + 1 - self._alerts[0].seq)
        return list(itertools.islice(self._alerts, skip, None))

    def _forget_handed_alerts(self) -> None:
        """Drop the alerts every client has been handed."""
        handed = min((client.alert_seq for client in self.clients), default=self._alert_seq)
        while self._alerts and self._alerts[0].seq <= handed:
            self._alerts.popleft()

    def _schedule_flush(self) -> bool:
        if len(self._pending_metrics) >= MAX_BATCH:
            self.flush()
            return True
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)
        return False

    def flush(self) -> None:
        """Hand every pending metrics event to the clients that want it."""
        self._flush_scheduled = False
        metrics, self._pending_metrics = self._pending_metrics, []
        if metrics:
            self._flush_metrics(metrics)

    def _flush_metrics(self, messages: list[Msg]) -> None:
        watchers = list(self._metrics_watchers)
        if not watchers:
            return
        snapshots = [s for s in map(self._decode_metrics, messages) if s is not None]
        # Framed once each, when a first client wants it. Keyed by position, not symbol: one flush may
        # hold two snapshots of a symbol (a provisional one and the closed minute).
        frames: dict[int, bytes] = {}
        sent = 0
        for client in watchers:
            parts = []
            for index, snapshot in enumerate(snapshots):
                if not client.filters.wants_metrics(snapshot.symbol):
                    continue
                frame = frames.get(index)
                if frame is None:
                    message = {"type": "metrics", "data": metrics_view(snapshot)}
                    frame = frames[index] = text_frame(json.dumps(message, separators=(",", ":")))
                parts.append(frame)
            if parts:
                self._write(client, b"".join(parts))
                sent += len(parts)
        self._registry.frames_sent.inc(sent, type="metrics")

    def _write(self, client: Client, data: bytes) -> None:
        transport = client.transport
        # The common case inline: an idle, healthy socket takes the bytes at once.
        if (
            not client.backlog
            and not client.closing
            and transport is not None
            and not transport.is_closing()
            and transport.get_write_buffer_size() <= WRITE_BUFFER_LIMIT
        ):
            transport.write(data)
        else:
            self.send(client, data)

    # --- shutdown -------------------------------------------------------------------------------
    async def drain(self, grace_seconds: float = 5.0) -> None:
        """Stop reading NATS, flush each client's queue, then close every connection with 1001."""
        if self.draining:
            return
        self.draining = True
        if self._metrics_subscription is not None:
            self._subscriptions.append(self._metrics_subscription)
            self._metrics_subscription = None
        for subscription in self._subscriptions:
            await _unsubscribe(subscription)
        self._subscriptions.clear()
        self.flush()
        if self._fan_out is not None and not self._fan_out.done():
            await asyncio.wait([self._fan_out], timeout=grace_seconds)
        flushers = [c.flusher for c in self.clients if c.flusher is not None and not c.flusher.done()]
        if flushers:
            await asyncio.wait(flushers, timeout=grace_seconds)
        for client in list(self.clients):
            self.close(client, CLOSE_GOING_AWAY, "server shutting down")
        if self._closers:
            await asyncio.wait(list(self._closers), timeout=grace_seconds)


async def _unsubscribe(subscription: NatsSubscription) -> None:
    try:
        await subscription.unsubscribe()
    except Exception as exc:  # the connection may already be closed (shutdown, NATS away)
        log.debug("unsubscribe: %s", exc)
