"""`hybridgate tco`: the offline TCO and breakeven calculator.

Every assumption is a flag; `--config` takes pools, engineering, prices and the month
length from hybridgate.yaml, and flags given explicitly win over the file. With no
flags the assumptions are the seed article's, and the output reproduces its figures
beside what its script leaves out (an always-on GPU's idle hours).

One job per module: `flags` (the flags and their types), `assumptions` (flags > config >
the seed's, the only file reading), `scenarios` (every scenario at one volume, from the
pure arithmetic in `costing/`), `render` (rich tables) and `report_json` (`--json`).
Heavy imports (rich, yaml, the price table) happen inside `run`, so `hybridgate --help`
stays fast.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from proxy.cli.tco.flags import add_arguments


def register(subparsers: Any) -> None:
    """Add the `tco` subcommand to the `hybridgate` parser."""
    p = subparsers.add_parser(
        "tco",
        help="offline TCO and breakeven calculator (API vs self-hosted vs hybrid)",
        description="Monthly cost of one traffic profile served by the API, by self-hosted "
        "GPUs (rented, bought or serverless) and by a hybrid, and where self-hosting breaks "
        "even. Defaults are the seed article's assumptions; --config takes pools, "
        "engineering and prices from hybridgate.yaml; explicit flags win.",
    )
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Compute and print; exit 2 on a bad flag or config (message on stderr)."""
    from costing.seed import SEED_VOLUMES
    from proxy.cli.tco.assumptions import UsageError, resolve
    from proxy.cli.tco.scenarios import breakeven_of, row, seed_check

    try:
        a = resolve(args)
    except UsageError as exc:
        print(f"hybridgate tco: error: {exc}", file=sys.stderr)
        return 2

    main = row(a, a.requests)
    sweep = [row(a, v) for v in (args.volumes or SEED_VOLUMES)] if args.sweep else []
    be = breakeven_of(a) if args.breakeven or args.sweep else None
    seed = seed_check(a)
    if args.seed_defaults and seed is None:
        a.notes.append("flags changed the seed's assumptions, so its figures are not checked")

    if args.json:
        from proxy.cli.tco.report_json import document, write_json

        write_json(document(a, main, sweep if args.sweep else None, be, seed), sys.stdout)
        return 0

    from proxy.cli.tco.render import print_text

    print_text(a, main, sweep, be, seed, bool(args.sweep), bool(args.breakeven))
    return 0
