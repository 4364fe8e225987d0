"""The files `screener up` keeps: a token secret made once, and where its database listens while it runs."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

from screener import stackfiles


def test_the_token_secret_is_made_once_private_and_kept(tmp_path: Path) -> None:
    first = stackfiles.jwt_secret(tmp_path)
    assert len(first) >= 32
    path = tmp_path / stackfiles.JWT_SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stackfiles.jwt_secret(tmp_path) == first  # a restart signs with the same secret


def test_a_truncated_secret_file_is_replaced(tmp_path: Path) -> None:
    (tmp_path / stackfiles.JWT_SECRET_FILE).write_text("short\n")
    assert len(stackfiles.jwt_secret(tmp_path)) >= 32


def test_the_database_of_a_running_stack_is_found_and_a_dead_one_is_not(tmp_path: Path) -> None:
    stackfiles.write_servers(tmp_path, {"postgres": "postgresql://postgres@127.0.0.1:5999/screener"})
    assert stackfiles.running_postgres(tmp_path) == "postgresql://postgres@127.0.0.1:5999/screener"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    recorded = json.loads((tmp_path / stackfiles.SERVERS_FILE).read_text())
    recorded["pid"] = int(dead.stdout)
    (tmp_path / stackfiles.SERVERS_FILE).write_text(json.dumps(recorded))
    assert stackfiles.running_postgres(tmp_path) is None
    stackfiles.remove_servers(tmp_path)
    assert stackfiles.running_postgres(tmp_path) is None
