"""Hot reload: follow ``alert_rules`` / ``user_settings`` changes through PostgreSQL LISTEN/NOTIFY.

The row triggers of 008_targeted_rule_notifications.sql notify ``screener_rules_changed`` with what
changed (``functions.rules.changes``). A watcher keeps one connection listening, waits a short
moment so a burst of edits costs one reload, and calls back with the merged changes, so the
consumer reloads only those rows. A lost connection is re-opened and followed by a full reload,
because notifications sent while it was down are gone; a periodic full reload covers anything else
missed. The rules function listens on a connection of its own (``connect_to``); the gateway's rule
switches on one of their pool's, given back without its listener when it is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import asyncpg

from functions.rules.changes import RuleChanges
from functions.rules.store import RULES_CHANGED_CHANNEL

log = logging.getLogger(__name__)

# Where a watcher takes its listening connection: a context manager that gives the connection back
# (closed, or released to its pool) when the watcher is done with it.
ConnectionSource = Callable[[], AbstractAsyncContextManager[Any]]


def connect_to(dsn: str) -> ConnectionSource:
    """Return a ``ConnectionSource`` opening a connection of its own to ``dsn`` (closed after use)."""

    @contextlib.asynccontextmanager
    async def connection() -> AsyncIterator[asyncpg.Connection]:
        conn = await asyncpg.connect(dsn)
        try:
            yield conn
        finally:
            if not conn.is_closed():
                with contextlib.suppress(Exception):
                    await conn.close()

    return connection


class RulesWatcher:
    """Call ``reload(changes)`` within about ``debounce_seconds`` of every rules change notified."""

    def __init__(
        self,
        connection: ConnectionSource,
        reload: Callable[[RuleChanges], Awaitable[None]],
        *,
        debounce_seconds: float = 0.2,
        resync_seconds: float = 300.0,
        retry_seconds: float = 1.0,
    ) -> None:
        self._connection = connection
        self._reload = reload
        self._debounce = debounce_seconds
        self._resync = resync_seconds
        self._retry = retry_seconds
        self._changed = asyncio.Event()
        self._pending: list[RuleChanges] = []
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()

    async def start(self) -> None:
        """Start listening; return once the first LISTEN is in place."""
        self._task = asyncio.create_task(self._run(), name="rules-watcher")
        waiter = asyncio.create_task(self._listening.wait())
        await asyncio.wait({waiter, self._task}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()

    async def close(self) -> None:
        """Stop listening."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _notified(self, _conn: object, _pid: object, _channel: object, payload: object) -> None:
        self._pending.append(RuleChanges.parse(str(payload)))
        self._changed.set()

    def _terminated(self, *_: object) -> None:
        self._lost.set()

    async def _run(self) -> None:
        while True:
            try:
                async with self._connection() as conn:
                    # After the first LISTEN, changes made while nobody listened are gone: read all.
                    await self._listen_on(conn, reload_first=self._listening.is_set())
            except asyncio.CancelledError:
                raise
            except Exception:  # a loop boundary: log, reconnect, never die silently
                log.exception("rules watcher: listening failed; reconnecting in %.1fs", self._retry)
            await asyncio.sleep(self._retry)

    async def _listen_on(self, conn: asyncpg.Connection, *, reload_first: bool) -> None:
        """LISTEN on ``conn`` and follow its notifications until its session ends."""
        self._lost.clear()
        conn.add_termination_listener(self._terminated)
        try:
            await conn.add_listener(RULES_CHANGED_CHANNEL, self._notified)
            self._listening.set()
            if reload_first:
                await self._reload(RuleChanges.all())  # changes made while we were not listening
            await self._follow()
        finally:
            # A pooled connection outlives the watcher's use of it: it must not call back any more.
            conn.remove_termination_listener(self._terminated)
            if not conn.is_closed():
                with contextlib.suppress(Exception):
                    await conn.remove_listener(RULES_CHANGED_CHANNEL, self._notified)

    async def _follow(self) -> None:
        while not self._lost.is_set():
            changed = asyncio.create_task(self._changed.wait())
            lost = asyncio.create_task(self._lost.wait())
            done, pending = await asyncio.wait({changed, lost}, timeout=self._resync, return_when="FIRST_COMPLETED")
            for task in pending:
                task.cancel()
            if lost in done:
                return
            if changed not in done:  # the periodic resync
                await self._reload(RuleChanges.all())
                continue
            await asyncio.sleep(self._debounce)
            self._changed.clear()
            notified, self._pending = self._pending, []
            changes = RuleChanges.merge(notified)
            if changes:
                await self._reload(changes)
