"""``screener run <function>``: run one function as a JetStream worker or a Knative HTTP service."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
from typing import Any

from aiohttp import web
from nats.errors import Error as NatsError

from screener import eventloop
from screener.config import Settings
from screener.connections import connect_nats
from screener.health import serve_health
from screener.runtime.function import Function
from screener.runtime.http import create_app
from screener.runtime.worker import Worker
from screener.tracing import setup_tracing

log = logging.getLogger(__name__)

# name -> "module:factory"; each factory is ``create(settings) -> Function``.
FUNCTIONS: dict[str, str] = {
    "calculator": "functions.calculator.function:create",
    "rules": "functions.rules.function:create",
    "notifier": "functions.notifier.function:create",
    "recorder": "functions.recorder.function:create",
}


def load_function(name: str, settings: Settings) -> Function[Any]:
    """Import and build the function called ``name``."""
    module_name, _, factory = FUNCTIONS[name].partition(":")
    function: Function[Any] = getattr(importlib.import_module(module_name), factory)(settings)
    return function


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``screener run``."""
    parser.add_argument("function", choices=sorted(FUNCTIONS), help="the function to run")
    parser.add_argument("--http", action="store_true", help="serve CloudEvents over HTTP (Knative), not JetStream")
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("PORT", "8080")), help="HTTP port (Knative: PORT)"
    )


async def _run_worker(name: str, settings: Settings) -> int:
    nc = await connect_nats(settings, name=f"screener-{name}")
    worker = Worker(load_function(name, settings), nc.jetstream(), settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    runner = await serve_health(worker, settings.health_port) if settings.health_port else None
    try:
        await worker.run()
    finally:
        if runner is not None:
            await runner.cleanup()
        try:
            await nc.drain()
        except NatsError as exc:  # the server may already be gone; nothing is left to flush
            log.warning("%s: NATS drain skipped: %s", name, exc)
    return 0


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run the chosen function until SIGTERM or Ctrl-C."""
    setup_tracing(settings, args.function)
    if args.http:
        web.run_app(create_app(load_function(args.function, settings)), port=args.port, print=log.info)
        return 0
    return eventloop.run(_run_worker(args.function, settings))
