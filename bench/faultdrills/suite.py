"""Run a list of drills, each ``repeat`` times, against one clean reference run."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .catalog import Drill
from .outcome import Outcome
from .report import Verdict, judge
from .runner import DrillRun, Replay, RunResult, SuiteConfig
from .servers import Servers


@dataclass
class Suite:
    """The drills of one invocation and their verdicts."""

    servers: Servers
    config: SuiteConfig
    drills: list[Drill]
    repeat: int = 1
    reference_speed: str = "600"
    verdicts: list[Verdict] = field(default_factory=list)
    skipped: list[tuple[Drill, str]] = field(default_factory=list)
    baseline: Outcome | None = None

    async def run(self) -> list[Verdict]:
        """Run the reference first (the first clean run), then every drill ``repeat`` times."""
        replay = Replay(self.config)
        print(
            f"drills: {self.config.recording.name}, {len(replay.market.symbols)} symbols, "
            f"{replay.minutes:,} minutes streamed after a {self.config.warmup:,}-minute warm-up "
            f"({replay.candles:,} candles), speed {self.config.speed}; logs in {self.config.work_dir}",
            flush=True,
        )
        started = time.monotonic()
        reference = next((d for d in self.drills if d.name == "clean"), None)
        order = [d for d in self.drills if d is not reference]
        if reference is None and any(not d.live for d in order):  # replay drills compare with the clean run
            reference = Drill("clean", "clean run (the reference)", speed=self.reference_speed)
        if reference is not None:
            order.insert(0, reference)
        for drill in order:
            missing = [name for name in drill.needs if not self.servers.controls(name)]
            if missing:
                self.skipped.append((drill, f"needs embedded {', '.join(missing)} (a URL was given)"))
                continue
            for number in range(1, self.repeat + 1):
                print(f"\n== {drill.name} #{number}: {drill.title} ({time.monotonic() - started:.0f} s in)", flush=True)
                result = await self._run_one(drill, number, replay)
                is_reference = self.baseline is None and drill is reference
                if is_reference and result.outcome is not None and result.error is None:
                    self.baseline = result.outcome
                    verdict = judge(result, None, reference=True)
                else:
                    verdict = judge(result, result.own_baseline or self.baseline)
                self.verdicts.append(verdict)
                status = "reference" if verdict.reference else ("pass" if verdict.passed else "FAIL")
                detail = "; ".join(verdict.problems + result.notes)
                print(f"== {drill.name} #{number}: {status} in {result.elapsed:.0f} s  {detail}", flush=True)
        await self.servers.drop_database()
        return self.verdicts

    async def _run_one(self, drill: Drill, number: int, replay: Replay) -> RunResult:
        if drill.live:
            from .live import LiveDrillRun

            return await LiveDrillRun(self.servers, self.config, drill, number).run()
        return await DrillRun(self.servers, self.config, replay, drill, number).run()

    @property
    def failed(self) -> bool:
        """Return whether any run (the reference aside) differs from the clean run."""
        return any(not v.passed for v in self.verdicts if not v.reference) or any(
            v.reference and v.problems for v in self.verdicts
        )
