"""The bridge from config to costing/: a pool's per-second prices and the API price table."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from costing.api import api_cost
from costing.gpu import EngineeringCost, GpuPoolCost
from costing.prices import PriceTable
from costing.units import seconds_per_month
from proxy.config import Config, Engineering, GpuPool

api_request_cost = api_cost


@dataclass(frozen=True, slots=True)
class PoolPricing:
    """What one GPU-second of a pool costs, split the way the books need it.

    usd_per_gpu_second: the price of attributed (busy) GPU-seconds.
    idle_usd_per_gpu_second: the price of idle GPU-seconds (0 for serverless: you do not
        pay for idle there).
    engineering_usd_per_second: this pool's share of engineering cost per wall second
        (shared across pools in proportion to their GPUs).
    """

    usd_per_gpu_second: float
    idle_usd_per_gpu_second: float
    engineering_usd_per_second: float
    capacity_tokens_per_gpu_s: float | None
    cost: GpuPoolCost


def pool_cost(pool: GpuPool) -> GpuPoolCost:
    return GpuPoolCost(
        gpus=pool.gpus,
        billing=pool.billing,
        usd_per_gpu_hour=pool.usd_per_gpu_hour,
        purchase_usd_per_gpu=pool.purchase_usd_per_gpu,
        amortize_months=pool.amortize_months,
        power_kw_per_gpu=pool.power_kw_per_gpu or 0.0,
        usd_per_kwh=pool.usd_per_kwh or 0.0,
        hosting_usd_per_month=pool.hosting_usd_per_month or 0.0,
        serverless_usd_per_gpu_second=pool.serverless_usd_per_gpu_second,
        cold_start_seconds=pool.cold_start_seconds,
        capacity_tokens_per_s=pool.capacity_tokens_per_s,
        capacity_requests_per_s=pool.capacity_requests_per_s,
    )


def engineering_cost(eng: Engineering) -> EngineeringCost:
    return EngineeringCost(
        setup_hours=eng.setup_hours,
        hourly_rate_usd=eng.hourly_rate_usd,
        amortize_months=eng.amortize_months,
        maintenance_hours_per_month=eng.maintenance_hours_per_month,
    )


def pool_pricing(
    pool: GpuPool, eng: Engineering, all_pools: Mapping[str, GpuPool], hours_per_month: float
) -> PoolPricing:
    cost = pool_cost(pool)
    per_s = cost.usd_per_gpu_second(hours_per_month)
    total_gpus = sum(p.gpus for p in all_pools.values()) or 1
    eng_per_s = engineering_cost(eng).monthly_cost() / seconds_per_month(hours_per_month)
    return PoolPricing(
        usd_per_gpu_second=per_s,
        idle_usd_per_gpu_second=per_s if cost.dedicated else 0.0,
        engineering_usd_per_second=eng_per_s * pool.gpus / total_gpus,
        capacity_tokens_per_gpu_s=pool.capacity_tokens_per_s,
        cost=cost,
    )


def load_prices(config: Config) -> PriceTable:
    overrides = {name: p.model_dump(exclude_none=True) for name, p in config.prices.items()}
    return PriceTable.load(overrides)


def price_problems(config: Config, prices: PriceTable) -> list[str]:
    """API targets and compare_to models without a price (`check` warns; --strict refuses).

    Such a model is still served, but its requests are flagged `unpriced` and counted in
    hybridgate_unpriced_requests_total instead of being costed as a silent $0.
    """
    problems = []
    budgeted = sorted(n for n, t in config.tenants.items() if t.monthly_api_budget_usd is not None)
    refused = (
        f" (tenants with an API budget, {', '.join(budgeted)}, are refused this target "
        "until it has one: their spend on it could not be counted)"
        if budgeted
        else ""
    )
    for alias, spec in config.models.items():
        for i, t in enumerate(spec.targets):
            backend = config.backends.get(t.backend)
            if backend is not None and backend.pool is None and prices.find(t.model) is None:
                problems.append(
                    f"models.{alias}.targets[{i}].model: no price for '{t.model}'; "
                    f"add prices.{t.model}: {{input: <USD/1M>, output: <USD/1M>}}{refused}"
                )
        if spec.compare_to is not None and prices.find(spec.compare_to.model) is None:
            problems.append(
                f"models.{alias}.compare_to.model: no price for "
                f"'{spec.compare_to.model}'; add prices.{spec.compare_to.model}"
            )
    return problems
