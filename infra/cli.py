"""The ``noc`` command. Each area registers its own subcommands from its ``cli`` module."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Callable, Sequence

# Modules exposing ``register(subparsers)``; each subcommand sets ``func`` taking the parsed args.
AREAS = (
    "infra.cli_infra",
    "infra.cli_topics",
    "infra.cli_demo",
    "infra.supervise",
    "infra.cli_verify",
    "simulator.cli",
    "streams.cli",
    "models.cli",
    "sinks.cli",
    "gateway.cli",
    "streams.replay_cli",
    "streams.baselines_cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="noc", description="nocstream: real-time NOC intelligence pipeline")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in AREAS:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int | None] = args.func
    try:
        return func(args) or 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
