"""The WebSocket endpoint ``/ws/alerts``: the raw-alert mode of the web client and protocol v2.

Raw mode (the web client's contract, api.md): every text frame the server sends is one alert object;
whatever the client sends (its ``{"type":"ping"}`` every 10 s, garbage, binary) is never answered.
Liveness is checked with protocol-level pings (aiohttp's heartbeat).

Protocol v2 (``?protocol=2`` or a first message ``{"type":"hello","protocol":2}``): every frame is an
envelope ``{"type": ...}``. The client sends ``hello``, ``ping`` (answered by ``pong``), ``subscribe`` /
``unsubscribe`` (``symbols``, ``rule_types``, ``alerts``, ``metrics``; answered by ``subscribed`` with
the resulting filters) and ``resume`` (``last_alert_id``; missed alerts are replayed from history,
then ``resumed`` says whether nothing was lost, then live alerts follow). The server sends ``alert``
(``data`` is the alert object, ``rule_name`` the product's label), ``metrics`` (``data`` is the metrics
object of api.md), ``pong``, ``hello``, ``subscribed``, ``resumed`` and ``error``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from typing import Any

from aiohttp import WSMsgType, web

from gateway.context import CLIENT_IP_KEY, GATEWAY, Gateway, identity
from gateway.errors import ApiError
from gateway.fanout import Client
from gateway.history import alerts_after
from gateway.ratelimit import ConnectionCounter, client_bucket
from gateway.validation import RULE_TYPE_RE, SYMBOL_RE, UnsafeJson, decode_json

log = logging.getLogger(__name__)

CLOSE_POLICY = 1008
CLOSE_INTERNAL = 1011
MAX_FRAME_BYTES = 16 * 1024
MAX_BAD_FRAMES = 20
MAX_FILTER_ITEMS = 1000
REPLAY_LIMIT = 1000
# Per-socket budgets: a steady message rate with a burst (the web client sends one ping per 10 s),
# and one resume per connection (a reconnecting client resumes once, on connect).
MESSAGES_PER_SECOND = 5.0
MESSAGE_BURST = 20
RESUMES_PER_CONNECTION = 1
KNOWN_SYMBOLS_SECONDS = 10.0


class TokenBucket:
    """Allow ``rate`` events per second on average and ``burst`` at once."""

    def __init__(self, rate: float, burst: int, clock: Any = time.monotonic) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._at = clock()

    def take(self) -> bool:
        """Spend one token; return False when none is left."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


class KnownSymbols:
    """The symbols the screener tracks (a filter may only name these), re-read every few seconds."""

    def __init__(self, max_age: float = KNOWN_SYMBOLS_SECONDS) -> None:
        self._max_age = max_age
        self._symbols: frozenset[str] = frozenset()
        self._read_at = -max_age

    async def get(self, gw: Gateway) -> frozenset[str]:
        """Return the tracked symbols (cached for ``max_age`` seconds)."""
        if time.monotonic() - self._read_at >= self._max_age:
            self._symbols = frozenset(await gw.metrics.tracked_symbols())
            self._read_at = time.monotonic()
        return self._symbols


_KNOWN_SYMBOLS = web.AppKey("ws_known_symbols", KnownSymbols)
_CONNECTIONS = web.AppKey("ws_connections", ConnectionCounter)


def setup(app: web.Application) -> None:
    """Give the app the WebSocket endpoint's caches and its count of open connections."""
    app[_KNOWN_SYMBOLS] = KnownSymbols()
    app[_CONNECTIONS] = ConnectionCounter()


# How far one connection's ping interval may stray from the setting (a fraction of it).
HEARTBEAT_JITTER = 0.2
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class FrameError(Exception):
    """A client message is malformed; the message says how (sent back as an ``error`` envelope)."""


