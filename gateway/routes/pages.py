"""The dashboard page and the OpenAPI document."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from gateway.errors import json_ok

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
OPENAPI: web.AppKey[dict[str, object]] = web.AppKey("openapi", dict)
# Everything the page loads comes from this origin; nothing is fetched from the internet.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


async def dashboard(request: web.Request) -> web.FileResponse:
    """Serve the dashboard."""
    return web.FileResponse(
        STATIC_DIR / "index.html",
        headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache", "X-Frame-Options": "DENY"},
    )


async def openapi(request: web.Request) -> web.Response:
    """Return the OpenAPI document."""
    return json_ok(request.app[OPENAPI])
