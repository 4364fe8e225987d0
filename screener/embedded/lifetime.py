"""Child processes that end with the process that started them, even when it is killed with SIGKILL.

``screener up`` starts its servers and children in sessions of their own (a Ctrl-C must reach the
supervisor only, which stops them in order). Killed outright, it could not stop them: they would
keep the ports and the data folders, and the next ``screener up`` would find the gateway's port
taken. On Linux the kernel sends them SIGTERM when their parent dies (``PR_SET_PDEATHSIG``), and
they shut down as they do on Ctrl-C. Elsewhere nothing is set.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def _resolve_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


# Resolved here, in the parent: between fork and exec the child only makes this one libc call
# (nothing to import or load while another thread of the parent may have held a lock at fork).
_PRCTL = _resolve_prctl()


def terminate_with_parent() -> None:
    """Ask the kernel to send this process SIGTERM when its parent dies (a ``preexec_fn``).

    Runs in the child between fork and exec, after ``subprocess`` changed its user, so the setting
    holds for a server started as another user too.
    """
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
