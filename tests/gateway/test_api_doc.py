"""docs/api.md is the gateway's OpenAPI document as a page, current, and the READMEs point to it."""

from __future__ import annotations

from pathlib import Path

from gateway.api_doc import current, schema_text
from gateway.app import ENDPOINTS, VERSION
from gateway.openapi import build

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "api.md"


def test_api_doc_is_current() -> None:
    assert DOC.read_text() == current(), "run: python -m gateway.api_doc --write docs/api.md"


def test_api_doc_lists_every_operation_of_the_openapi_document() -> None:
    text = DOC.read_text()
    document = build(ENDPOINTS, VERSION)
    for path, operations in document["paths"].items():
        for method in operations:
            assert f"### `{method.upper()} {path}`" in text


def test_readmes_link_the_api_doc_and_no_spec_outside_the_repository() -> None:
    for readme, link in ((REPO / "README.md", "(docs/api.md)"), (REPO / "gateway" / "README.md", "(../docs/api.md)")):
        text = readme.read_text()
        assert link in text, readme
        assert "shared/spec" not in text, readme
    description = build(ENDPOINTS, VERSION)["info"]["description"]
    assert "shared/spec" not in description and "docs/api.md" in description


def test_schema_text_is_compact() -> None:
    schema = {
        "type": "object",
        "properties": {"id": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}}},
        "required": ["id"],
        "additionalProperties": False,
    }
    assert schema_text(schema) == "{id: string, tags?: [string]}"
    assert schema_text({"type": ["integer", "null"]}) == "integer \\| null"
