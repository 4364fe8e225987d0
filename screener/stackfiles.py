"""Files ``screener up`` keeps in its data folder: the generated token secret and where its servers listen.

The secret is made once and reused, so tokens survive a restart (decision 4). ``servers.json`` lets
commands run beside a running ``screener up`` (``screener users``) find its embedded PostgreSQL,
whose port changes at every start.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path

JWT_SECRET_FILE = "jwt-secret"
SERVERS_FILE = "servers.json"


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file only the owner can read, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    partial.replace(path)


def jwt_secret(data_dir: Path) -> str:
    """Return the token secret kept in ``data_dir``, generating it on first use."""
    path = data_dir / JWT_SECRET_FILE
    if path.exists():
        secret = path.read_text().strip()
        if len(secret) >= 32:
            return secret
    secret = secrets.token_urlsafe(48)
    _write_private(path, secret + "\n")
    return secret


def write_servers(data_dir: Path, urls: dict[str, str]) -> None:
    """Record where the running stack's servers listen."""
    _write_private(data_dir / SERVERS_FILE, json.dumps({**urls, "pid": os.getpid()}, indent=2) + "\n")


def remove_servers(data_dir: Path) -> None:
    """Forget the servers of a stack that stopped."""
    with contextlib.suppress(FileNotFoundError):
        (data_dir / SERVERS_FILE).unlink()


def running_postgres(data_dir: Path) -> str | None:
    """Return the PostgreSQL DSN of a ``screener up`` running on ``data_dir``, if one is running."""
    try:
        recorded = json.loads((data_dir / SERVERS_FILE).read_text())
    except (OSError, ValueError):
        return None
    pid, dsn = recorded.get("pid"), recorded.get("postgres")
    if not isinstance(pid, int) or not isinstance(dsn, str):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None  # left behind by a stack that was killed
    except PermissionError:
        pass  # alive, owned by another user
    return dsn
