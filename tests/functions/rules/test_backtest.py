"""``screener backtest`` on real recorded klines: alerts JSONL, report, chart, custom rules."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from functions.rules import backtest
from screener.cli import build_parser
from screener.config import load_settings
from screener.events.models import alert_id


def run(argv: list[str], data_dir: Path) -> int:
    args = build_parser(["backtest", *argv]).parse_args(["backtest", *argv])
    return backtest.run(args, load_settings({}, data_dir=data_dir))


def test_backtest_writes_alerts_report_and_chart(klines_dir: Path, tmp_path: Path) -> None:
    alerts_out = tmp_path / "alerts.jsonl"
    status = run(
        [
            "--data", str(klines_dir / "binance-um-2025-05"),
            "--symbols", "BTCUSDT,ETHUSDT,LAYERUSDT,ENAUSDT",
            "--from", "2025-05-12T14:00", "--to", "2025-05-12T15:00",
            "--expr", "big_dip=c5m < -0.8",
            "--alerts-out", str(alerts_out), "--report-dir", str(tmp_path / "report"), "--no-progress",
        ],
        tmp_path,
    )  # fmt: skip
    assert status == 0
    lines = [json.loads(line) for line in alerts_out.read_text().splitlines()]
    assert lines, "the slice has alerts"
    for line in lines:
        assert set(line) == {"id", "rule_type", "symbol", "timestamp", "price", "metadata"}
        minute = backtest.parse_instant(line["timestamp"]) - 60_000
        assert line["id"] == alert_id(line["rule_type"], line["symbol"], minute)
    assert "big_dip" in {line["rule_type"] for line in lines}
    # Each line explains itself: the values of the metrics the rule read, which make it true.
    for line in lines:
        if line["rule_type"] == "big_dip":
            assert set(line["metadata"]) == {"c5m"}
            assert line["metadata"]["c5m"] < -0.8
        if line["rule_type"] == "futures_bottom_hunter":
            meta = line["metadata"]
            assert set(meta) == {"c1h", "c15m", "c5m", "v5m", "v15m", "v1h"}
            assert meta["c1h"] < -0.7 and meta["c15m"] < -0.6 and meta["c5m"] > 0.5
            assert meta["v5m"] > meta["v15m"] / 2 and meta["v5m"] > meta["v1h"] / 8
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["alerts"] == len(lines)
    assert report["quote_volume_derived"] == ["BTCUSDT", "ENAUSDT", "ETHUSDT", "LAYERUSDT"]
    rule = report["rules"]["futures_bottom_hunter"]
    assert sum(rule["by_symbol"].values()) == rule["alerts"]
    assert set(rule["forward_returns"]) == {"15m", "1h", "4h", "1d"}
    assert rule["forward_returns"]["1h"]["count"] == rule["alerts"]
    assert 0.0 <= rule["forward_returns"]["1h"]["hit_rate"] <= 1.0
    assert (tmp_path / "report" / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| futures_bottom_hunter |" in (tmp_path / "report" / "report.md").read_text()


def test_backtest_reports_into_the_data_directory_and_prints_its_throughput(
    klines_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "--data", str(klines_dir / "binance-um-2026-02"), "--symbols", "ALGOUSDT",
        "--from", "2026-02-03T00:00", "--to", "2026-02-03T02:00", "--no-progress",
    ]  # fmt: skip
    args = build_parser(["backtest", *argv]).parse_args(["backtest", *argv])
    status = backtest.run(args, load_settings({}, data_dir=tmp_path / "state"))
    assert status == 0
    assert (tmp_path / "state" / "backtest-report" / "report.json").is_file()
    assert list((tmp_path / "state" / "kline-cache").glob("ALGOUSDT-*.npy")), "the parsed file is kept for next time"
    assert "symbol-minutes per CPU-second" in capsys.readouterr().out


def test_backtest_rejects_a_bad_expression_with_its_position(
    klines_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = run(
        ["--data", str(klines_dir / "binance-um-2026-02"), "--expr", "oops=c5m >> 1", "--no-progress"], tmp_path
    )
    assert status == 2
    err = capsys.readouterr().err
    assert "rule 'oops'" in err
    assert "at position 5" in err


def test_backtest_only_named_rules_fire(klines_dir: Path, tmp_path: Path) -> None:
    alerts_out = tmp_path / "alerts.jsonl"
    status = run(
        [
            "--data", str(klines_dir / "binance-um-2026-02"), "--symbols", "ALGOUSDT,DOTUSDT",
            "--from", "2026-02-16T00:00", "--to", "2026-02-16T06:00",
            "--rules", "futures_whale_accumulation,futures_whale_distribution",
            "--alerts-out", str(alerts_out), "--report-dir", str(tmp_path / "r"), "--no-progress",
        ],
        tmp_path,
    )  # fmt: skip
    assert status == 0
    fired = {json.loads(line)["rule_type"] for line in alerts_out.read_text().splitlines()}
    assert fired <= {"futures_whale_accumulation", "futures_whale_distribution"}


def test_outside_a_project_folder_the_report_folder_must_be_given(
    klines_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The data directory's default is relative (.screener): in a folder without one, nothing is
    # created there by default; with --report-dir the run goes ahead (parsing into a temporary cache).
    monkeypatch.chdir(tmp_path)
    argv = [
        "--data", str(klines_dir / "binance-um-2026-02"), "--symbols", "ALGOUSDT",
        "--from", "2026-02-03T00:00", "--to", "2026-02-03T01:00", "--no-progress",
    ]  # fmt: skip
    settings = load_settings({}, data_dir=Path(".screener"))
    args = build_parser(["backtest", *argv]).parse_args(["backtest", *argv])
    assert backtest.run(args, settings) == 2
    assert "--report-dir" in capsys.readouterr().err
    args = build_parser(["backtest", *argv]).parse_args(["backtest", *argv, "--report-dir", "out"])
    assert backtest.run(args, settings) == 0
    assert (tmp_path / "out" / "report.json").is_file()
    assert not (tmp_path / ".screener").exists()


def test_the_backtest_does_not_import_the_collector() -> None:
    # The readers it shares with the replay collector live in marketdata/: a function never loads the collector.
    code = "import sys, functions.rules.backtest; print(sorted(m for m in sys.modules if m.startswith('collector')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
