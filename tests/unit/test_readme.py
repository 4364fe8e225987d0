"""README.md documents every setting exactly as ``Settings`` defines it."""

from __future__ import annotations

from pathlib import Path

from screener.config import Settings
from screener.settings_doc import END, START, render_table, splice

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_has_a_description() -> None:
    assert [name for name, field in Settings.model_fields.items() if not field.description] == []


def test_readme_settings_table_is_current() -> None:
    text = README.read_text()
    assert START in text and END in text
    assert splice(text) == text, "run: python -m screener.settings_doc --write README.md"
    assert render_table() in text
