"""A small local server that speaks Binance USD-M futures' real protocol, fed by recorded klines.

WebSocket (events.md): combined streams only on the routed path ``/market/stream?streams=a/b``
(any other path is accepted and then silent, as Binance's is), frames wrapped as
``{"stream": ..., "data": ...}``, JSON ``SUBSCRIBE``/``UNSUBSCRIBE`` acknowledged with
``{"result": null, "id": N}``, server pings, at most ``max_streams`` per connection and
``max_messages_per_second`` incoming messages (pongs count) - a breach is recorded in
``violations`` and the connection closed, as Binance does.

REST: ``/fapi/v1/exchangeInfo``, ``/fapi/v1/ticker/24hr``, ``/fapi/v1/klines`` (1m from the
recording, higher intervals aggregated from it, the forming kline last) with
``X-MBX-USED-WEIGHT-1M``; 429 with ``Retry-After`` past the weight limit, 418 while banned.

The market moves only when the test calls ``advance()``: the simulated clock steps one minute, every
subscriber gets the closed kline of the minute that ended (unless the test made it "never come")
and a first update of the new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from collector.bars import aggregate_bars
from collector.binance.rest import klines_weight
from collector.clock import SimulatedClock
from collector.replay.market import ReplayMarket, Track
from screener.db.bars import INTERVAL_MINUTES
from screener.events.models import MINUTE_MS, Candle

WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"


@dataclass
class WsClient:
    """One WebSocket connection as the server sees it."""

    ws: web.WebSocketResponse
    path: str
    routed: bool
    streams: set[str] = field(default_factory=set)
    max_streams: int = 0
    incoming: deque[float] = field(default_factory=deque)
    max_rate: int = 0
    pongs: int = 0
    stalled: bool = False
    closed: bool = False


@dataclass
class RestCall:
    """One REST request as the server saw it."""

    path: str
    params: dict[str, str]
    weight: int
    status: int
    used_weight: int


def _num(value: float) -> str:
    return repr(float(value))


def kline_payload(candle: Candle, closed: bool, interval: str = "1m") -> dict[str, Any]:
    """Return Binance's ``k`` object for ``candle``."""
    return {
        "t": candle.open_time, "T": candle.open_time + INTERVAL_MINUTES.get(interval, 1) * MINUTE_MS - 1,
        "s": candle.symbol, "i": interval, "f": 100, "L": 200,
        "o": _num(candle.open), "c": _num(candle.close), "h": _num(candle.high), "l": _num(candle.low),
        "v": _num(candle.volume), "n": candle.trades, "x": closed, "q": _num(candle.quote_volume),
        "V": _num(candle.taker_buy_volume), "Q": _num(candle.taker_buy_quote_volume), "B": "0",
    }  # fmt: skip


def forming_version(candle: Candle) -> Candle:
    """Return a first, partial update of ``candle``'s minute (what a stream pushes mid-minute)."""
    return candle.model_copy(
        update={
            "close": candle.open, "high": max(candle.open, candle.open), "low": candle.open,
            "volume": candle.volume / 3, "quote_volume": candle.quote_volume / 3, "trades": candle.trades // 3,
            "taker_buy_volume": 0.0, "taker_buy_quote_volume": 0.0, "closed": False,
        }
    )  # fmt: skip


