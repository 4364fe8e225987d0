"""A user's watchlist (client.md, section 2 and decision 14): base assets such as ``BTC``, stored verbatim.

Add and remove are idempotent and answer 2xx either way, since the web client's local list can be
stale; a list holds at most ``MAX_SYMBOLS`` entries.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web

from gateway import validation
from gateway.context import GATEWAY, require_user
from gateway.errors import ApiError, BadParameter, json_ok
from gateway.user_lock import user_lock

MAX_SYMBOLS = 50
MAX_SYMBOL_CHARS = 40
LIMIT_ERROR = f"Watchlist limit of {MAX_SYMBOLS} symbols exceeded"


def entry(value: Any, field: str = "symbol") -> str:
    """Return a watchlist entry as sent: a printable string of 1-40 characters without spaces."""
    if not isinstance(value, str) or not value:
        raise BadParameter(field, "must be a non-empty string, like BTC")
    if len(value) > MAX_SYMBOL_CHARS:
        raise BadParameter(field, f"must be at most {MAX_SYMBOL_CHARS} characters")
    # Verbatim, but never whitespace or control characters (Binance has base assets beyond ASCII).
    if not value.isprintable() or any(ch.isspace() for ch in value):
        raise BadParameter(field, "must not contain spaces or control characters")
    return value


def _limit_exceeded() -> ApiError:
    return ApiError(400, "watchlist_limit", f"a watchlist holds at most {MAX_SYMBOLS} symbols", error=LIMIT_ERROR)


async def symbols_of(conn: asyncpg.Connection, user_id: str) -> list[str]:
    """Return ``user_id``'s watchlist in the order the entries were added."""
    rows = await conn.fetch("SELECT symbol FROM watchlist WHERE user_id = $1 ORDER BY created_at, symbol", user_id)
    return [r["symbol"] for r in rows]


async def _answer(conn: asyncpg.Connection, user_id: str, status: int = 200) -> web.Response:
    symbols = await symbols_of(conn, user_id)
    return json_ok({"symbols": symbols, "count": len(symbols), "limit": MAX_SYMBOLS}, status=status)


async def get_watchlist(request: web.Request) -> web.Response:
    """Return ``{"symbols": [...], "count"}`` of the caller."""
    user_id = require_user(request)
    async with request.app[GATEWAY].pool.acquire() as conn:
        return await _answer(conn, user_id)


async def add_symbol(request: web.Request) -> web.Response:
    """Add ``{"symbol"}``; adding an entry already there changes nothing and still succeeds."""
    user_id = require_user(request)
    body = await validation.json_object(request)
    validation.reject_unknown_fields(body, {"symbol"})
    symbol = entry(body.get("symbol"))
    async with request.app[GATEWAY].pool.acquire() as conn:
        async with conn.transaction():
            await user_lock(conn, "watchlist", user_id)
            present = await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM watchlist WHERE user_id = $1 AND symbol = $2)", user_id, symbol
            )
            if not present:
                count = await conn.fetchval("SELECT count(*) FROM watchlist WHERE user_id = $1", user_id)
                if count >= MAX_SYMBOLS:
                    raise _limit_exceeded()
                await conn.execute("INSERT INTO watchlist (user_id, symbol) VALUES ($1, $2)", user_id, symbol)
        return await _answer(conn, user_id, status=200 if present else 201)


async def remove_symbol(request: web.Request) -> web.Response:
    """Remove ``{"symbol"}`` (a JSON body, as the web client sends it); removing an absent entry succeeds."""
    user_id = require_user(request)
    body = await validation.json_object(request)
    validation.reject_unknown_fields(body, {"symbol"})
    symbol = entry(body.get("symbol"))
    async with request.app[GATEWAY].pool.acquire() as conn:
        await conn.execute("DELETE FROM watchlist WHERE user_id = $1 AND symbol = $2", user_id, symbol)
        return await _answer(conn, user_id)


async def replace_watchlist(request: web.Request) -> web.Response:
    """Replace the whole list with ``{"symbols": [...]}`` (duplicates dropped, order kept)."""
    user_id = require_user(request)
    body = await validation.json_object(request)
    validation.reject_unknown_fields(body, {"symbols"})
    raw = body.get("symbols")
    if not isinstance(raw, list):
        raise BadParameter("symbols", 'must be a list of symbols, like ["BTC", "ETH"]')
    if len(raw) > MAX_SYMBOLS:
        raise _limit_exceeded()
    symbols = list(dict.fromkeys(entry(v, "symbols") for v in raw))
    async with request.app[GATEWAY].pool.acquire() as conn:
        async with conn.transaction():
            await user_lock(conn, "watchlist", user_id)
            await conn.execute("DELETE FROM watchlist WHERE user_id = $1", user_id)
            # One statement, so the entries keep their order through distinct created_at values.
            await conn.execute(
                """INSERT INTO watchlist (user_id, symbol, created_at)
                   SELECT $1, s, now() + make_interval(secs => i * 1e-6)
                   FROM unnest($2::text[]) WITH ORDINALITY AS t(s, i)""",
                user_id,
                symbols,
            )
        return await _answer(conn, user_id)