async def alerts_socket(request: web.Request) -> web.WebSocketResponse:
    """Serve ``/ws/alerts``; 429 before the upgrade for a user or IP already at its connection cap."""
    gw = request.app[GATEWAY]
    # The rate limit bounds how fast connections open, not how many stay open: without a cap one
    # client could hold thousands of sockets, each with its send queue, for as long as it likes.
    user_id = identity(request).user_id
    bucket = client_bucket(request[CLIENT_IP_KEY])
    holder = f"user:{user_id}" if user_id is not None else f"ip:{bucket}"
    cap = gw.settings.ws_max_connections_per_client
    connections = request.app[_CONNECTIONS]
    if not connections.acquire(holder, cap):
        who = "this user" if user_id is not None else bucket
        raise ApiError(
            429,
            "too_many_connections",
            f"{who} has {cap} WebSocket connections open already; close one first",
            error=f"Too many open connections (at most {cap}).",
        )
    try:
        return await _upgrade(request, gw)
    finally:
        connections.release(holder)


def heartbeat_seconds(base: float) -> float:
    """Return one connection's ping interval: ``base`` within +-``HEARTBEAT_JITTER``.

    Sockets that connect together (a gateway restart, a load test) would otherwise ping together for
    ever: 10,000 pings in one loop iteration stall every alert for a few hundred milliseconds.
    """
    return base * random.uniform(1 - HEARTBEAT_JITTER, 1 + HEARTBEAT_JITTER)


async def _upgrade(request: web.Request, gw: Gateway) -> web.WebSocketResponse:
    # No permessage-deflate: compressing the same small frame once per client would multiply the
    # fan-out's CPU by the number of clients.
    ws = web.WebSocketResponse(
        heartbeat=heartbeat_seconds(gw.settings.ws_heartbeat_seconds),
        max_msg_size=MAX_FRAME_BYTES,
        autoping=True,
        compress=False,
    )
    await ws.prepare(request)
    # From here on the connection is a WebSocket: an error must end it with a close code, never with
    # an HTTP response written onto the socket (the json_errors middleware would do that).
    try:
        await _serve(request, gw, ws)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("WebSocket handler failed; closing the connection with %d", CLOSE_INTERNAL)
        if not ws.closed:
            await ws.close(code=CLOSE_INTERNAL, message=b"internal error (logged on the server)")
    return ws


async def _serve(request: web.Request, gw: Gateway, ws: web.WebSocketResponse) -> None:
    if gw.hub.draining:
        await ws.close(code=1001, message=b"server shutting down")
        return
    # client.md, decision 11: an invalid or expired token connects as anonymous (the public stream).
    # Closing with 4401 instead would make the web client reconnect every 2 s, forever. The identity
    # middleware has read ``?token=`` (or the Authorization header) already.
    user_id = identity(request).user_id
    protocol = request.query.get("protocol", "1")
    if protocol not in ("1", "2"):
        await ws.close(code=CLOSE_POLICY, message=b"parameter 'protocol' must be 1 or 2")
        return
    client = gw.hub.register(ws, request.transport, user_id, int(protocol))
    session = _Session(gw, client, request.app[_KNOWN_SYMBOLS])
    try:
        if client.protocol == 2:
            _hello(gw, client)
            last_id = request.query.get("last_alert_id")
            if last_id:
                await session.resume({"type": "resume", "last_alert_id": last_id})
        await session.read()
    finally:
        await gw.hub.unregister(client)


