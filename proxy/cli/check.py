"""`hybridgate check -c FILE`: every problem of a config, each with its path; exit 1 if any."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="validate a config file and list every problem")
    p.add_argument("-c", "--config", required=True, help="path to hybridgate.yaml")
    p.add_argument(
        "--strict", action="store_true", help="treat an API model without a known price as an error"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from proxy.cli.serve import load_or_report
    from proxy.config import warnings_for

    config = load_or_report(args.config, strict=args.strict)
    if config is None:
        return 1
    for warning in warnings_for(config):
        print(f"warning: {warning}", file=sys.stderr)
    print(
        f"{args.config}: OK ({len(config.backends)} backends, {len(config.models)} model "
        f"aliases, {len(config.gpu_pools)} GPU pools)"
    )
    return 0
