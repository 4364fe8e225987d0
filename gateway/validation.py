"""Strict parsers of request parameters: each returns a typed value or raises ``BadParameter`` naming it.

Every JSON body (``json_object``) and WebSocket frame (``decode_json``) goes through one decoder that
refuses what could not be stored or echoed safely: NaN and Infinity, numbers that overflow to
infinity, ``\\u0000`` (PostgreSQL text and jsonb cannot hold it), lone surrogates (orjson cannot
encode them back) and nesting deeper than ``MAX_JSON_DEPTH``. Query values get the same character
check (``query_value``, and the ``clean_query`` middleware for every parameter).
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from gateway.errors import ApiError, BadParameter

SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,40}$")
RULE_TYPE_RE = re.compile(r"^[A-Za-z0-9_]{1,64}$")
MAX_SYMBOLS_PER_REQUEST = 500
MAX_JSON_DEPTH = 32
# The instants a ``since`` may name: anything else is a typo, and near year 1 or 9999 the UTC
# conversion and the database's arithmetic overflow.
EARLIEST_INSTANT = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_INSTANT = datetime(2200, 1, 1, tzinfo=UTC)
_UNSAFE_CHARS = re.compile("[\x00\ud800-\udfff]")


class UnsafeJson(ValueError):
    """A JSON document cannot be accepted; ``field`` is where (a dotted path, ``body`` for the whole)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def unsafe_text(value: str) -> str | None:
    """Return why ``value`` cannot be stored or echoed (NUL, a lone surrogate), or None when it can."""
    found = _UNSAFE_CHARS.search(value)
    if found is None:
        return None
    return "must not contain NUL characters" if found.group() == "\x00" else "must not contain lone surrogates"


def _check_tree(document: Any, root: str) -> None:
    """Walk ``document`` without recursion: bounded depth, finite numbers, safe strings and keys."""
    stack: list[tuple[Any, str, int]] = [(document, root, 0)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            reason = unsafe_text(value)
            if reason is not None:
                raise UnsafeJson(path, reason)
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise UnsafeJson(path, "must be a finite number")
        elif isinstance(value, dict | list):
            if depth >= MAX_JSON_DEPTH:
                top = path.split(".")[0].split("[")[0]
                raise UnsafeJson(top or root, f"is nested deeper than {MAX_JSON_DEPTH} levels")
            if isinstance(value, dict):
                for key, item in value.items():
                    name = key if path == root and root == "body" else f"{path}.{key}"
                    reason = unsafe_text(key)
                    if reason is not None:
                        raise UnsafeJson(path, "must not have keys with NUL characters or lone surrogates")
                    stack.append((item, name[:80], depth + 1))
            else:
                stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value))


def decode_json(data: bytes | str, root: str = "body") -> Any:
    """Return the JSON value of ``data``; raise ``UnsafeJson`` naming where it cannot be accepted.

    orjson parses in C with a fixed nesting limit (no Python recursion to blow up) and refuses
    NaN/Infinity literals, invalid UTF-8 and lone surrogate escapes; the walk after it bounds the
    depth, and refuses ``\\u0000`` and numbers like ``1e999`` that overflow to infinity.
    """
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        reason = str(exc)
        if "depth" in reason or "recursion" in reason:
            raise UnsafeJson(root, f"is nested deeper than {MAX_JSON_DEPTH} levels") from None
        _locate(data, root)  # NaN or a lone surrogate: name the field it is in
        raise UnsafeJson(root, f"is not valid JSON ({reason[:120]})") from None
    _check_tree(document, root)
    return document


def _locate(data: bytes | str, root: str) -> None:
    """Raise ``UnsafeJson`` naming the field of what orjson refused, when the lenient parser can read it."""
    try:
        text = data.decode("utf-8", "surrogatepass") if isinstance(data, bytes) else data
        # The standard parser accepts NaN, Infinity and lone surrogates, so the walk can say where
        # they are; it only runs on a body orjson refused at under its nesting limit.
        document = json.loads(text, parse_constant=float)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return
    _check_tree(document, root)


def symbol(name: str, value: str | None, *, required: bool = True) -> str | None:
    """Return an upper-case symbol like ``BTCUSDT``."""
    if value is None or value == "":
        if required:
            raise BadParameter(name, "is required")
        return None
    upper = value.strip().upper()
    if not SYMBOL_RE.match(upper):
        raise BadParameter(name, "must be a symbol of 2-40 letters and digits, like BTCUSDT")
    return upper


def symbol_list(name: str, value: str | None) -> list[str] | None:
    """Return the symbols of a comma-separated list, or None when the parameter is absent."""
    if value is None or value.strip() == "":
        return None
    parts = [p for p in (s.strip() for s in value.split(",")) if p]
    if len(parts) > MAX_SYMBOLS_PER_REQUEST:
        raise BadParameter(name, f"at most {MAX_SYMBOLS_PER_REQUEST} symbols")
    out = []
    for part in parts:
        checked = symbol(name, part)
        assert checked is not None
        out.append(checked)
    return list(dict.fromkeys(out))


