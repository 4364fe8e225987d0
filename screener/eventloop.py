"""Run a process's main coroutine on uvloop where it exists (Linux, macOS), else on asyncio's loop.

Every long-running process (workers, collector, gateway) spends much of a minute's burst in the event
loop itself: thousands of NATS messages and Redis replies. uvloop does that work in C.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on a new event loop (uvloop when installed) and return its result."""
    try:
        import uvloop
    except ImportError:  # not on this platform: the standard loop works, just slower
        return asyncio.run(main)
    return uvloop.run(main)
