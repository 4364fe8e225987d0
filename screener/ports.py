"""Listening ports that must be free: checked before anything starts, reported in one line each.

A port another program holds would otherwise crash the server that wants it, over and over under
the supervisor, while the other program answers the URLs we print. ``screener up`` checks its ports
first and stops with a line that says which port is taken and which setting or flag changes it; a
server that loses the race anyway exits with ``EXIT_PORT_IN_USE``, which the supervisor treats as final.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from screener.config import ENV_PREFIX

# The exit status of a child that cannot run as configured (EX_CONFIG of sysexits.h: restarting
# cannot help, the configuration must change): a server whose port is taken, a replay whose data
# cannot be read. Its last log line says why.
EXIT_CONFIG = 78
EXIT_PORT_IN_USE = EXIT_CONFIG


@dataclass(frozen=True)
class WantedPort:
    """A port a server will listen on, and how the user chooses another one."""

    what: str
    host: str
    port: int
    change: str

    def taken_message(self) -> str:
        """Return the one line that tells the user what is taken and how to choose another port."""
        return (
            f"port {self.port} on {self.host} ({self.what}) is already in use by another program; "
            f"choose another with {self.change}"
        )


class PortInUseError(OSError):
    """A server could not listen because its port is taken; the message says which and how to change it."""


def is_free(host: str, port: int) -> bool:
    """Return whether a server could listen on ``host:port`` now (port 0, "any free port", always can)."""
    if port == 0:
        return True
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return True  # an unresolvable host is the server's own error to report, not a taken port
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as sock:
            # As the servers do (aiohttp sets SO_REUSEADDR): a port in TIME_WAIT is free, a listener is not.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return False
                raise
    return True


def taken(wanted: Iterable[WantedPort]) -> list[WantedPort]:
    """Return the ports of ``wanted`` that another program holds."""
    return [port for port in wanted if not is_free(port.host, port.port)]


def gateway_port(host: str, port: int) -> WantedPort:
    """Return the gateway's listening port and how a user chooses another."""
    return WantedPort("the gateway", host, port, f"--port N or {ENV_PREFIX}GATEWAY_PORT=N")
