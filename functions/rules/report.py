"""The backtest report: alerts per rule and symbol, forward returns after each alert, a PNG chart.

Forward returns are measured from the alert's price (the close of its minute) to the close 15m,
1h, 4h and 1d later. The hit rate is the share of alerts after which the price moved the rule's
way: down for the bearish rules (``SHORT_RULES``), up for every other rule (custom ones included).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import orjson

from functions.rules.blockwise import HORIZONS, BacktestResult
from functions.rules.columnar import FoundAlert
from screener.events.models import MINUTE_MS, Alert, minute_close_iso

SHORT_RULES = frozenset(
    {
        "futures_big_bear_60",
        "futures_big_bear_60_v2",
        "futures_pioneer_bear",
        "futures_5_big_bear",
        "futures_15_big_bear",
        "futures_top_hunter",
        "futures_top_hunter_v2",
        "futures_whale_distribution",
    }
)


@dataclass(frozen=True)
class ReturnStats:
    """Forward returns of one rule at one horizon, in percent."""

    count: int
    mean: float | None
    median: float | None
    hit_rate: float | None


def alert_line(alert: Alert | FoundAlert, timestamp: str | None = None) -> bytes:
    """Return the alert as one JSON line: ``id, rule_type, symbol, timestamp, price, metadata``.

    ``timestamp`` is the alert's, when the caller has it already.

    ``metadata`` holds the value of every metric the rule read (through the rules it references
    too), null where the metric was null or gated by coverage: enough to see from the file alone
    why an alert fired, or to find where two runs differ.
    """
    return orjson.dumps(
        {
            "id": alert.id,
            "rule_type": alert.rule_type,
            "symbol": alert.symbol,
            "timestamp": alert.timestamp if timestamp is None else timestamp,
            "price": alert.price,
            "metadata": alert.metadata,
        }
    )


class AlertsWriter:
    """Write alerts as JSON lines as they come (``run_backtest``'s ``on_alerts``), in time order."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._out: BinaryIO = path.open("wb")

    def __call__(self, alerts: Sequence[Alert | FoundAlert]) -> None:
        """Append ``alerts``."""
        # The close instants of all the alerts' minutes at once (as ``minute_close_iso`` spells them).
        closes = (np.array([a.minute for a in alerts], dtype=np.int64) + MINUTE_MS).astype("datetime64[ms]")
        stamps = np.char.add(np.datetime_as_string(closes, unit="s"), "Z").tolist()
        self._out.write(b"".join(alert_line(a, stamp) + b"\n" for a, stamp in zip(alerts, stamps, strict=True)))

    def close(self) -> None:
        """Flush and close the file."""
        self._out.close()


def write_alerts(path: Path, alerts: Sequence[Alert | FoundAlert]) -> None:
    """Write ``alerts`` as JSON lines, in time order."""
    writer = AlertsWriter(path)
    try:
        writer(alerts)
    finally:
        writer.close()


def return_stats(result: BacktestResult) -> dict[str, dict[str, ReturnStats]]:
    """Return, per rule that fired and horizon, the forward-return statistics of its alerts."""
    stats: dict[str, dict[str, ReturnStats]] = {}
    for number in sorted(set(result.rule_index.tolist()), key=result.rule_types.__getitem__):
        rule_type = result.rule_types[number]
        sign = -1.0 if rule_type in SHORT_RULES else 1.0
        forward = result.forward[result.rule_index == number]
        per_horizon = {}
        for h, name in enumerate(HORIZONS):
            values = forward[:, h][~np.isnan(forward[:, h])]
            per_horizon[name] = ReturnStats(
                count=len(values),
                mean=float(np.mean(values)) if len(values) else None,
                median=float(np.median(values)) if len(values) else None,
                hit_rate=float(np.count_nonzero(sign * values > 0)) / len(values) if len(values) else None,
            )
        stats[rule_type] = per_horizon
    return stats


def build_report(result: BacktestResult) -> dict[str, object]:
    """Return the report as a JSON-ready dict."""
    stats = return_stats(result)
    rules: dict[str, object] = {}
    for rule_type in sorted(stats):
        fired = result.symbol_index[result.rule_index == result.rule_types.index(rule_type)]
        numbers, counts = np.unique(fired, return_counts=True)
        rules[rule_type] = {
            "alerts": len(fired),
            "direction": "short" if rule_type in SHORT_RULES else "long",
            "by_symbol": dict(
                sorted((result.symbols[n], int(c)) for n, c in zip(numbers.tolist(), counts.tolist(), strict=True))
            ),
            "forward_returns": {h: s.__dict__ for h, s in stats[rule_type].items()},
        }
    return {
        "from": minute_close_iso(result.start - 60_000),  # the first evaluated minute's open time
        "to": minute_close_iso(result.end - 60_000),  # exclusive
        "symbols": sorted(result.symbols),
        "symbol_minutes": result.symbol_minutes,
        "quote_volume_derived": sorted(result.quote_volume_derived),
        "alerts": result.count,
        "rules": rules,
    }


def _fmt(value: float | None, percent: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value * 100:.0f}%" if percent else f"{value:+.2f}"


def render_markdown(report: dict[str, object]) -> str:
    """Return the report as a Markdown document."""
    rules = report["rules"]
    assert isinstance(rules, dict)
    lines = [
        "# Backtest report",
        "",
        f"Minutes opening from {report['from']} to {report['to']} (exclusive), {len(report['symbols'])} symbols "  # type: ignore[arg-type]
        f"({report['symbol_minutes']} symbol-minutes), {report['alerts']} alerts.",
    ]
    if report["quote_volume_derived"]:
        lines.append(
            "Quote volume derived as volume x typical price (no quote volume in the source) for: "
            + ", ".join(report["quote_volume_derived"])  # type: ignore[arg-type]
        )
    header = " | ".join(f"{h} mean / median / hit" for h in HORIZONS)
    lines += ["", "## Forward returns after each alert (percent)", "", f"| rule | dir | alerts | {header} |"]
    lines.append("|" + "---|" * (3 + len(HORIZONS)))
    for rule_type, entry in rules.items():
        cells = []
        for h in HORIZONS:
            s = entry["forward_returns"][h]
            cells.append(f"{_fmt(s['mean'])} / {_fmt(s['median'])} / {_fmt(s['hit_rate'], percent=True)}")
        lines.append(f"| {rule_type} | {entry['direction']} | {entry['alerts']} | " + " | ".join(cells) + " |")
    lines += ["", "## Alerts per rule and symbol", "", "| rule | symbol | alerts |", "|---|---|---|"]
    for rule_type, entry in rules.items():
        for symbol, count in entry["by_symbol"].items():
            lines.append(f"| {rule_type} | {symbol} | {count} |")
    lines += ["", "Hit rate: share of alerts after which the price moved the rule's way (down for short rules)."]
    return "\n".join(lines) + "\n"


def render_chart(report: dict[str, object], path: Path) -> None:
    """Draw alerts per rule and mean forward returns per horizon into a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")  # no display: write files only
    import matplotlib.pyplot as plt

    rules = report["rules"]
    assert isinstance(rules, dict)
    names = list(rules)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 9), constrained_layout=True)
    top.barh(names, [rules[n]["alerts"] for n in names], color="#4c72b0")
    top.set_title("Alerts per rule")
    top.invert_yaxis()
    width = 0.8 / len(HORIZONS)
    for k, horizon in enumerate(HORIZONS):
        means = [rules[n]["forward_returns"][horizon]["mean"] or 0.0 for n in names]
        bottom.bar([i + k * width for i in range(len(names))], means, width, label=horizon)
    bottom.axhline(0, color="black", linewidth=0.8)
    bottom.set_xticks([i + width * (len(HORIZONS) - 1) / 2 for i in range(len(names))])
    bottom.set_xticklabels([n.removeprefix("futures_") for n in names], rotation=45, ha="right")
    bottom.set_ylabel("mean forward return (%)")
    bottom.set_title("Mean forward return after the alert")
    bottom.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(result: BacktestResult, directory: Path) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` and ``chart.png`` into ``directory``; return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    report = build_report(result)
    paths = {"json": directory / "report.json", "markdown": directory / "report.md", "chart": directory / "chart.png"}
    paths["json"].write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    paths["markdown"].write_text(render_markdown(report), encoding="utf-8")
    render_chart(report, paths["chart"])
    return paths
