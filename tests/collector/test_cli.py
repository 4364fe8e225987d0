"""``screener collector`` options override the settings they name."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from collector.cli import _main, add_arguments, apply_arguments
from screener.config import load_settings
from screener.ports import EXIT_CONFIG


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_options_override_the_settings() -> None:
    args = parse(
        "--source", "replay", "--data", "data/klines/binance-um-2025-05", "--speed", "max",
        "--symbols", "btcusdt,ethusdt", "SOLUSDT", "--virtual-symbols", "500", "--no-loop",
    )  # fmt: skip
    settings = apply_arguments(args, load_settings({}))
    assert settings.source == "replay"
    assert settings.replay_data == Path("data/klines/binance-um-2025-05")
    assert settings.replay_speed == "max"
    assert settings.symbols == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    assert settings.replay_virtual_symbols == 500
    assert settings.replay_loop is False


def test_no_options_keep_the_settings() -> None:
    settings = load_settings({"SCREENER_SOURCE": "binance", "SCREENER_TOP_N": "100"})
    assert apply_arguments(parse(), settings) == settings


def test_a_bad_option_value_is_refused_like_a_bad_setting() -> None:
    with pytest.raises(ValueError, match="virtual"):
        apply_arguments(parse("--virtual-symbols", "-1"), load_settings({}))


async def test_a_replay_of_data_that_cannot_be_read_exits_as_misconfigured(nats_url: str, tmp_path: Path) -> None:
    """Unreadable data exits once with EX_CONFIG (``screener up`` then stops, saying why) instead of a traceback."""
    (tmp_path / "EMPTYUSDT-1m-2026-02.csv").write_bytes(b"")
    args = parse("--source", "replay", "--data", str(tmp_path), "--speed", "max")
    settings = apply_arguments(args, load_settings({}, nats_url=nats_url))
    assert await _main(settings, args) == EXIT_CONFIG
