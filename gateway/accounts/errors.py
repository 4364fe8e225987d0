"""The accounts' errors in client.md's body (decision 1): a sentence the client shows, a code, a detail."""

from __future__ import annotations

import functools
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.errors import ApiError, json_ok


class ShownError(ApiError):
    """An error whose ``error`` sentence the client shows verbatim; ``message`` is the detail naming the field."""

    def __init__(
        self, status: int, code: str, sentence: str, message: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(status, code, message or sentence, headers)
        self.error = sentence


def flat_error_body(error: ApiError) -> dict[str, Any]:
    """Return ``{"error": <sentence>, "code", "message": <detail>}`` for ``error``."""
    sentence = getattr(error, "error", None)
    if not isinstance(sentence, str) or not sentence:
        sentence = error.message[:1].upper() + error.message[1:]
    return {"error": sentence, "code": error.code, "message": error.message}


def client_errors(handler: Handler) -> Handler:
    """Render any ``ApiError`` of ``handler`` in client.md's flat error body.

    The gateway's error middleware renders the same shape once every route follows decision 1; this
    keeps the accounts endpoints in it whatever the middleware does.
    """

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return json_ok(flat_error_body(exc), status=exc.status, headers=exc.headers)

    return wrapped
