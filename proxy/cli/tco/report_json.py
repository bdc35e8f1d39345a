"""`tco --json`: the run as one JSON document (the machine-readable contract, docs/tco.md)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from costing.breakeven import BreakevenResult
    from costing.seed import SeedComparison
    from proxy.cli.tco.assumptions import Assumptions
    from proxy.cli.tco.scenarios import Row


def document(
    a: Assumptions,
    main: Row,
    sweep: Sequence[Row] | None,
    be: BreakevenResult | None,
    seed: SeedComparison | None,
) -> dict[str, Any]:
    """The JSON document; `sweep` is None when --sweep was not given (no "sweep" key)."""
    out: dict[str, Any] = {
        "hours_per_month": a.hours_per_month,
        "assumptions": a.describe(),
        "scenarios": {k: r.to_dict() for k, r in main.scenarios().items()},
        "cheapest": main.winner[0],
        "seed_check": None if seed is None else seed.to_dict(),
    }
    if sweep is not None:
        out["sweep"] = [
            {
                "requests_per_month": row.requests,
                "winner": row.winner[0],
                **{k: r.to_dict() for k, r in row.scenarios().items()},
            }
            for row in sweep
        ]
    if be is not None:
        out["breakeven"] = be.to_dict()
    return out


def write_json(out: dict[str, Any], stream: TextIO) -> None:
    json.dump(out, stream, indent=2, default=str)
    stream.write("\n")
