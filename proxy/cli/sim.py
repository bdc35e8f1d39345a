"""`hybridgate sim`: run the upstream simulator (a vLLM-like or an OpenAI-like server)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from simulator.config import add_arguments

    parser = subparsers.add_parser(
        "sim",
        help="run the upstream simulator (vLLM-like or API-like)",
        description="Upstream simulator: a vLLM-like GPU server with a step loop, or an "
        "OpenAI-like API with fixed latency; fault knobs at /sim/faults, truth at /sim/stats.",
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from simulator.config import from_args
    from simulator.server import run as serve

    return serve(from_args(args))
