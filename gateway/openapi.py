"""Build ``/api/openapi.json`` from the route table itself, so every endpoint is described."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from aiohttp.typedefs import Handler


@dataclass(frozen=True)
class Param:
    """A query or path parameter."""

    name: str
    description: str
    where: str = "query"
    required: bool = False
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})


@dataclass(frozen=True)
class Endpoint:
    """One route: method, path, handler and what the document says about it."""

    method: str
    path: str
    handler: Handler
    summary: str
    auth: str = "none"  # "none", "optional" or "required"
    params: tuple[Param, ...] = ()
    body: str | None = None
    response: str = "JSON"
    tag: str = "api"


# client.md, decision 1: a flat body; ``error`` is a sentence a user can read.
ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {"type": "string", "description": "a sentence a user can read"},
        "code": {"type": "string", "description": "machine code"},
        "message": {"type": "string", "description": "detail, naming the field"},
    },
    "required": ["error", "code", "message"],
}


def _path_params(path: str) -> list[str]:
    return re.findall(r"{(\w+)}", path)


def build(endpoints: list[Endpoint], version: str) -> dict[str, Any]:
    """Return the OpenAPI 3.1 document of ``endpoints``."""
    paths: dict[str, dict[str, Any]] = {}
    for ep in endpoints:
        params = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _path_params(ep.path)
        ]
        params += [
            {
                "name": p.name,
                "in": p.where,
                "required": p.required,
                "description": p.description,
                "schema": p.schema,
            }
            for p in ep.params
        ]
        operation: dict[str, Any] = {
            "summary": ep.summary,
            "tags": [ep.tag],
            "parameters": params,
            "responses": {
                "200": {"description": ep.response},
                "400": {"description": "invalid parameter", "content": {"application/json": {"schema": ERROR_SCHEMA}}},
                "429": {"description": "rate limited (Retry-After)"},
            },
        }
        if ep.auth != "none":
            operation["security"] = [{"bearer": []}] if ep.auth == "required" else [{"bearer": []}, {}]
            operation["responses"]["401"] = {"description": "missing, invalid or expired token"}
        if ep.body:
            operation["requestBody"] = {
                "required": True,
                "description": ep.body,
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        paths.setdefault(ep.path, {})[ep.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Screener gateway",
            "version": version,
            "description": "REST and WebSocket API of the screener (see shared/spec/api.md). "
            "WebSocket /ws/alerts: raw alert frames, or protocol v2 with ?protocol=2.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": {"Error": ERROR_SCHEMA},
        },
        "paths": paths,
    }