class _Session:
    """One connection's reader and its budgets."""

    def __init__(self, gw: Gateway, client: Client, known: KnownSymbols) -> None:
        self.gw = gw
        self.client = client
        self.known = known
        self.messages = TokenBucket(MESSAGES_PER_SECOND, MESSAGE_BURST)
        self.resumes_left = RESUMES_PER_CONNECTION

    async def close(self, code: int, reason: str) -> None:
        self.client.closing = True
        await self.client.ws.close(code=code, message=reason.encode()[:120])

    async def read(self) -> None:
        gw, client = self.gw, self.client
        first = True
        bad_frames = 0
        async for msg in client.ws:
            if msg.type == WSMsgType.TEXT:
                text = msg.data
            elif msg.type == WSMsgType.BINARY:
                text = None
            else:  # ERROR (e.g. a frame over the size cap): aiohttp has closed the connection already
                break
            if not self.messages.take():
                await self.close(CLOSE_POLICY, f"more than {MESSAGES_PER_SECOND:g} messages per second")
                break
            try:
                message = _decode(text)
                if client.protocol == 1:
                    # The web client's mode: read and ignore; only a first hello may switch to v2.
                    if first and message.get("type") == "hello" and message.get("protocol") == 2:
                        client.protocol = 2
                        _hello(gw, client)
                else:
                    await self.handle(message)
            except FrameError as exc:
                bad_frames += 1
                if client.protocol == 2:
                    error = {"code": "invalid_message", "message": str(exc)}
                    gw.hub.send_json(client, {"type": "error", "error": error})
                if bad_frames >= MAX_BAD_FRAMES:
                    await self.close(CLOSE_POLICY, "too many malformed messages")
                    break
            first = False

    async def handle(self, message: dict[str, Any]) -> None:
        gw, client = self.gw, self.client
        kind = message["type"]
        if kind == "ping":
            pong: dict[str, Any] = {"type": "pong"}
            if "id" in message and isinstance(message["id"], str | int) and len(str(message["id"])) <= 64:
                pong["id"] = message["id"]
            gw.hub.send_json(client, pong)
        elif kind == "hello":
            if message.get("protocol") != 2:
                raise FrameError("'protocol' must be 2")
            _hello(gw, client)
        elif kind in ("subscribe", "unsubscribe"):
            changed = await self.subscribe(message, add=kind == "subscribe")
            await gw.hub.follow_metrics_interest(client)
            gw.hub.send_json(client, {"type": "subscribed", "changed": changed, "subscription": _summary(client)})
        elif kind == "resume":
            await self.resume(message)
        else:
            raise FrameError(f"unknown message type {kind[:40]!r}")

    async def subscribe(self, message: dict[str, Any], *, add: bool) -> dict[str, Any]:
        unknown_fields = sorted(set(message) - {"type", "symbols", "rule_types", "alerts", "metrics"})
        if unknown_fields:
            raise FrameError(f"unknown field {unknown_fields[0][:40]!r}")
        symbols = _names(message, "symbols", SYMBOL_RE)
        rule_types = _names(message, "rule_types", RULE_TYPE_RE)
        # Only names the screener knows may enter a filter, so a filter never outgrows the universe.
        if symbols:
            known = await self.known.get(self.gw)
            unknown = sorted(symbols - known)
            if unknown:
                raise FrameError(f"'symbols' has a symbol the screener does not track: {unknown[0][:40]!r}")
        if rule_types:
            switches = self.gw.switches
            unknown = sorted(r for r in rule_types if not switches.visible_to(self.client.user_id, r))
            if unknown:
                raise FrameError(f"'rule_types' has an unknown rule {unknown[0][:64]!r}")
        _subscribe(self.client, message, symbols, rule_types, add=add)
        changed: dict[str, Any] = {"action": "subscribe" if add else "unsubscribe"}
        if symbols is not None:
            changed["symbols"] = sorted(symbols)
        if rule_types is not None:
            changed["rule_types"] = sorted(rule_types)
        return changed

    async def resume(self, message: dict[str, Any]) -> None:
        if self.resumes_left <= 0:
            raise FrameError(f"'resume' is allowed {RESUMES_PER_CONNECTION} time per connection; reconnect instead")
        last_id = message.get("last_alert_id")
        if not isinstance(last_id, str) or not UUID_RE.match(last_id):
            raise FrameError("'last_alert_id' must be an alert id (a UUID)")
        self.resumes_left -= 1
        await _resume(self.gw, self.client, last_id)


def _decode(text: str | None) -> dict[str, Any]:
    if text is None:
        raise FrameError("binary frames are not accepted; send JSON text")
    try:
        message = decode_json(text, "message")
    except UnsafeJson as exc:
        raise FrameError(str(exc)) from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise FrameError("message must be a JSON object with a string 'type'")
    return message


