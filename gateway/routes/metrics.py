"""Latest metrics from Redis (the fast path): ``/api/metrics/`` and ``/api/metrics/{symbol}``."""

from __future__ import annotations

from aiohttp import web

from gateway import validation
from gateway.cache import ResponseCache
from gateway.context import GATEWAY
from gateway.errors import json_bytes, not_found
from gateway.views import metrics_view

# Metrics change once a minute per symbol; one second of reuse spares Redis and the decoding.
METRICS_CACHE_SECONDS = 1.0
METRICS_CACHE: web.AppKey[ResponseCache] = web.AppKey("metrics_cache", ResponseCache)


async def all_metrics(request: web.Request) -> web.Response:
    """Return a JSON array with the latest metrics object of every tracked symbol (or of ``symbols``)."""
    validation.only_params(request, {"symbols"})
    symbols = validation.symbol_list("symbols", request.query.get("symbols"))

    async def render() -> bytes:
        snapshots = await request.app[GATEWAY].metrics.latest(symbols)
        return json_bytes([metrics_view(s) for s in sorted(snapshots, key=lambda s: s.symbol)])

    key = "all|" + (",".join(symbols) if symbols is not None else "*")
    return await request.app[METRICS_CACHE].get(key, render)


async def one_symbol(request: web.Request) -> web.Response:
    """Return the latest metrics object of one symbol; 404 when it is not tracked."""
    validation.only_params(request, set())
    symbol = validation.symbol("symbol", request.match_info["symbol"])
    assert symbol is not None

    async def render() -> bytes:
        snapshots = await request.app[GATEWAY].metrics.latest([symbol])
        if not snapshots:
            raise not_found(f"symbol {symbol!r}")
        return json_bytes(metrics_view(snapshots[0]))

    return await request.app[METRICS_CACHE].get("one|" + symbol, render)


def setup(app: web.Application) -> None:
    """Give the app its metrics cache."""
    app[METRICS_CACHE] = ResponseCache(METRICS_CACHE_SECONDS)
