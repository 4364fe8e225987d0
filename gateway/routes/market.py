"""Market data from our own candles: ``/api/klines``, ``/api/tickers``, ``/api/symbols``."""

from __future__ import annotations

import time

import orjson
from aiohttp import web

from gateway import candles, validation
from gateway.cache import ResponseCache
from gateway.context import GATEWAY
from gateway.errors import BadParameter, json_bytes, json_ok, not_found
from gateway.views import iso

MAX_KLINES = 1500
DEFAULT_KLINES = 500
MAX_EPOCH_MS = 10**13
SYMBOLS_CACHE_SECONDS = 15.0
_SYMBOLS_CACHE: web.AppKey[dict[str, object]] = web.AppKey("symbols_cache", dict)
# Candles change once a minute; a few seconds of reuse absorbs a crowd watching the same chart.
_MARKET_CACHE: web.AppKey[ResponseCache] = web.AppKey("market_cache", ResponseCache)
MARKET_CACHE_SECONDS = 5.0


async def get_klines(request: web.Request) -> web.Response:
    """Return klines in Binance's array format (intervals 1m..1d), oldest first."""
    query = request.query
    validation.only_params(request, {"symbol", "interval", "startTime", "endTime", "limit"})
    symbol = validation.symbol("symbol", query.get("symbol"))
    interval = query.get("interval", "")
    if interval not in candles.INTERVALS:
        raise BadParameter("interval", f"must be one of {', '.join(candles.INTERVALS)}")
    start = validation.integer("startTime", query.get("startTime"), default=None, low=0, high=MAX_EPOCH_MS)
    end = validation.integer("endTime", query.get("endTime"), default=None, low=0, high=MAX_EPOCH_MS)
    if start is not None and end is not None and end < start:
        raise BadParameter("endTime", "must not be before startTime")
    limit = validation.integer("limit", query.get("limit"), default=DEFAULT_KLINES, low=1, high=MAX_KLINES, clamp=True)
    assert symbol is not None
    assert limit is not None
    gw = request.app[GATEWAY]
    async with gw.pool.acquire() as conn:
        rows = await candles.klines(conn, symbol, interval, start_ms=start, end_ms=end, limit=limit)
        known = bool(rows) or await candles.is_known(conn, symbol)
    if not known and symbol not in await gw.metrics.tracked_symbols():
        raise not_found(f"symbol {symbol!r}")  # as /api/metrics/{symbol} answers for it
    return json_ok(rows)


async def get_tickers(request: web.Request) -> web.Response:
    """Return an array of 24h tickers (metrics.md) for ``symbols`` or every symbol with candles."""
    validation.only_params(request, {"symbols", "symbol"})
    wanted = validation.symbol_list("symbols", request.query.get("symbols"))
    single = validation.symbol("symbol", request.query.get("symbol"), required=False)
    if single is not None:
        wanted = [*(wanted or []), single]

    async def render() -> bytes:
        async with request.app[GATEWAY].pool.acquire() as conn:
            rows = await candles.tickers(conn, await candles.candle_symbols(conn))
        return json_bytes(rows)

    # Every list is answered from the one cached answer for all symbols: a list of its own per cache
    # entry let each new choice or order of up to 500 symbols cost a 24-hour aggregate of each.
    every = await request.app[_MARKET_CACHE].body("tickers|*", render)
    if wanted is None:
        return web.Response(body=every, content_type="application/json")
    chosen = set(wanted)
    return json_ok([ticker for ticker in orjson.loads(every) if ticker["symbol"] in chosen])


async def get_symbols(request: web.Request) -> web.Response:
    """Return the tracked symbols with their first/last stored minute and coverage."""
    validation.only_params(request, set())
    gw = request.app[GATEWAY]
    cache = request.app[_SYMBOLS_CACHE]
    if time.monotonic() - float(cache.get("at", -1e9)) > SYMBOLS_CACHE_SECONDS:  # type: ignore[arg-type]
        async with gw.pool.acquire() as conn:
            cache["rows"] = await candles.symbol_coverage(conn)
        cache["at"] = time.monotonic()
    live = set(await gw.metrics.tracked_symbols())
    rows: list[candles.SymbolCoverage] = cache["rows"]  # type: ignore[assignment]
    out = [
        {
            "symbol": r.symbol,
            "first_minute": r.first_minute,
            "last_minute": r.last_minute,
            "first_time": iso(candles._ts(r.first_minute)),
            "last_time": iso(candles._ts(r.last_minute)),
            "candles": r.candles,
            "coverage": r.coverage,
            "live": r.symbol in live,
        }
        for r in rows
    ]
    known = {r.symbol for r in rows}
    out += [
        {
            "symbol": s,
            "first_minute": None,
            "last_minute": None,
            "first_time": None,
            "last_time": None,
            "candles": 0,
            "coverage": 0.0,
            "live": True,
        }
        for s in sorted(live - known)
    ]
    return json_ok(out)


def setup(app: web.Application) -> None:
    """Give the app its caches."""
    app[_SYMBOLS_CACHE] = {}
    app[_MARKET_CACHE] = ResponseCache(MARKET_CACHE_SECONDS)
