"""The gateway's one error type and its JSON shape.

client.md, decision 1: every error body is flat, ``{"error": "<a sentence a user can read>", "code":
"<machine code>", "message": "<detail naming the field>"}``. The product's web client shows
``error`` verbatim, so it is never an object; the one exception is a 403 for a user without a live
plan, whose ``error`` is exactly ``"subscription_expired"`` (``subscription_expired()``).
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

# orjson: several times faster than the standard library on the metrics and klines payloads.
_DUMP_OPTIONS = orjson.OPT_NON_STR_KEYS


def json_ok(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """Return ``data`` as a JSON response."""
    return web.Response(
        body=orjson.dumps(data, option=_DUMP_OPTIONS), status=status, headers=headers, content_type="application/json"
    )


def json_bytes(data: Any) -> bytes:
    """Return ``data`` encoded as JSON."""
    return orjson.dumps(data, option=_DUMP_OPTIONS)


def sentence(text: str) -> str:
    """Return ``text`` as a sentence: capital first letter, closing full stop."""
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


class ApiError(Exception):
    """A request failed in a way the client should be told about; rendered as JSON with ``status``.

    ``message`` is the detail (it names the field); ``error`` the sentence a user reads, by default
    the message written as a sentence.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        *,
        error: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.error = error if error is not None else sentence(message)
        self.headers = headers or {}


class BadParameter(ApiError):
    """A query, path or body parameter is invalid; the message names it."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(400, "invalid_parameter", f"parameter {name!r}: {reason}", error=sentence(f"{name} {reason}"))
        self.parameter = name


def error_body(code: str, message: str, error: str | None = None) -> dict[str, Any]:
    """Return the JSON body of an error (decision 1's flat shape)."""
    return {"error": error if error is not None else sentence(message), "code": code, "message": message}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, *, error: str | None = None
) -> web.Response:
    """Return a JSON error response."""
    return json_ok(error_body(code, message, error), status=status, headers=headers)


def not_found(what: str) -> ApiError:
    """Return a 404 error naming what was not found."""
    return ApiError(404, "not_found", f"{what} not found")


def unauthorized(message: str, *, missing: bool = False) -> ApiError:
    """Return a 401 error: ``missing`` when no token came, else an invalid or expired one."""
    return ApiError(
        401,
        "unauthorized",
        message,
        headers={"WWW-Authenticate": 'Bearer realm="screener"'},
        error="Authentication required" if missing else "Invalid or expired token",
    )


def subscription_expired(message: str = "an active plan is needed for this endpoint") -> ApiError:
    """Return the 403 of a user without a live plan (client.md: ``error`` is exactly this code)."""
    return ApiError(403, "subscription_expired", message, error="subscription_expired")
