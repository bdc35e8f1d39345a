"""Every scenario of a `tco` run at one volume, the breakeven, and the seed's check:
assembled from `costing/`, the pure arithmetic, for the renderers to read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from costing.breakeven import BreakevenResult
    from costing.seed import SeedComparison
    from costing.tco import ScenarioResult
    from proxy.cli.tco.assumptions import Assumptions


@dataclass
class Row:
    """Every scenario at one volume."""

    requests: int
    api_only: ScenarioResult
    busy_only: ScenarioResult | None
    selfhosted: ScenarioResult
    hybrid_current: ScenarioResult | None
    hybrid_optimal: ScenarioResult | None

    @property
    def winner(self) -> tuple[str, ScenarioResult]:
        """Cheapest real option; a tie goes to the simpler one (API, then self-hosted)."""
        options: list[tuple[str, ScenarioResult]] = [
            ("API-only", self.api_only),
            ("self-hosted", self.selfhosted),
        ]
        if self.hybrid_optimal is not None:
            options.append(("hybrid", self.hybrid_optimal))
        name, best = min(options, key=lambda o: o[1].monthly_usd)
        if name == "hybrid":
            name = f"hybrid ({best.gpus} GPU{'s' if best.gpus != 1 else ''} + API)"
        return name, best

    def scenarios(self) -> dict[str, ScenarioResult]:
        out = {"api_only": self.api_only}
        if self.busy_only is not None:
            out["selfhosted_busy_only"] = self.busy_only
        out["selfhosted_only"] = self.selfhosted
        if self.hybrid_current is not None:
            out["hybrid_current"] = self.hybrid_current
        if self.hybrid_optimal is not None:
            out["hybrid_optimal"] = self.hybrid_optimal
        return out


def row(a: Assumptions, requests: int) -> Row:
    from costing.tco import (
        api_only,
        hybrid,
        hybrid_optimal,
        selfhosted_busy_only,
        selfhosted_only,
    )
    from costing.units import SEED_HOURS_PER_MONTH

    profile = a.profile.with_requests(requests)
    common = (a.engineering, a.hours_per_month, a.target_utilization, a.fine_tuning)
    dedicated = a.pool.dedicated
    busy_hours = SEED_HOURS_PER_MONTH if a.is_seed else a.hours_per_month
    return Row(
        requests=requests,
        api_only=api_only(profile, a.api, a.hours_per_month),
        busy_only=selfhosted_busy_only(
            profile, a.pool, a.engineering, busy_hours, a.target_utilization, a.fine_tuning
        )
        if dedicated
        else None,
        selfhosted=selfhosted_only(profile, a.pool, *common),
        hybrid_current=hybrid(profile, a.configured_gpus, a.pool, a.api, *common)
        if dedicated and a.configured_gpus
        else None,
        hybrid_optimal=hybrid_optimal(profile, a.pool, a.api, *common) if dedicated else None,
    )


def breakeven_of(a: Assumptions) -> BreakevenResult:
    from costing.breakeven import breakeven

    return breakeven(
        a.profile,
        a.pool,
        a.api,
        a.engineering,
        a.hours_per_month,
        a.target_utilization,
        a.fine_tuning,
    )


def seed_check(a: Assumptions) -> SeedComparison | None:
    if not a.is_seed:
        return None
    from costing.seed import seed_comparison

    return seed_comparison(a.requests, a.hours_per_month)
