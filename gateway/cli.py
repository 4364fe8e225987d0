"""``screener gateway``: serve the REST/WebSocket API and the dashboard."""

from __future__ import annotations

import argparse
import sys

from screener import eventloop
from screener.config import Settings
from screener.ports import EXIT_PORT_IN_USE, PortInUseError
from screener.tracing import setup_tracing


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the gateway's options (they override SCREENER_GATEWAY_HOST/PORT)."""
    parser.add_argument("--host", help="address to listen on (default: SCREENER_GATEWAY_HOST)")
    parser.add_argument("--port", type=int, help="port to listen on (default: SCREENER_GATEWAY_PORT)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Serve until SIGINT/SIGTERM; return the exit status."""
    from gateway.app import serve

    changes: dict[str, object] = {}
    if args.host:
        changes["gateway_host"] = args.host
    if args.port is not None:
        changes["gateway_port"] = args.port
    chosen = settings.model_copy(update=changes) if changes else settings
    setup_tracing(chosen, "gateway")
    try:
        eventloop.run(serve(chosen))
    except PortInUseError as exc:  # restarting cannot help: say so once, with the way out
        print(f"screener gateway: {exc.strerror}", file=sys.stderr, flush=True)
        return EXIT_PORT_IN_USE
    return 0
