"""The pipeline as production runs it: every function and the collector in an OS process of its own.

Each process gets its own session (so a signal meant for the harness never reaches it, and a kill
reaches only it) and is signalled by PID. Workers serve ``/stats`` on a health port; the harness
reads their counters there while they live.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from screener.config import Settings
from screener.embedded.servers import free_port

FUNCTIONS = ("recorder", "calculator", "rules", "notifier")


def replay_time_supported() -> bool:
    """Return whether this tree knows ``SCREENER_REPLAY_TIME`` (an unknown setting stops every process)."""
    return "replay_time" in Settings.model_fields


@dataclass
class Proc:
    """One process of the pipeline; ``start`` again after a kill to restart it."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    health_port: int | None = None
    popen: subprocess.Popen[bytes] | None = None
    starts: int = 0
    exits: list[int] = field(default_factory=list)
    # The last counters read from /stats of each incarnation (a killed one keeps its last reading).
    counters: list[dict[str, Any]] = field(default_factory=list)

    def start(self, argv: list[str] | None = None) -> None:
        """Start (or restart) the process, appending its output to its log."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        with self.log_path.open("ab") as handle:
            handle.write(f"\n--- drills: start {self.starts + 1} at {time.strftime('%X')} ---\n".encode())
            handle.flush()
            self.popen = subprocess.Popen(
                argv or self.argv, env=self.env, stdout=handle, stderr=handle, start_new_session=True
            )
        self.starts += 1
        self.counters.append({})

    @property
    def pid(self) -> int | None:
        """Return the PID of the running incarnation."""
        return self.popen.pid if self.popen is not None else None

    @property
    def running(self) -> bool:
        """Return whether the process runs now."""
        return self.popen is not None and self.popen.poll() is None

    def reap(self) -> int | None:
        """Return the exit status once the process has ended (and note it once)."""
        if self.popen is None:
            return None
        code = self.popen.poll()
        if code is not None and len(self.exits) < self.starts:
            self.exits.append(code)
        return code

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the process by its PID."""
        if self.popen is not None and self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, sig)

    def wait(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` seconds for the process to end; return its status (None: still running)."""
        if self.popen is None:
            return None
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.reap()

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds."""
        self.signal(signal.SIGTERM)
        if self.wait(grace) is None:
            self.signal(signal.SIGKILL)
            self.wait(grace)

    async def read_counters(self, session: aiohttp.ClientSession) -> None:
        """Read ``/stats`` of the running incarnation into its counters (silently: it may be dying)."""
        if self.health_port is None or not self.running:
            return
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
            async with session.get(f"http://127.0.0.1:{self.health_port}/stats") as response:
                if response.status == 200:
                    self.counters[-1] = dict(await response.json())

    def counter(self, name: str) -> int:
        """Return counter ``name`` summed over every incarnation (as last read)."""
        return sum(int(c.get(name, 0) or 0) for c in self.counters)


@dataclass
class Pipeline:
    """The processes of one drill run: N of each function, one collector."""

    env: dict[str, str]
    log_dir: Path
    procs: list[Proc] = field(default_factory=list)

    def add_function(self, function: str, index: int) -> Proc:
        """Plan ``screener run <function>`` (replica ``index``) with a health port of its own."""
        port = free_port()
        proc = Proc(
            f"{function}-{index}",
            [sys.executable, "-m", "screener.cli", "run", function],
            {**self.env, "SCREENER_HEALTH_PORT": str(port)},
            self.log_dir / f"{function}-{index}.log",
            port,
        )
        self.procs.append(proc)
        return proc

    def add_collector(self, argv_tail: list[str], extra_env: dict[str, str] | None = None) -> Proc:
        """Plan ``screener collector`` with ``argv_tail`` (replay options)."""
        proc = Proc(
            "collector",
            [sys.executable, "-m", "screener.cli", "collector", *argv_tail],
            {**self.env, **(extra_env or {})},
            self.log_dir / "collector.log",
        )
        self.procs.append(proc)
        return proc

    def of(self, role: str) -> list[Proc]:
        """Return the processes of ``role`` (a function name or ``collector``), in start order."""
        return [p for p in self.procs if p.name == role or p.name.startswith(f"{role}-")]

    def stop_all(self) -> None:
        """Stop every process that still runs."""
        for proc in self.procs:
            proc.signal(signal.SIGTERM)
        for proc in self.procs:
            if proc.wait(10.0) is None:
                proc.signal(signal.SIGKILL)
                proc.wait(5.0)