class FakeBinance:
    """Binance's market streams and public REST on a local port, driven by a ``ReplayMarket``."""

    def __init__(
        self,
        market: ReplayMarket,
        clock: SimulatedClock,
        *,
        max_streams: int = 200,
        max_messages_per_second: int = 10,
        weight_limit: int = 2400,
        weight_window_seconds: float = 60.0,
        ping_interval: float | None = None,
        listed_at: dict[str, int] | None = None,
        seed: int = 7,
    ) -> None:
        self.market = market
        self.clock = clock
        self.tracks: dict[str, Track] = {t.name: t for t in market.tracks}
        self.trading: list[str] = sorted(self.tracks)
        self.max_streams = max_streams
        self.max_messages_per_second = max_messages_per_second
        self.weight_limit = weight_limit
        self.weight_window = weight_window_seconds
        self.ping_interval = ping_interval
        self.rng = random.Random(seed)
        self.clients: list[WsClient] = []
        self.violations: list[str] = []
        self.rest_calls: list[RestCall] = []
        self.never_closed: set[tuple[str, int]] = set()  # closed messages that never come
        self.overrides: dict[tuple[str, int], Candle] = {}  # e.g. an invalid candle the exchange sends
        self.listed_at: dict[str, int] = dict(listed_at or {})  # a new listing: no kline before this open time
        self.drop_closed_probability = 0.0
        self.malformed_sent = 0
        self._weight_window_id = -1
        self._weight_used = 0
        self._throttle_next = 0
        self._banned_until = 0.0
        self._retry_after = 1
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._pinger: asyncio.Task[None] | None = None
        self.port = 0

    # --- life cycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on a free local port."""
        app = web.Application()
        app.router.add_get("/fapi/v1/exchangeInfo", self._exchange_info)
        app.router.add_get("/fapi/v1/ticker/24hr", self._ticker)
        app.router.add_get("/fapi/v1/klines", self._klines)
        app.router.add_get("/{path:.*}", self._websocket)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await self._site.start()
        server = self._site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        if self.ping_interval:
            self._pinger = asyncio.create_task(self._ping_loop())

    async def stop(self) -> None:
        """Close every connection and stop listening."""
        if self._pinger is not None:
            self._pinger.cancel()
        for client in self.live_clients():
            await client.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def rest_url(self) -> str:
        """Return the REST base URL (``binance_rest_url``)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        """Return the WebSocket base URL (``binance_ws_url``)."""
        return f"ws://127.0.0.1:{self.port}"

    # --- test controls ---------------------------------------------------------------------------

    def live_clients(self) -> list[WsClient]:
        """Return the open connections."""
        return [c for c in self.clients if not c.closed]

    def candle(self, symbol: str, open_time: int) -> Candle | None:
        """Return the recorded candle of ``symbol`` at ``open_time`` (the truth the tests compare with)."""
        if open_time < self.listed_at.get(symbol, 0):
            return None
        if (symbol, open_time) in self.overrides:
            return self.overrides[(symbol, open_time)]
        candles = self.market.candles_between(self.tracks[symbol], open_time, open_time + MINUTE_MS)
        return candles[0] if candles else None

    async def advance(self, minutes: int = 1) -> None:
        """Step the market ``minutes`` minutes; push closed and forming klines to every subscriber."""
        for _ in range(minutes):
            closing = self.clock.now_ms() // MINUTE_MS * MINUTE_MS
            self.clock.set(closing + MINUTE_MS + 50)
            for client in self.live_clients():
                if client.stalled or not client.routed:
                    continue
                for stream in sorted(client.streams):
                    symbol = stream.split("@", 1)[0].upper()
                    if symbol not in self.tracks:
                        continue
                    await self._push(client, symbol, closing)

    async def _push(self, client: WsClient, symbol: str, closing: int) -> None:
        done = self.candle(symbol, closing)
        dropped = (symbol, closing) in self.never_closed or self.rng.random() < self.drop_closed_probability
        with contextlib.suppress(ConnectionError, RuntimeError):
            if done is not None and not dropped:
                await self._send_kline(client, done, closed=True)
            forming = self.candle(symbol, closing + MINUTE_MS)
            if forming is not None:
                await self._send_kline(client, forming_version(forming), closed=False)

    async def _send_kline(self, client: WsClient, candle: Candle, closed: bool) -> None:
        stream = f"{candle.symbol.lower()}@kline_1m"
        data = {"e": "kline", "E": self.clock.now_ms(), "s": candle.symbol, "k": kline_payload(candle, closed)}
        await client.ws.send_str(json.dumps({"stream": stream, "data": data}))

    async def disconnect(self, count: int | None = None) -> int:
        """Force-close ``count`` random open connections (all when None); return how many."""
        clients = self.live_clients()
        chosen = clients if count is None else self.rng.sample(clients, min(count, len(clients)))
        for client in chosen:
            client.closed = True
            await client.ws.close()
        return len(chosen)

    def stall(self, count: int = 1) -> None:
        """Stop sending anything on ``count`` open connections, which stay open (a dead peer)."""
        for client in self.live_clients()[:count]:
            client.stalled = True

    async def send_malformed(self) -> int:
        """Send a batch of broken frames on every open connection; return how many were sent."""
        frames = [
            "not json at all",
            json.dumps([1, 2, 3]),
            json.dumps({"stream": "x@kline_1m"}),
            json.dumps({"stream": "algousdt@aggTrade", "data": {"e": "aggTrade", "s": "ALGOUSDT"}}),
            json.dumps({"stream": "algousdt@kline_1m", "data": {"e": "kline", "E": 1, "s": "ALGOUSDT", "k": {"t": 1}}}),
        ]
        sent = 0
        for client in self.live_clients():
            for frame in frames:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await client.ws.send_str(frame)
                    sent += 1
            with contextlib.suppress(ConnectionError, RuntimeError):
                await client.ws.send_bytes(b"\x00\x01")
                sent += 1
        self.malformed_sent += sent
        return sent

    def throttle(self, requests: int, retry_after: int = 1) -> None:
        """Answer the next ``requests`` REST requests with 429 and ``Retry-After``."""
        self._throttle_next = requests
        self._retry_after = retry_after

    def ban(self, seconds: float) -> None:
        """Answer every REST request with 418 for ``seconds`` (an IP ban)."""
        self._banned_until = time.monotonic() + seconds

    async def ping_all(self) -> None:
        """Send a ping on every open connection that is not stalled."""
        for client in self.live_clients():
            if client.stalled:
                continue
            with contextlib.suppress(ConnectionError, RuntimeError):
                await client.ws.ping(b"binance")

    async def _ping_loop(self) -> None:
        assert self.ping_interval is not None
        while True:
            await asyncio.sleep(self.ping_interval)
            await self.ping_all()

    # --- WebSocket -------------------------------------------------------------------------------

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        routed = request.path == "/market/stream"
        client = WsClient(ws, request.path, routed)
        self.clients.append(client)
        query = request.query.get("streams", "")
        initial = {s for s in query.split("/") if s}
        if not self._add_streams(client, initial):
            await ws.close()
        try:
            async for msg in ws:
                if msg.type in (WSMsgType.TEXT, WSMsgType.PONG) and not self._count_message(client):
                    break
                if msg.type == WSMsgType.PONG:
                    client.pongs += 1
                elif msg.type == WSMsgType.PING:
                    await ws.pong(msg.data)
                elif msg.type == WSMsgType.TEXT:
                    await self._control(client, msg.data)
        finally:
            client.closed = True
        return ws

    def _count_message(self, client: WsClient) -> bool:
        now = time.monotonic()
        client.incoming.append(now)
        while client.incoming and now - client.incoming[0] >= 1.0:
            client.incoming.popleft()
        client.max_rate = max(client.max_rate, len(client.incoming))
        if len(client.incoming) > self.max_messages_per_second:
            self.violations.append(f"{len(client.incoming)} messages within 1s on {client.path}")
            return False
        return True

    def _add_streams(self, client: WsClient, streams: set[str]) -> bool:
        client.streams.update(streams)
        client.max_streams = max(client.max_streams, len(client.streams))
        if len(client.streams) > self.max_streams:
            self.violations.append(f"{len(client.streams)} streams on one connection (limit {self.max_streams})")
            return False
        return True

    async def _control(self, client: WsClient, text: str) -> None:
        try:
            request = json.loads(text)
            method, params, request_id = request["method"], request.get("params", []), request["id"]
        except (ValueError, KeyError, TypeError):
            await client.ws.send_str(json.dumps({"error": {"code": 2, "msg": "Invalid request"}, "id": None}))
            return
        if method == "SUBSCRIBE":
            if not self._add_streams(client, set(params)):
                await client.ws.close()
                return
        elif method == "UNSUBSCRIBE":
            client.streams.difference_update(params)
        elif method != "LIST_SUBSCRIPTIONS":
            await client.ws.send_str(json.dumps({"error": {"code": 1, "msg": "Unknown method"}, "id": request_id}))
            return
        result = sorted(client.streams) if method == "LIST_SUBSCRIPTIONS" else None
        await client.ws.send_str(json.dumps({"result": result, "id": request_id}))

    # --- REST ------------------------------------------------------------------------------------

    def _charge(self, request: web.Request, weight: int) -> web.Response | None:
        """Count ``weight``; return the 418/429 answer when the request is refused."""
        now = time.monotonic()
        window = int(time.time() // self.weight_window)  # Binance's window is the wall-clock minute
        if window != self._weight_window_id:
            self._weight_window_id, self._weight_used = window, 0
        params = dict(request.query)
        if now < self._banned_until:
            retry = max(1, math.ceil(self._banned_until - now))
            self.rest_calls.append(RestCall(request.path, params, weight, 418, self._weight_used))
            return web.json_response(
                {"code": -1003, "msg": "Way too many requests; IP banned."},
                status=418,
                headers={"Retry-After": str(retry), WEIGHT_HEADER: str(self._weight_used)},
            )
        self._weight_used += weight
        headers = {WEIGHT_HEADER: str(self._weight_used)}
        if self._throttle_next > 0 or self._weight_used > self.weight_limit:
            self._throttle_next = max(0, self._throttle_next - 1)
            if self._weight_used > self.weight_limit:
                self.violations.append(f"request weight {self._weight_used} > {self.weight_limit} in one window")
            self.rest_calls.append(RestCall(request.path, params, weight, 429, self._weight_used))
            return web.json_response(
                {"code": -1003, "msg": "Too many requests."},
                status=429,
                headers={**headers, "Retry-After": str(self._retry_after)},
            )
        self.rest_calls.append(RestCall(request.path, params, weight, 200, self._weight_used))
        return None

    def _weight_headers(self) -> dict[str, str]:
        return {WEIGHT_HEADER: str(self._weight_used)}

    async def _exchange_info(self, request: web.Request) -> web.Response:
        refused = self._charge(request, 1)
        if refused is not None:
            return refused
        symbols: list[dict[str, Any]] = [
            {"symbol": s, "pair": s, "contractType": "PERPETUAL", "status": "TRADING", "quoteAsset": "USDT"}
            for s in self.trading
        ]
        # Entries the collector must leave out: a quarterly, a coin not quoted in USDT, a settling one.
        symbols += [
            {"symbol": "BTCUSDT_261225", "contractType": "CURRENT_QUARTER", "status": "TRADING", "quoteAsset": "USDT"},
            {"symbol": "ETHBTC", "contractType": "PERPETUAL", "status": "TRADING", "quoteAsset": "BTC"},
            {"symbol": "OLDUSDT", "contractType": "PERPETUAL", "status": "SETTLING", "quoteAsset": "USDT"},
        ]
        body = {"timezone": "UTC", "serverTime": self.clock.now_ms(), "symbols": symbols}
        return web.json_response(body, headers=self._weight_headers())

    async def _ticker(self, request: web.Request) -> web.Response:
        refused = self._charge(request, 40 if "symbol" not in request.query else 1)
        if refused is not None:
            return refused
        now = self.clock.now_ms() // MINUTE_MS * MINUTE_MS
        rows = []
        for symbol in self.trading:
            _, values = self.market.track_arrays(self.tracks[symbol], now - 1440 * MINUTE_MS, now)
            rows.append({"symbol": symbol, "quoteVolume": _num(float(values[:, 5].sum())), "closeTime": now - 1})
        return web.json_response(rows, headers=self._weight_headers())

    async def _klines(self, request: web.Request) -> web.Response:
        query = request.query
        try:
            symbol, interval = query["symbol"], query["interval"]
            limit = int(query.get("limit", "500"))
        except (KeyError, ValueError):
            return web.json_response({"code": -1102, "msg": "Mandatory parameter missing."}, status=400)
        refused = self._charge(request, klines_weight(limit))
        if refused is not None:
            return refused
        if symbol not in self.tracks or (interval != "1m" and interval not in INTERVAL_MINUTES):
            return web.json_response({"code": -1121, "msg": "Invalid symbol."}, status=400)
        span = (1 if interval == "1m" else INTERVAL_MINUTES[interval]) * MINUTE_MS
        now = self.clock.now_ms()
        forming = now // span * span
        end = min(int(query.get("endTime", forming)), forming)
        start = int(query["startTime"]) if "startTime" in query else end - (limit - 1) * span
        start = max(start - start % span, self.market.start_ms, self.listed_at.get(symbol, 0))
        rows = self._rows(self.tracks[symbol], interval, span, start, end, now)
        if "startTime" in query:
            rows = rows[:limit]
        else:
            rows = rows[-limit:]
        return web.json_response(rows, headers=self._weight_headers())

    def _rows(self, track: Track, interval: str, span: int, start: int, end: int, now: int) -> list[list[Any]]:
        forming_open = now // span * span
        times, values = self.market.track_arrays(track, start, min(end + span, now // MINUTE_MS * MINUTE_MS))
        rows: list[list[Any]] = []
        if interval == "1m":
            # Closed minutes straight from the recording (``times`` stops before the forming one).
            for t, (o, h, lo, c, v, q, n, tv, tq) in zip(times.tolist(), values.tolist(), strict=True):
                if t > end:
                    break
                overridden = self.overrides.get((track.name, t))
                if overridden is not None:
                    rows.append(_row(overridden, span))
                    continue
                rows.append([
                    t, _num(o), _num(h), _num(lo), _num(c), _num(v), t + span - 1, _num(q), int(n),
                    _num(tv), _num(tq), "0",
                ])  # fmt: skip
            # Binance's last row is the forming kline: a partial version of the current minute.
            if end >= forming_open:
                current = self.market.candles_between(track, forming_open, forming_open + MINUTE_MS)
                if current:
                    rows.append(_row(forming_version(current[0]), span))
            return rows
        bars = aggregate_bars(track.name, interval, times, values, forming_open + span)
        for bar in bars:
            if start <= bar.open_time <= end:
                rows.append([
                    bar.open_time, _num(bar.open), _num(bar.high), _num(bar.low), _num(bar.close),
                    _num(bar.volume), bar.open_time + span - 1, _num(bar.quote_volume), 0, "0", "0", "0",
                ])  # fmt: skip
        return rows


def _row(candle: Candle, span: int) -> list[Any]:
    return [
        candle.open_time, _num(candle.open), _num(candle.high), _num(candle.low), _num(candle.close),
        _num(candle.volume), candle.open_time + span - 1, _num(candle.quote_volume), candle.trades,
        _num(candle.taker_buy_volume), _num(candle.taker_buy_quote_volume), "0",
    ]  # fmt: skip
