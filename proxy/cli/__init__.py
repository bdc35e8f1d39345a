"""The `hybridgate` command: one subcommand per module in this package.

Each subcommand module exposes `register(subparsers)`; heavy imports happen inside
the handlers so `hybridgate --help` and `hybridgate check` stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Subcommand modules, in the order `--help` lists them. A module that does not exist
# yet is skipped, so parts of the CLI can land independently.
SUBCOMMANDS = ("serve", "check", "tco", "report", "demo", "sim")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hybridgate",
        description="OpenAI-compatible proxy in front of self-hosted models and commercial APIs, "
        "with live cost, TCO and breakeven.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"proxy.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"proxy.cli.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    code = args.func(args)
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
