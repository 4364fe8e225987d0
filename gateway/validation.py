"""Strict parsers of request parameters: each returns a typed value or raises ``BadParameter`` naming it."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from gateway.errors import ApiError, BadParameter

SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,40}$")
RULE_TYPE_RE = re.compile(r"^[A-Za-z0-9_]{1,64}$")
MAX_SYMBOLS_PER_REQUEST = 500


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
    except ValueError:
        raise BadParameter(name, "must be an ISO-8601 timestamp, like 2026-01-31T12:00:00Z") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


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
        body = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadParameter("body", f"is not valid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise BadParameter("body", "must be a JSON object")
    return body


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
