"""Validate a user's new rule against the rules they can see, off the gateway's event loop.

Compiling a rule near the size caps takes tens of milliseconds of pure Python, and a thread would
still hold the GIL against the event loop; so the check runs in one worker process. Its compile
cache (``functions.rules.ruleset``, by expression text) keeps the rules already seen, so each check
compiles only the new rule and then checks references and cycles against the compiled set.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from functions.rules.errors import ExpressionError, RuleError
from functions.rules.ruleset import Rule, validate_rule
from screener.embedded.lifetime import terminate_with_parent

# (kind, message, position): what went wrong, as plain values that cross the process boundary.
Problem = tuple[str, str, int | None]
CHECK_TIMEOUT_SECONDS = 30.0


def check_in_worker(rule: dict[str, Any], existing: list[dict[str, Any]]) -> Problem | None:
    """Return None when ``rule`` fits ``existing``, else the problem (runs in the worker process)."""
    try:
        validate_rule(Rule.model_validate(rule), [Rule.model_validate(r) for r in existing])
    except ExpressionError as exc:
        return ("expression", exc.reason, exc.position)
    except RuleError as exc:
        return ("rule", str(exc), None)
    return None


def end_with_gateway(gateway_pid: int) -> None:
    """Make the worker end when the gateway does, even by SIGKILL (the worker's initializer).

    A worker blocks reading its task queue, whose write end it holds itself, so it never sees the
    gateway go: without this, every gateway killed outright would leave it (and the multiprocessing
    resource tracker) running for good.
    """
    terminate_with_parent()
    if os.getppid() != gateway_pid:  # the gateway died before the kernel was told
        os._exit(0)


class RuleChecker:
    """One worker process that validates rules; started on first use, stopped with ``close``."""

    def __init__(self) -> None:
        self._executor: ProcessPoolExecutor | None = None
        self._lock = asyncio.Lock()

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            # spawn, not fork: a fork of a process running an event loop and threads is not safe.
            self._executor = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=end_with_gateway,
                initargs=(os.getpid(),),
            )
        return self._executor

    async def check(self, rule: Rule, existing: list[Rule]) -> Problem | None:
        """Return None when ``rule`` compiles and fits ``existing`` (references, cycles), else the problem."""
        payload = rule.model_dump()
        others = [r.model_dump() for r in existing if r.rule_type != rule.rule_type]
        loop = asyncio.get_running_loop()
        # One check at a time: the worker is one process, and a queue of checks must not grow unbounded.
        async with self._lock:
            try:
                async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
                    return await loop.run_in_executor(self._pool(), check_in_worker, payload, others)
            except BrokenProcessPool:
                self._executor = None  # the worker died (killed, out of memory): start a new one next time
                raise

    async def close(self) -> None:
        """Stop the worker process."""
        if self._executor is not None:
            executor, self._executor = self._executor, None
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown)
