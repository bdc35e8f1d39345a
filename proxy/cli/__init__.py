"""The `hybridgate` command: one subcommand per module in this package.

Each subcommand module exposes `register(subparsers)`; heavy imports happen inside
the handlers so `hybridgate --help` and `hybridgate check` stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Subcommand modules, in the order `--help` lists them. Every one ships with the package:
# one that fails to import is a broken install, so the error surfaces instead of the
# subcommand quietly vanishing from `--help`.
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
        importlib.import_module(f"proxy.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    code = args.func(args)
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
