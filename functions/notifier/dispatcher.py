"""Run delivery jobs in one FIFO lane per destination, so a slow endpoint only ever delays itself.

Each lane is a queue drained by its own task; the task ends when its queue is empty and a new one
starts with the next job. Lanes share nothing but the event loop, so a destination that hangs until
its timeout holds up its own later alerts and nobody else's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

JobT = TypeVar("JobT")
LaneT = TypeVar("LaneT", bound=Hashable)
IdT = TypeVar("IdT", bound=Hashable)


class Dispatcher(Generic[JobT, LaneT, IdT]):
    """Run ``work(job)`` for every submitted job: in order within a lane, lanes independently."""

    def __init__(
        self,
        work: Callable[[JobT], Awaitable[None]],
        lane_of: Callable[[JobT], LaneT],
        id_of: Callable[[JobT], IdT],
    ) -> None:
        self._work = work
        self._lane_of = lane_of
        self._id_of = id_of
        self._queues: dict[LaneT, deque[JobT]] = {}
        self._tasks: dict[LaneT, asyncio.Task[None]] = {}
        self._running: dict[LaneT, JobT] = {}
        self._outstanding: set[IdT] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False

    def submit(self, job: JobT) -> bool:
        """Queue ``job`` on its lane; return False when the same job is already queued or running."""
        if self._closed:
            raise RuntimeError("the dispatcher is closed")
        job_id = self._id_of(job)
        if job_id in self._outstanding:
            return False
        self._outstanding.add(job_id)
        self._idle.clear()
        lane = self._lane_of(job)
        self._queues.setdefault(lane, deque()).append(job)
        task = self._tasks.get(lane)
        if task is None or task.done():
            self._tasks[lane] = asyncio.create_task(self._drain(lane), name=f"notifier-lane-{lane}")
        return True

    def is_outstanding(self, job_id: IdT) -> bool:
        """Return whether the job with ``job_id`` is queued or running."""
        return job_id in self._outstanding

    @property
    def outstanding(self) -> int:
        """Return how many jobs are queued or running."""
        return len(self._outstanding)

    async def _drain(self, lane: LaneT) -> None:
        queue = self._queues[lane]
        try:
            while queue:
                job = queue.popleft()
                self._running[lane] = job
                try:
                    await self._work(job)
                except Exception:
                    # The lane's loop boundary: one broken job must not stop the lane's later ones.
                    log.exception("delivery job %s failed", self._id_of(job))
                finally:
                    self._running.pop(lane, None)
                    self._finish(job)
        finally:
            if not queue:
                self._queues.pop(lane, None)
                self._tasks.pop(lane, None)

    def _finish(self, job: JobT) -> None:
        self._outstanding.discard(self._id_of(job))
        if not self._outstanding:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Return once every submitted job has finished."""
        await self._idle.wait()

    async def close(self, grace_seconds: float) -> list[JobT]:
        """Stop accepting jobs, let running ones finish for ``grace_seconds``, cancel the rest.

        Return the jobs that did not finish (queued or cancelled), so the caller can hand them back.
        """
        self._closed = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout=grace_seconds)
        unfinished = [job for queue in self._queues.values() for job in queue] + list(self._running.values())
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._queues.clear()
        self._tasks.clear()
        self._running.clear()
        self._outstanding.clear()
        self._idle.set()
        return unfinished
