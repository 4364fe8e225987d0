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
    ok: int = 200  # the success status
    also_ok: tuple[int, ...] = ()  # other success statuses (same schema)
    schema: dict[str, Any] | None = None  # of the success body (JSON unless ``media`` says otherwise)
    body_schema: dict[str, Any] | None = None
    errors: tuple[int, ...] = ()  # statuses beyond those every endpoint of its kind has
    media: str = "application/json"
    plan: bool = False  # a paid feature: 403 subscription_expired without a live plan (billing on)


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


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if headers:
        response["headers"] = headers
    return response


_ERRORS = {
    400: "invalid parameter or body (the message names it)",
    401: "missing, invalid or expired token",
    402: "the checkout has not been paid",
    403: "not allowed for this user; with billing on, `subscription_expired` without a live plan or trial",
    404: "not found",
    409: "conflicts with a per-user cap",
    413: "request body too large",
    415: "the body must be application/json",
    502: "an upstream failed: a webhook's destination (its status only) or the billing provider",
    503: "a dependency is unavailable",
}
_RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds to wait"}}


def _responses(ep: Endpoint) -> dict[str, Any]:
    """Return every status ``ep`` can answer, each with its schema."""
    ok_schema = (
        ep.schema
        if ep.schema is not None
        else ({"type": "object"} if ep.media == "application/json" else {"type": "string"})
    )
    responses: dict[str, Any] = {
        str(status): {"description": ep.response, "content": {ep.media: {"schema": ok_schema}}}
        for status in (ep.ok, *ep.also_ok)
    }
    statuses = {400, 503, *ep.errors}
    if ep.plan:
        statuses.add(403)
    if ep.auth != "none":
        statuses.add(401)
    if _path_params(ep.path):
        statuses.add(404)
    if ep.body or ep.body_schema:
        statuses |= {413, 415}
    for status in sorted(statuses):
        responses[str(status)] = _error(_ERRORS[status])
    if ep.tag != "ops" and ep.path != "/":
        responses["429"] = _error("rate limited", _RETRY_AFTER)
    return responses


def build(endpoints: list[Endpoint], version: str) -> dict[str, Any]:
    """Return the OpenAPI 3.1 document of ``endpoints``."""
    paths: dict[str, dict[str, Any]] = {}
    for ep in endpoints:
        declared = {p.name: p for p in ep.params if p.where == "path"}
        params = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": declared[name].schema if name in declared else {"type": "string", "minLength": 1},
            }
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
            if p.where != "path"
        ]
        operation: dict[str, Any] = {
            "summary": ep.summary,
            "tags": [ep.tag],
            "parameters": params,
            "responses": _responses(ep),
        }
        if ep.auth != "none":
            operation["security"] = [{"bearer": []}] if ep.auth == "required" else [{"bearer": []}, {}]
        if ep.body or ep.body_schema:
            operation["requestBody"] = {
                "required": True,
                "description": ep.body or "",
                "content": {"application/json": {"schema": ep.body_schema or {"type": "object"}}},
            }
        paths.setdefault(ep.path, {})[ep.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Screener gateway",
            "version": version,
            "description": "REST and WebSocket API of the screener (docs/api.md, gateway/README.md). "
            "WebSocket /ws/alerts: raw alert frames, or protocol v2 with ?protocol=2.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": {"Error": ERROR_SCHEMA},
        },
        "paths": paths,
    }
