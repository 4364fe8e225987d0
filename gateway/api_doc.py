"""Render docs/api.md from the gateway's own OpenAPI document, so the page and the server cannot drift.

python -m gateway.api_doc --write docs/api.md

Every route, parameter, status and schema comes from ``/api/openapi.json`` (``gateway.app.ENDPOINTS``
through ``gateway.openapi.build``); ``tests/gateway/test_api_doc.py`` fails when the page is stale.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

INTRO = """\
# Gateway API

Generated from the gateway's OpenAPI document (`GET /api/openapi.json` on a running gateway) by
`python -m gateway.api_doc --write docs/api.md`; do not edit by hand. The WebSocket protocols, auth,
limits and the web client's conventions are described in [gateway/README.md](../gateway/README.md).

- Base URL: `http://127.0.0.1:8080` under `screener up` (`--port` or `SCREENER_GATEWAY_PORT` change it).
- Errors: every status other than 2xx has the JSON body `{"error", "code", "message"}`: `error` is a
  sentence a user can read, `code` a machine code, `message` the detail naming the field.
- Auth: a bearer JWT (`Authorization: Bearer <token>`). *optional*: without a valid token the endpoint
  answers as for an anonymous visitor; *required*: 401 without one.
- Rate limit: per user (valid token) or client IP, `SCREENER_RATE_LIMIT_PER_MINUTE` (300) a minute;
  429 with `Retry-After` past it.
"""


def schema_text(schema: dict[str, Any], depth: int = 0) -> str:
    """Return a compact one-line rendering of a JSON schema (``{id: string, tags?: [string]}``)."""
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if "const" in schema:
        return json.dumps(schema["const"])
    if "enum" in schema:
        return " \\| ".join(json.dumps(v) for v in schema["enum"])
    for combinator in ("anyOf", "oneOf"):
        if combinator in schema:
            return " \\| ".join(schema_text(s, depth) for s in schema[combinator])
    kind = schema.get("type", "any")
    if isinstance(kind, list):
        return " \\| ".join(schema_text({**schema, "type": k}, depth) for k in kind)
    if kind == "array":
        items = schema.get("items")
        return f"[{schema_text(items, depth + 1)}]" if items else "array"
    if kind == "object":
        properties: dict[str, Any] = schema.get("properties", {})
        if not properties:
            return "object"
        if depth >= 2:
            return "{...}"
        required = set(schema.get("required", []))
        fields = [
            f"{name}{'' if name in required else '?'}: {schema_text(sub, depth + 1)}"
            for name, sub in properties.items()
        ]
        if schema.get("additionalProperties") is not False:
            fields.append("...")
        return "{" + ", ".join(fields) + "}"
    return str(kind)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _operation(path: str, method: str, op: dict[str, Any]) -> list[str]:
    lines = [f"### `{method.upper()} {path}`", "", op.get("summary", "")]
    security = op.get("security")
    auth = "none" if not security else ("optional" if {} in security else "required")
    lines += ["", f"Auth: {auth}."]
    params = op.get("parameters", [])
    if params:
        lines += ["", "| parameter | in | required | type | meaning |", "|---|---|---|---|---|"]
        for p in params:
            lines.append(
                f"| `{p['name']}` | {p['in']} | {'yes' if p.get('required') else 'no'} | "
                f"{_cell(schema_text(p.get('schema', {})))} | {_cell(p.get('description', ''))} |"
            )
    body = op.get("requestBody")
    if body:
        media, content = next(iter(body["content"].items()))
        lines += ["", f"Body ({media}): {_cell(body.get('description') or '')}", ""]
        lines.append(f"`{schema_text(content['schema'])}`")
    lines += ["", "| status | answer |", "|---|---|"]
    for status, response in op["responses"].items():
        content = response.get("content", {})
        shape = ""
        if content:
            media, spec = next(iter(content.items()))
            rendered = schema_text(spec.get("schema", {}))
            shape = f" `{_cell(rendered)}`" if media == "application/json" else f" ({media})"
        lines.append(f"| {status} | {_cell(response.get('description', ''))}{shape} |")
    return [*lines, ""]


def render(document: dict[str, Any]) -> str:
    """Return the Markdown page of an OpenAPI document."""
    info = document["info"]
    lines = [INTRO, f"OpenAPI {document['openapi']}, {info['title']} {info['version']}. {info['description']}", ""]
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, operations in document["paths"].items():
        for method, op in operations.items():
            by_tag.setdefault(op["tags"][0], []).append((path, method, op))
    lines += ["## Endpoints", "", "| method | path | summary |", "|---|---|---|"]
    for operations in by_tag.values():
        for path, method, op in operations:
            lines.append(f"| {method.upper()} | `{path}` | {_cell(op.get('summary', ''))} |")
    lines.append("")
    for tag, operations in by_tag.items():
        lines += [f"## {tag}", ""]
        for path, method, op in operations:
            lines += _operation(path, method, op)
    lines += ["## Schemas", ""]
    for name, schema in document.get("components", {}).get("schemas", {}).items():
        lines += [f"- `{name}`: `{_cell(schema_text(schema))}`"]
    return "\n".join(lines).rstrip() + "\n"


def current() -> str:
    """Return docs/api.md as the gateway's route table describes it now."""
    from gateway.app import ENDPOINTS, VERSION
    from gateway.openapi import build

    return render(build(ENDPOINTS, VERSION))


def main() -> None:
    """Print the page, or write it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--write", type=Path, help="file to write (docs/api.md)")
    args = parser.parse_args()
    if args.write:
        args.write.write_text(current())
    else:
        print(current(), end="")


if __name__ == "__main__":
    main()
