"""The gateway's one error type and its JSON shape (api.md: ``{"error": {"code", "message"}}``)."""

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


class ApiError(Exception):
    """A request failed in a way the client should be told about; rendered as JSON with ``status``."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


class BadParameter(ApiError):
    """A query, path or body parameter is invalid; the message names it."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(400, "invalid_parameter", f"parameter {name!r}: {reason}")
        self.parameter = name


def error_body(code: str, message: str) -> dict[str, Any]:
    """Return the JSON body of an error."""
    return {"error": {"code": code, "message": message}}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """Return a JSON error response."""
    return json_ok(error_body(code, message), status=status, headers=headers)


def not_found(what: str) -> ApiError:
    """Return a 404 error naming what was not found."""
    return ApiError(404, "not_found", f"{what} not found")


def unauthorized(message: str) -> ApiError:
    """Return a 401 error (a missing, invalid or expired token)."""
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": 'Bearer realm="screener"'})
