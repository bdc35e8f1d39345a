"""`hybridgate demo`: a simulated GPU backend and API, the proxy, a day of traffic, the report."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run a simulated GPU backend and API behind the proxy, with a day of traffic",
        description="Starts a simulated vLLM (a rented GPU) and a simulated commercial API, the "
        "proxy with a demo config (spillover alias 'chat', API alias 'frontier', confidential "
        "data pinned to the GPU), drives a working day of traffic compressed into --duration "
        "seconds, prints the live report and keeps the dashboard up until Ctrl-C.",
    )
    p.add_argument("--duration", type=float, default=60.0, help="seconds for the day (60)")
    p.add_argument("--rps", type=float, default=10.0, help="mean requests per second (10)")
    p.add_argument(
        "--port", type=int, default=4000, help="proxy port (4000; a free one if taken; 0: any)"
    )
    p.add_argument("--window", default="1h", choices=("1h", "24h", "7d", "all"))
    p.add_argument("--exit", action="store_true", help="stop right after printing the report")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from proxy.demo.run import run_demo

    if args.duration <= 0 or args.rps <= 0:
        print("hybridgate demo: --duration and --rps must be > 0")
        return 2
    return run_demo(args.duration, args.rps, args.port, args.exit, Console(), args.window)
