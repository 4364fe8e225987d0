"""Build the gateway application (``create_app``) and serve it (``serve``).

``create_app`` takes its connections from the caller, so tests pass the fixtures' real servers and
``screener up`` passes its own; the app never closes connections it did not open.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
from contextlib import suppress

import asyncpg
import redis.asyncio as aioredis
from aiohttp import web
from nats.aio.client import Client as NATS

from gateway import api_schemas, openapi, ws
from gateway.accounts import routes as account_routes
from gateway.accounts import service as accounts
from gateway.accounts.gate import needs_plan
from gateway.auth import TokenVerifier
from gateway.context import GATEWAY, Gateway, MetricsReader
from gateway.fanout import Hub
from gateway.middleware import MIDDLEWARES
from gateway.openapi import Endpoint, Param
from gateway.prom import Registry
from gateway.ratelimit import RateLimiter, parse_networks
from gateway.routes import alerts, health, market, metrics, pages, rules, settings, watchlist, webhooks
from gateway.server import GatewayRunner
from gateway.switches import RuleSwitches
from gateway.ws import alerts_socket
from screener.config import Settings
from screener.ports import PortInUseError, gateway_port

log = logging.getLogger(__name__)
VERSION = "1.0.0"
DRAIN_SECONDS = 5.0

_SYMBOL = Param("symbol", "symbol, like BTCUSDT")
_LIMIT = Param("limit", "maximum number of items (clamped)", schema={"type": "integer"})
_SYMBOLS = Param("symbols", "comma-separated symbols")
_UUID = {"type": "string", "format": "uuid"}
_SYMBOL_PATH = Param("symbol", "symbol, like BTCUSDT", where="path", schema={"type": "string", "minLength": 1})
_WEBHOOK_ID = Param("webhook_id", "webhook id", where="path", schema=_UUID)
_TEXT = "text/plain"

ENDPOINTS: list[Endpoint] = [
    Endpoint(
        "GET",
        "/api/health",
        health.api_health,
        "Health with dependency flags (503 when degraded)",
        tag="ops",
        schema=api_schemas.STATUS,
    ),
    Endpoint("GET", "/health/live", health.live, "Liveness probe", tag="ops", schema=api_schemas.STATUS),
    Endpoint(
        "GET",
        "/health/ready",
        health.ready,
        "Readiness probe (503 while a dependency is down)",
        tag="ops",
        schema=api_schemas.READY,
    ),
    Endpoint("GET", "/metrics", health.prometheus, "Prometheus metrics (text format)", tag="ops", media=_TEXT),
    *account_routes.ENDPOINTS,
    Endpoint(
        "GET",
        "/api/metrics/",
        metrics.all_metrics,
        "Latest metrics of every symbol (an array)",
        params=(_SYMBOLS,),
        schema=api_schemas.ARRAY,
    ),
    Endpoint(
        "GET",
        "/api/metrics",
        metrics.all_metrics,
        "Same as /api/metrics/",
        params=(_SYMBOLS,),
        schema=api_schemas.ARRAY,
    ),
    Endpoint(
        "GET",
        "/api/metrics/{symbol}",
        metrics.one_symbol,
        "Latest metrics of one symbol (404 if not tracked)",
        params=(_SYMBOL_PATH,),
        schema=api_schemas.OBJECT,
    ),
    Endpoint(
        "GET",
        "/metrics/{symbol}",
        metrics.one_symbol,
        "Latest metrics of one symbol (legacy path)",
        params=(_SYMBOL_PATH,),
        schema=api_schemas.OBJECT,
    ),
    Endpoint(
        "GET",
        "/api/alerts",
        alerts.list_alerts,
        "Alert history, newest first (an array)",
        auth="optional",
        params=(
            Param("symbol", "only this symbol"),
            Param("rule_type", "only this rule (400: a rule you cannot see)"),
            Param("since", "ISO-8601 instant (years 2000-2199); alerts at or after it"),
            Param("limit", "1..5000 (larger values are clamped), default 100", schema={"type": "integer"}),
        ),
        schema=api_schemas.ARRAY,
    ),
    Endpoint(
        "GET",
        "/api/alerts/{alert_id}/deliveries",
        alerts.alert_deliveries,
        "Webhook deliveries of an alert",
        auth="required",
        plan=True,
        params=(Param("alert_id", "alert id", where="path", schema=_UUID),),
        schema=api_schemas.DELIVERIES,
    ),
    Endpoint(
        "GET",
        "/api/alert-rules",
        rules.list_rules,
        "Rules; with a token `enabled` is your setting",
        auth="optional",
        schema=api_schemas.RULES,
    ),
    Endpoint(
        "POST",
        "/api/alert-rules",
        rules.create_rule,
        "Add your own rule (400 names position and reason; 409 past the per-user caps)",
        auth="required",
        plan=True,
        body="{name, expression, description?, cooldown (min) | cooldown_seconds, frequency?}",
        body_schema=api_schemas.NEW_RULE,
        ok=201,
        schema=api_schemas.RULE,
        errors=(409,),
    ),
    Endpoint(
        "PUT",
        "/api/alert-rules/{rule_id}",
        rules.toggle_rule,
        "Switch a rule on or off for you",
        auth="required",
        plan=True,
        body='{"enabled": bool}',
        body_schema=api_schemas.ENABLED,
        schema=api_schemas.TOGGLED,
    ),
    Endpoint(
        "DELETE",
        "/api/alert-rules/{rule_id}",
        rules.delete_rule,
        "Delete your own rule (403: a global one)",
        auth="required",
        plan=True,
        schema=api_schemas.DELETED,
        errors=(403,),
    ),
    Endpoint(
        "GET",
        "/api/tickers",
        market.get_tickers,
        "24h tickers from our candles (an array), prices and quantities at the symbol's tick and step size",
        params=(Param("symbols", "comma-separated symbols; default all"), Param("symbol", "one symbol")),
        schema=api_schemas.ARRAY,
    ),
    Endpoint(
        "GET",
        "/api/klines",
        market.get_klines,
        "Klines in Binance's array format, intervals 1m..1d: the stored bars behind the candles' 48 hours "
        "(14 days and more of 5m..1d), prices and quantities at the symbol's tick and step size "
        "(404: a symbol nothing is stored of)",
        params=(
            Param("symbol", "symbol", required=True),
            Param("interval", "1m 3m 5m 15m 30m 1h 2h 4h 6h 8h 12h 1d", required=True),
            Param("startTime", "ms", schema={"type": "integer"}),
            Param("endTime", "ms", schema={"type": "integer"}),
            Param("limit", "1..1500 (clamped), default 500", schema={"type": "integer"}),
        ),
        schema=api_schemas.ARRAY,
        errors=(404,),
    ),
    Endpoint(
        "GET",
        "/api/symbols",
        market.get_symbols,
        "Tracked symbols with first/last minute and coverage",
        schema=api_schemas.ARRAY,
    ),
    Endpoint(
        "GET",
        "/api/watchlist",
        watchlist.get_watchlist,
        "Your watchlist: {symbols, count}",
        auth="required",
        plan=True,
        schema=api_schemas.WATCHLIST,
    ),
    Endpoint(
        "POST",
        "/api/watchlist",
        watchlist.add_symbol,
        "Add a base asset (idempotent; at most 50; 201 when added, 200 when it was there)",
        auth="required",
        plan=True,
        body='{"symbol": "BTC"}',
        body_schema=api_schemas.SYMBOL,
        ok=201,
        also_ok=(200,),
        schema=api_schemas.WATCHLIST,
    ),
    Endpoint(
        "DELETE",
        "/api/watchlist",
        watchlist.remove_symbol,
        "Remove a base asset (idempotent)",
        auth="required",
        plan=True,
        body='{"symbol": "BTC"}',
        body_schema=api_schemas.SYMBOL,
        schema=api_schemas.WATCHLIST,
    ),
    Endpoint(
        "PUT",
        "/api/watchlist",
        watchlist.replace_watchlist,
        "Replace your watchlist",
        auth="required",
        plan=True,
        body='{"symbols": ["BTC", "ETH"]}',
        body_schema=api_schemas.SYMBOLS,
        schema=api_schemas.WATCHLIST,
    ),
    Endpoint(
        "PUT",
        "/api/settings/tv-username",
        settings.put_tv_username,
        "Set your TradingView username",
        auth="required",
        body='{"tv_username": str}',
        body_schema=api_schemas.TV,
        schema=api_schemas.TV_USERNAME,
    ),
    Endpoint(
        "GET",
        "/api/webhooks",
        webhooks.list_webhooks,
        "Your webhooks: {webhooks, count, limit}",
        auth="required",
        plan=True,
        schema=api_schemas.WEBHOOKS,
    ),
    Endpoint(
        "POST",
        "/api/webhooks",
        webhooks.create_webhook,
        "Add a webhook (at most 10; the URL must reach a public address)",
        auth="required",
        plan=True,
        body="{name, webhook_type: discord|telegram|slack|http, webhook_url, scope?: all|watchlist, is_enabled?, "
        "config?, rule_types?, symbols?, secret?}",
        body_schema=api_schemas.NEW_WEBHOOK,
        ok=201,
        schema=api_schemas.WEBHOOK,
    ),
    Endpoint(
        "GET",
        "/api/webhooks/{webhook_id}",
        webhooks.get_webhook,
        "One of your webhooks",
        auth="required",
        plan=True,
        params=(_WEBHOOK_ID,),
        schema=api_schemas.WEBHOOK,
    ),
    Endpoint(
        "PUT",
        "/api/webhooks/{webhook_id}",
        webhooks.update_webhook,
        "Change a webhook; answers the updated webhook",
        auth="required",
        plan=True,
        body="any of the fields of POST",
        body_schema=api_schemas.WEBHOOK_CHANGE,
        params=(_WEBHOOK_ID,),
        schema=api_schemas.WEBHOOK,
    ),
    Endpoint(
        "PATCH",
        "/api/webhooks/{webhook_id}/toggle",
        webhooks.toggle_webhook,
        "Switch a webhook on or off",
        auth="required",
        plan=True,
        body='{"enabled": bool}',
        body_schema=api_schemas.ENABLED,
        params=(_WEBHOOK_ID,),
        schema=api_schemas.WEBHOOK,
    ),
    Endpoint(
        "DELETE",
        "/api/webhooks/{webhook_id}",
        webhooks.delete_webhook,
        "Delete a webhook",
        auth="required",
        plan=True,
        params=(_WEBHOOK_ID,),
        schema=api_schemas.DELETED,
    ),
    Endpoint(
        "POST",
        "/api/webhooks/{webhook_id}/test",
        webhooks.test_webhook,
        "Send a test alert now (200 sent; 502 failed, with the status code only; 429 past 10 a minute)",
        auth="required",
        plan=True,
        params=(_WEBHOOK_ID,),
        schema=api_schemas.WEBHOOK_TEST,
        errors=(502,),
    ),
    Endpoint(
        "GET",
        "/api/webhooks/{webhook_id}/deliveries",
        webhooks.webhook_deliveries,
        "Delivery log of a webhook",
        auth="required",
        plan=True,
        params=(_WEBHOOK_ID, _LIMIT),
        schema=api_schemas.DELIVERIES,
    ),
    Endpoint("GET", "/settings", settings.get_settings, "Your settings", auth="required", schema=api_schemas.SETTINGS),
    Endpoint(
        "POST",
        "/settings",
        settings.post_settings,
        "Update your settings",
        auth="required",
        plan=True,
        body="{rules?: {rule_type: bool}, enabled_rules?: [rule_type], preferences?: {}}",
        body_schema=api_schemas.SETTINGS_CHANGE,
        schema=api_schemas.SETTINGS,
    ),
    Endpoint(
        "GET", "/api/settings", settings.get_settings, "Your settings", auth="required", schema=api_schemas.SETTINGS
    ),
    Endpoint(
        "POST",
        "/api/settings",
        settings.post_settings,
        "Update your settings",
        auth="required",
        plan=True,
        body="{rules?: {rule_type: bool}, enabled_rules?: [rule_type], preferences?: {}}",
        body_schema=api_schemas.SETTINGS_CHANGE,
        schema=api_schemas.SETTINGS,
    ),
    Endpoint(
        "GET",
        "/ws/alerts",
        alerts_socket,
        "WebSocket: raw alert frames; protocol v2 with ?protocol=2 (a bad token is anonymous; 4008 too slow; "
        "429 past SCREENER_WS_MAX_CONNECTIONS_PER_CLIENT open connections)",
        auth="optional",
        params=(
            Param("token", "JWT (instead of the Authorization header)"),
            Param("protocol", "1 (raw alerts, default) or 2"),
            Param("last_alert_id", "v2: resume after this alert"),
        ),
        tag="websocket",
    ),
    Endpoint("GET", "/api/openapi.json", pages.openapi, "This document", tag="ops", schema=api_schemas.OPENAPI),
    Endpoint("GET", "/", pages.dashboard, "The dashboard page", response="HTML", tag="ui", media="text/html"),
]


def create_app(
    settings: Settings,
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    nc: NATS,
    *,
    metrics_store: MetricsReader | None = None,
) -> web.Application:
    """Return the gateway application on the given connections (which the caller owns and closes)."""
    if metrics_store is None:
        from state.metrics_store import MetricsStore

        metrics_store = MetricsStore(redis)
    registry = Registry()
    switches = RuleSwitches(pool, gate_plans=settings.billing_enabled)
    hub = Hub(nc, switches, registry, settings.ws_send_queue)
    gw = Gateway(
        settings=settings,
        pool=pool,
        redis=redis,
        nc=nc,
        metrics=metrics_store,
        switches=switches,
        hub=hub,
        verifier=TokenVerifier(settings.jwt_secret, settings.jwt_audience, settings.jwks_url),
        limiter=RateLimiter(redis, settings.rate_limit_per_minute),
        registry=registry,
        trusted_proxies=parse_networks(settings.trusted_proxies),
    )
    app = web.Application(middlewares=list(MIDDLEWARES), client_max_size=settings.max_body_bytes)
    app[GATEWAY] = gw
    app[pages.OPENAPI] = openapi.build(ENDPOINTS, VERSION)
    accounts.setup(app, settings, pool, redis)
    market.setup(app)
    health.setup(app)
    rules.setup(app)
    ws.setup(app)
    metrics.setup(app)
    webhooks.setup(app)
    for ep in ENDPOINTS:
        app.router.add_route(ep.method, ep.path, needs_plan(ep.handler) if ep.plan else ep.handler)
    app.router.add_static("/static/", pages.STATIC_DIR, follow_symlinks=False, append_version=False)

    async def start(_: web.Application) -> None:
        await switches.start()
        await hub.start()

    async def drain(_: web.Application) -> None:
        await hub.drain(DRAIN_SECONDS)

    async def stop(_: web.Application) -> None:
        await switches.close()

    app.on_startup.append(start)
    app.on_shutdown.append(drain)
    app.on_cleanup.append(stop)
    return app


async def _rollback_only(conn: asyncpg.Connection) -> None:
    # asyncpg's default reset runs "RESET ALL; UNLISTEN *; CLOSE ALL ..." on every release: a round
    # trip per request. The gateway changes no session state, so only an open transaction needs undoing.
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


async def create_pool(settings: Settings) -> asyncpg.Pool:
    """Return the gateway's PostgreSQL pool (like ``screener.connections.create_pg_pool``, cheaper releases)."""
    if not settings.postgres_dsn:
        raise RuntimeError("SCREENER_POSTGRES_DSN is not set (run `screener up` to start embedded servers)")
    pool = await asyncpg.create_pool(settings.postgres_dsn, min_size=2, max_size=10, reset=_rollback_only)
    assert pool is not None
    return pool


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Connect, serve until ``stop`` is set (or SIGINT/SIGTERM), then drain and close everything."""
    from screener.connections import connect_nats, connect_redis

    if settings.billing_enabled:  # a refused Whop URL stops start-up before any connection is made
        from gateway.accounts.whop import check_settings

        check_settings(settings)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    pool = await create_pool(settings)
    redis = connect_redis(settings)
    nc = await connect_nats(settings, name="screener-gateway")
    runner = GatewayRunner(create_app(settings, pool, redis, nc), access_log=None, shutdown_timeout=DRAIN_SECONDS)
    try:
        await runner.setup()
        site = web.TCPSite(
            runner,
            settings.gateway_host,
            settings.gateway_port,
            backlog=4096,
            reuse_port=settings.gateway_reuse_port or None,
        )
        try:
            await site.start()
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            wanted = gateway_port(settings.gateway_host, settings.gateway_port)
            raise PortInUseError(exc.errno, wanted.taken_message()) from exc
        log.info("gateway listening on http://%s:%s/", settings.gateway_host, settings.gateway_port)
        await stop.wait()
    finally:
        await runner.cleanup()
        await nc.drain()
        await redis.aclose()
        await pool.close()
