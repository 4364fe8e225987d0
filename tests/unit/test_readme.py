"""README.md documents every setting exactly as ``Settings`` defines it."""

from __future__ import annotations

from pathlib import Path

from screener.config import Settings
from screener.settings_doc import END, FLAGS_END, FLAGS_START, START, render_table, render_up_flags, splice

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_has_a_description() -> None:
    assert [name for name, field in Settings.model_fields.items() if not field.description] == []


def test_readme_settings_table_is_current() -> None:
    text = README.read_text()
    assert START in text and END in text
    assert splice(text) == text, "run: python -m screener.settings_doc --write README.md"
    assert render_table() in text


def test_readme_shows_every_flag_of_screener_up() -> None:
    text = README.read_text()
    assert FLAGS_START in text and FLAGS_END in text
    flags = render_up_flags()
    assert flags in text
    for flag in ("--port N", "--data DIR", "--speed SPEED", "--source replay"):
        assert f"`{flag}" in flags
