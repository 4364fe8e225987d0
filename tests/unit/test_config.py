"""Settings: read once from the environment; unknown or malformed settings stop start-up."""

from __future__ import annotations

import pytest

from screener.config import ConfigError, load_settings


def test_defaults_start_embedded_servers() -> None:
    settings = load_settings({})
    assert settings.nats_url is None
    assert settings.retention_hours == 48


def test_comma_separated_lists_are_split() -> None:
    settings = load_settings({"SCREENER_SYMBOLS": "BTCUSDT, ETHUSDT"})
    assert settings.symbols == ["BTCUSDT", "ETHUSDT"]


def test_unknown_setting_is_named() -> None:
    with pytest.raises(ConfigError, match="SCREENER_NATS_ULR"):
        load_settings({"SCREENER_NATS_ULR": "nats://x"})


def test_malformed_setting_is_named() -> None:
    with pytest.raises(ConfigError, match="SCREENER_BATCH_SIZE"):
        load_settings({"SCREENER_BATCH_SIZE": "many"})


def test_settings_are_frozen() -> None:
    settings = load_settings({})
    with pytest.raises(ValueError, match="frozen"):
        settings.retention_hours = 1  # type: ignore[misc]