def _summary(client: Client) -> dict[str, Any]:
    """Return the subscription's shape with sizes, not contents, so a reply never grows with it."""
    return client.filters.summary()


def _hello(gw: Gateway, client: Client) -> None:
    gw.hub.send_json(
        client,
        {"type": "hello", "protocol": 2, "user_id": client.user_id, "subscription": _summary(client)},
    )


def _names(message: dict[str, Any], key: str, pattern: re.Pattern[str]) -> set[str] | None:
    if key not in message or message[key] is None:
        return None
    value = message[key]
    if not isinstance(value, list) or len(value) > MAX_FILTER_ITEMS or not all(isinstance(v, str) for v in value):
        raise FrameError(f"'{key}' must be a list of at most {MAX_FILTER_ITEMS} strings")
    cleaned = {v.upper() if key == "symbols" else v for v in value}
    bad = sorted(v for v in cleaned if not pattern.match(v))
    if bad:
        raise FrameError(f"'{key}' has an invalid entry {bad[0][:40]!r}")
    return cleaned


def _flag(message: dict[str, Any], key: str) -> bool | None:
    if key not in message:
        return None
    if not isinstance(message[key], bool):
        raise FrameError(f"'{key}' must be true or false")
    return bool(message[key])


def _subscribe(
    client: Client, message: dict[str, Any], symbols: set[str] | None, rule_types: set[str] | None, *, add: bool
) -> None:
    alerts, metrics = _flag(message, "alerts"), _flag(message, "metrics")
    f = client.filters
    if add:
        if symbols is not None:
            f.symbols = (f.symbols or set()) | symbols
            f.excluded_symbols -= symbols
            if f.metrics or metrics:
                f.metric_symbols = (f.metric_symbols or set()) | symbols
        if rule_types is not None:
            f.rule_types = (f.rule_types or set()) | rule_types
            f.excluded_rule_types -= rule_types
        if alerts is not None:
            f.alerts = alerts
        if metrics is not None:
            f.metrics = metrics
            if metrics and symbols is None:
                f.metric_symbols = None
        return
    if symbols is None and rule_types is None and alerts is None and metrics is None:
        client.filters = type(f)(alerts=False)  # a bare unsubscribe stops everything
        return
    if symbols is not None:
        if f.symbols is None:
            f.excluded_symbols |= symbols
        else:
            f.symbols -= symbols
        if f.metric_symbols is not None:
            f.metric_symbols -= symbols
    if rule_types is not None:
        if f.rule_types is None:
            f.excluded_rule_types |= rule_types
        else:
            f.rule_types -= rule_types
    if alerts:
        f.alerts = False
    if metrics:
        f.metrics = False


async def _resume(gw: Gateway, client: Client, last_id: str) -> None:
    client.replaying = True
    client.held = []
    try:
        replay = await alerts_after(gw.pool, last_id, user_id=client.user_id, limit=REPLAY_LIMIT)
        sent_ids: set[str] = set()
        for alert in replay.alerts:
            if gw.switches.delivers(client.user_id, alert) and client.filters.wants_alert(alert):
                gw.hub.send(client, gw.hub.alert_frames(alert)[1])
                sent_ids.add(alert.id)
        complete = replay.found and not replay.truncated
        resumed: dict[str, Any] = {
            "type": "resumed",
            "last_alert_id": last_id,
            "replayed": len(sent_ids),
            "complete": complete,
        }
        if not replay.found:
            resumed["reason"] = "last_alert_id is not in the alert history (unknown or past retention)"
        elif replay.truncated:
            resumed["reason"] = f"more than {REPLAY_LIMIT} alerts were missed; only the oldest were replayed"
        gw.hub.send_json(client, resumed)
        # Live alerts that arrived during the replay follow it, without duplicates.
        for alert, frame in client.held:
            if alert.id not in sent_ids:
                gw.hub.send(client, frame)
    finally:
        client.replaying = False
        client.held = []
