"""The ``screener`` command line: one entry point, a sub-command per job.

Sub-commands live in the modules that own them; each module offers ``add_arguments(parser)`` and
``run(args, settings) -> int``. They are imported only when chosen, so ``screener --help`` stays fast
and a function's container does not import the gateway.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from screener.config import ConfigError, load_settings

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "up": ("screener.stack", "run the whole pipeline and the dashboard on this machine"),
    "run": ("screener.runtime.run", "run one function as a JetStream worker or a Knative HTTP service"),
    "collector": ("collector.cli", "run the collector (live Binance or replay of recorded klines)"),
    "gateway": ("gateway.cli", "run the REST/WebSocket gateway and the dashboard"),
    "migrate": ("screener.db.cli", "apply the database migrations and retention"),
    "users": ("gateway.accounts.cli", "manage accounts: create an admin, list users, set plans, invites"),
    "backtest": ("functions.rules.backtest", "evaluate the rules over recorded klines and write a report"),
    "scale-advice": ("screener.scale_advice", "print the replica counts KEDA would choose now"),
}


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    """Return the argument parser with every sub-command registered."""
    parser = argparse.ArgumentParser(prog="screener", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(_module=module_name)
        if name in argv[:1]:  # only the chosen command's module is imported
            importlib.import_module(module_name).add_arguments(command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"screener: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args, settings))
    except ConfigError as exc:  # a setting only checked where it is used (SMTP URL, Whop API URL)
        print(f"screener: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