def rule_type(name: str, value: str | None, *, required: bool = True) -> str | None:
    """Return a rule type (letters, digits and underscores)."""
    if value is None or value == "":
        if required:
            raise BadParameter(name, "is required")
        return None
    if not RULE_TYPE_RE.match(value):
        raise BadParameter(name, "must be 1-64 letters, digits or underscores")
    return value


def integer(
    name: str, value: str | None, *, default: int | None, low: int, high: int, clamp: bool = False
) -> int | None:
    """Return an integer in ``[low, high]``, or ``default`` when absent.

    With ``clamp`` a number outside the range is brought into it (client.md, decision 2: the web
    client asks for ``limit=2000``); otherwise it is a 400. Anything that is not an integer is a 400.
    """
    if value is None or value == "":
        return default
    if not re.fullmatch(r"[-+]?\d{1,19}", value.strip()):
        raise BadParameter(name, "must be an integer")
    number = int(value)
    if clamp:
        return min(high, max(low, number))
    if not low <= number <= high:
        raise BadParameter(name, f"must be between {low} and {high}")
    return number


def instant(name: str, value: str | None) -> datetime | None:
    """Return an aware UTC datetime from ISO-8601 (a value without zone is read as UTC)."""
    if value is None or value == "":
        return None
    text = value.strip()
    if len(text) > 40:
        raise BadParameter(name, "must be an ISO-8601 timestamp")
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "+"))
        moment = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise BadParameter(name, "must be an ISO-8601 timestamp, like 2026-01-31T12:00:00Z") from None
    if not EARLIEST_INSTANT <= moment < LATEST_INSTANT:
        raise BadParameter(name, f"must be between {EARLIEST_INSTANT.year} and {LATEST_INSTANT.year}")
    return moment


def only_params(request: web.Request, allowed: set[str]) -> None:
    """Reject query parameters the endpoint does not know (a typo must not silently do nothing)."""
    unknown = sorted(set(request.query) - allowed - {"token"})
    if unknown:
        raise BadParameter(unknown[0], f"is not a parameter of this endpoint (known: {', '.join(sorted(allowed))})")


async def json_object(request: web.Request) -> dict[str, Any]:
    """Return the request body as a JSON object (413 beyond the body cap, 400 when not an object)."""
    if request.content_type not in ("application/json", "", "text/plain"):
        raise ApiError(415, "unsupported_media_type", "the body must be application/json")
    raw = await request.read()
    try:
        body = decode_json(raw or b"null")
    except UnsafeJson as exc:
        raise BadParameter(exc.field, exc.reason) from None
    if not isinstance(body, dict):
        raise BadParameter("body", "must be a JSON object")
    return body


def query_value(name: str, value: str) -> str:
    """Return ``value`` of query parameter ``name`` when it holds no NUL or lone surrogate."""
    reason = unsafe_text(value)
    if reason is not None:
        raise BadParameter(name[:64], reason)
    return value


def check_query(request: web.Request) -> None:
    """Refuse a request whose query names or values hold characters nothing downstream can hold."""
    for name, value in request.query.items():
        query_value(name if unsafe_text(name) is None else "query", name)
        query_value(name, value)


def reject_unknown_fields(body: dict[str, Any], allowed: set[str]) -> None:
    """Reject body fields the endpoint does not know."""
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadParameter(unknown[0], f"is not a field of this request (known: {', '.join(sorted(allowed))})")


def boolean_field(body: dict[str, Any], name: str, *, default: bool | None = None) -> bool:
    """Return a JSON boolean field (``true``/``false`` only, not 0/1 or strings)."""
    if name not in body:
        if default is None:
            raise BadParameter(name, "is required")
        return default
    value = body[name]
    if not isinstance(value, bool):
        raise BadParameter(name, "must be true or false")
    return value


def string_field(body: dict[str, Any], name: str, *, max_length: int, required: bool = True) -> str | None:
    """Return a non-empty string field of at most ``max_length`` characters."""
    if name not in body or body[name] is None:
        if required:
            raise BadParameter(name, "is required")
        return None
    value = body[name]
    if not isinstance(value, str) or not value.strip():
        raise BadParameter(name, "must be a non-empty string")
    if len(value) > max_length:
        raise BadParameter(name, f"must be at most {max_length} characters")
    return value.strip()


def string_list_field(body: dict[str, Any], name: str, pattern: re.Pattern[str], limit: int = 500) -> list[str] | None:
    """Return a list of strings each matching ``pattern``, or None when the field is absent or null."""
    if name not in body or body[name] is None:
        return None
    value = body[name]
    if not isinstance(value, list) or len(value) > limit or not all(isinstance(v, str) for v in value):
        raise BadParameter(name, f"must be a list of at most {limit} strings")
    for item in value:
        if not pattern.match(item):
            raise BadParameter(name, f"{item[:60]!r} is not valid")
    return list(dict.fromkeys(value))
