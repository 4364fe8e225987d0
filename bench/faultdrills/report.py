"""Judge a run against the clean run, and print the table (Markdown) and the JSON."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .outcome import IdDiff, Outcome, candle_consumers, diff_counts, diff_events, diff_rows
from .runner import RunResult

COLUMNS = (
    "drill", "run", "candles (stream · rows)", "metrics", "alerts (stream)", "alerts (db)",
    "dead letters (expected → got)", "naks · retried", "dropped", "drain", "result",
)  # fmt: skip


@dataclass
class Verdict:
    """A run compared with the clean run."""

    result: RunResult
    reference: bool = False
    diffs: dict[str, IdDiff] = field(default_factory=dict)
    dead_expected: Counter[str] = field(default_factory=Counter)
    dead_got: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)  # alert id -> "rule SYMBOL minute"

    @property
    def passed(self) -> bool:
        """Return whether the run equals the clean run in every output and drained in time."""
        return not self.problems


def judge(result: RunResult, baseline: Outcome | None, *, reference: bool = False) -> Verdict:
    """Compare ``result`` with the clean run's outcome (``baseline``; None: it is the reference itself)."""
    verdict = Verdict(result, reference=reference)
    out = result.outcome
    if result.error or out is None:
        verdict.problems.append(f"run failed: {result.error or 'no outcome'}")
        return verdict
    base = baseline or out
    verdict.labels = {**base.alert_labels, **out.alert_labels}
    verdict.diffs = {
        "candle events": diff_counts(base.candle_ids, out.candle_ids),
        "candle rows": diff_rows(base.candle_rows, out.candle_rows),
        "metrics": diff_events(base.metrics, out.metrics),
        "alerts": diff_events(base.alerts, out.alerts),
        "alert rows": diff_events(base.alert_rows, out.alert_rows),
    }
    for name, diff in verdict.diffs.items():
        if not diff.exact:
            verdict.problems.append(f"{name} differ")
    # Dead letters: what the clean run had, plus every poisoned event once per candle consumer.
    consumers = candle_consumers()
    verdict.dead_expected = base.dead_letters_by_function(poison=False)
    for function in consumers:
        verdict.dead_expected[function] += result.poisoned
    verdict.dead_got = Counter(d.function for d in out.dead_letters)
    if +verdict.dead_expected != +verdict.dead_got:
        verdict.problems.append("dead letters differ")
    for function in consumers:
        lettered = {d.poison for d in out.dead_letters if d.function == function and d.poison is not None}
        missing = [n for n in range(result.poisoned) if str(n) not in lettered]
        if missing:
            kinds = Counter(result.poison_kinds[n] for n in missing)
            named = ", ".join(f"{k} ×{c}" for k, c in sorted(kinds.items()))
            verdict.problems.append(f"{function} did not dead-letter {len(missing)} poisoned: {named}")
    if reference and (out.dead_letters or sum(result.dropped.values())):
        verdict.problems.append("the reference is not clean: every other run is compared with a faulty one")
    if sum(result.dropped.values()):
        verdict.problems.append(f"{sum(result.dropped.values())} dropped at the delivery limit")
    if not result.drained:
        verdict.problems.append(f"not drained (lag {result.final_lag})")
    return verdict


def _dead_cell(v: Verdict) -> str:
    names = sorted(n for n in set(v.dead_expected) | set(v.dead_got) if v.dead_expected[n] or v.dead_got[n])
    if not names:
        return "0 ✓"
    text = " · ".join(f"{n} {v.dead_expected[n]}→{v.dead_got[n]}" for n in names)
    return text + " ✓" if +v.dead_expected == +v.dead_got else f"**{text}**"


def _counter_cell(counts: Counter[str]) -> str:
    total = sum(counts.values())
    if not total:
        return "0"
    per = ", ".join(f"{k.split('/')[-1]} {n:,}" for k, n in counts.most_common())
    return f"{total:,} ({per})"


def row(v: Verdict) -> list[str]:
    """Return the table row of one run."""
    r = v.result
    if not v.diffs:
        return [r.drill.name, str(r.number), "-", "-", "-", "-", "-", "-", "-", "-", f"**error**: {r.error}"]
    d = v.diffs
    candles = f"{d['candle events'].cell()} · {d['candle rows'].cell()}"
    drain = f"{r.drain_seconds:.1f} s" if r.drained and r.drain_seconds is not None else f"**no** ({r.final_lag})"
    naks = f"{_counter_cell(r.naks)} · {r.retried:,}"
    verdict = "reference" if v.reference else ("pass" if v.passed else "**FAIL**")
    return [
        r.drill.name,
        str(r.number),
        candles,
        d["metrics"].cell(),
        d["alerts"].cell(v.labels),
        d["alert rows"].cell(v.labels),
        _dead_cell(v),
        naks,
        _counter_cell(r.dropped),
        drain,
        verdict,
    ]


def markdown(verdicts: list[Verdict]) -> str:
    """Return the Markdown table of every run."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row(v)) + " |" for v in verdicts]
    return "\n".join(lines)


def as_json(v: Verdict) -> dict[str, Any]:
    """Return one run as JSON (every differing id)."""
    r = v.result
    return {
        "drill": r.drill.name,
        "title": r.drill.title,
        "run": r.number,
        "passed": v.passed,
        "reference": v.reference,
        "problems": v.problems,
        "diffs": {name: diff.as_json() for name, diff in v.diffs.items()},
        "dead_letters": {"expected": dict(v.dead_expected), "got": dict(v.dead_got)},
        "naks": dict(r.naks),
        "retried": r.retried,
        "dropped": dict(r.dropped),
        "drained": r.drained,
        "drain_seconds": r.drain_seconds,
        "elapsed_seconds": round(r.elapsed, 1),
        "notes": r.notes,
        "error": r.error,
        "logs": str(r.log_dir) if r.log_dir else None,
    }
