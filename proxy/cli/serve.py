"""`hybridgate serve -c FILE`, and `load_or_report`, the config check `check` shares."""

from __future__ import annotations

import argparse
import logging
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the proxy")
    p.add_argument("-c", "--config", required=True, help="path to hybridgate.yaml")
    p.add_argument("--host", help="override listen.host")
    p.add_argument("--port", type=int, help="override listen.port")
    p.add_argument(
        "--workers", type=int, default=1, help="worker processes (default 1; docs/workers.md)"
    )
    p.set_defaults(func=run_serve)


def load_or_report(path: str, strict: bool = False):
    """The validated config, or None after printing every problem to stderr."""
    from proxy.config import ConfigError, load_config
    from proxy.metering.pricing import load_prices, price_problems

    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"{exc.source}: {len(exc.problems)} problem(s):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return None
    unpriced = price_problems(config, load_prices(config))
    if unpriced and strict:
        print(f"{path}: {len(unpriced)} problem(s):", file=sys.stderr)
        for problem in unpriced:
            print(f"  {problem}", file=sys.stderr)
        return None
    for problem in unpriced:  # served, counted in hybridgate_unpriced_requests_total
        print(f"warning: {problem}", file=sys.stderr)
    return config


def run_serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = load_or_report(args.config)
    if config is None:
        return 2
    if args.workers != 1:
        from proxy.multiproc import serve_workers, workers_problems

        problems = workers_problems(config, args.workers)
        if problems:
            print(f"{args.config}: cannot serve with --workers {args.workers}:", file=sys.stderr)
            for problem in problems:
                print(f"  {problem}", file=sys.stderr)
            return 2
        serve_workers(config, args.workers, args.host, args.port, args.config)
        return 0
    from proxy.server.run import serve

    serve(config, host=args.host, port=args.port, config_path=args.config)
    return 0
