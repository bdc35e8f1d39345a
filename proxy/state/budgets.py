"""Tenant API budgets: UTC calendar months, what counts, and the 429 when one is spent.

A tenant's budget (`tenants.<name>.monthly_api_budget_usd`) caps what its requests
spend on pay-per-token APIs in a UTC calendar month; self-hosted spend does not count.
Spend comes only from UsageEvents (their `cost_usd`), kept in integer nano-USD so sums
across replicas are exact. Once the month-to-date spend a replica can see reaches the
budget, `over_budget` decides: `self_hosted_only` sends the tenant's requests to
self-hosted targets only (429 if the alias has none), `reject` answers 429 to requests
for aliases that can reach an API.
"""

from __future__ import annotations

import calendar
import time
from dataclasses import dataclass

from proxy.config import Config
from proxy.request.errors import ProxyError

NANO = 1_000_000_000


def to_nano(usd: float) -> int:
    return round(usd * NANO)


def month_key(ts: float) -> str:
    """`2026-12` for any unix time in December 2026 (UTC)."""
    t = time.gmtime(ts)
    return f"{t.tm_year:04d}-{t.tm_mon:02d}"


def month_bounds(ts: float) -> tuple[float, float]:
    """Unix start and end of the UTC month containing `ts`."""
    t = time.gmtime(ts)
    start = calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0))
    year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
    return float(start), float(calendar.timegm((year, month, 1, 0, 0, 0)))


def iso_utc(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


@dataclass(frozen=True, slots=True)
class TenantBudget:
    tenant: str
    limit_nano: int
    mode: str  # self_hosted_only | reject
    field: str  # the spend-hash field holding the tenant's API nano-USD


def tenant_fields(tenant: str) -> tuple[str, str, str, str, str]:
    """Spend-hash fields of a tenant: requests, api, self-hosted nano-USD, tokens."""
    return (
        f"{tenant}|requests",
        f"{tenant}|api_nano",
        f"{tenant}|self_hosted_nano",
        f"{tenant}|prompt_tokens",
        f"{tenant}|completion_tokens",
    )


class Budgets:
    """The budget table built from config, plus which aliases can reach which side."""

    def __init__(self, config: Config) -> None:
        self.by_tenant: dict[str, TenantBudget] = {}
        for name, t in config.tenants.items():
            if t.monthly_api_budget_usd is not None:
                self.by_tenant[name] = TenantBudget(
                    name, to_nano(t.monthly_api_budget_usd), t.over_budget, tenant_fields(name)[1]
                )
        self.alias_api: dict[str, bool] = {}
        self.alias_self_hosted: dict[str, bool] = {}
        for alias, spec in config.models.items():
            kinds = [config.backends[t.backend].pool is not None for t in spec.targets]
            self.alias_self_hosted[alias] = any(kinds)
            self.alias_api[alias] = not all(kinds)

    def error(self, b: TenantBudget, spent_nano: int, now: float) -> ProxyError:
        """429 that says which budget, how much is spent, and when it resets."""
        reset = month_bounds(now)[1]
        return ProxyError(
            429,
            f"Tenant '{b.tenant}' has used its monthly API budget of "
            f"${b.limit_nano / NANO:,.2f} (spent ${spent_nano / NANO:,.4f} this month); "
            f"the budget resets at {iso_utc(reset)}.",
            type_="insufficient_quota",
            code="budget_exceeded",
            headers=[
                (b"retry-after", str(max(1, int(reset - now + 0.999))).encode()),
                (b"x-hybridgate-budget-reset", iso_utc(reset).encode()),
            ],
        )
