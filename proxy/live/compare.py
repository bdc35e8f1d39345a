"""The TCO comparison of one GPU pool's traffic: which aliases, at what capacity, each
scenario per month, the breakeven and a recommendation in plain words.

Scope: per GPU pool, the traffic of the aliases whose first self-hosted target is on
that pool and that have an API price to compare with (`compare_to`, else their first
API target), of their own kind (an embeddings alias is compared with an embeddings model,
else the report says it has no comparison). Each alias's traffic is priced at its own
model's rates (`costing.api.blended_price`). Aliases with no self-hosted target (a
`frontier` alias on an API) cost the same under every scenario and are left out; the
report's spend figures include them.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final

from costing.api import blended_price
from costing.breakeven import breakeven
from costing.gpu import EngineeringCost, GpuPoolCost
from costing.live import (
    chart_volumes,
    cost_curve,
    current_routing,
    live_profile,
    measured_capacity,
    project_monthly,
)
from costing.prices import ModelPrice, PriceTable
from costing.tco import ScenarioResult, TrafficProfile, api_only, hybrid, hybrid_optimal
from costing.tco import selfhosted_only as selfhosted_only_scenario
from costing.units import format_usd
from proxy.config import Config
from proxy.live.window import (
    BUSY,
    CACHED,
    COMPLETION,
    COST,
    GPU_SECONDS,
    PEAK_INFLIGHT,
    PROMPT,
    PROVISIONED,
    REQUESTS,
    EventKey,
    WindowView,
)
from proxy.metering.pricing import PoolPricing, engineering_cost, pool_cost

if TYPE_CHECKING:
    from proxy.runtime import Runtime

SCENARIOS: Final[tuple[str, ...]] = (
    "api_only",
    "selfhosted_only",
    "hybrid_current",
    "hybrid_optimal",
)
CURVE_INTERVAL_S: Final[dict[str, int]] = {"1h": 60, "24h": 3600, "7d": 3600, "all": 3600}
"""Load-curve resolution per window: per minute for an hour, by hour of day beyond."""
SATURATED_BUSY_SHARE: Final[float] = 0.9
"""A minute counts as saturated when the pool was busy at least this share of it and its
in-flight peak reached the pool's limit (spillover max_inflight, else max_concurrency)."""


@dataclass(frozen=True)
class Context:
    """What the report needs besides the window: config, prices, pool prices."""

    config: Config
    prices: PriceTable
    pricing: Mapping[str, PoolPricing]
    hours_per_month: float

    @classmethod
    def from_runtime(cls, rt: Runtime) -> Context:
        return cls(rt.config, rt.prices, dict(rt.meter.pricing), rt.meter.hours_per_month)


@dataclass
class _Group:
    pool: str
    aliases: list[str] = field(default_factory=list)
    api_models: dict[str, str] = field(default_factory=dict)  # alias -> its own API model
    notes: list[str] = field(default_factory=list)

    @property
    def api_model(self) -> str | None:
        """The model compared with, for display: one name, or each alias's."""
        models = set(self.api_models.values())
        if len(models) <= 1:
            return next(iter(models), None)
        return ", ".join(f"{a}: {m}" for a, m in self.api_models.items())


_ENDPOINT_KIND = {"chat": "chat", "completions": "chat", "embeddings": "embeddings"}


def _alias_kind(
    config: Config, prices: PriceTable, alias: str, endpoints: Mapping[str, str]
) -> str | None:
    """What an alias serves: the endpoint its traffic came in on, else what litellm's
    table says of its targets' models; None when nothing says."""
    seen = endpoints.get(alias)
    if seen is not None:
        return _ENDPOINT_KIND.get(seen)
    kinds = {prices.kind(t.model) for t in config.models[alias].targets} - {None}
    return kinds.pop() if len(kinds) == 1 else None


def comparison_groups(
    config: Config, prices: PriceTable, endpoints: Mapping[str, str] | None = None
) -> list[_Group]:
    """Per pool, the aliases whose first self-hosted target is on it and that have an API
    model of their own kind with a known price to compare with (`compare_to`, else their
    first API target); each alias's traffic is priced at its own model. Notes say which
    aliases were left out and why."""
    groups = {name: _Group(name) for name in config.gpu_pools}
    for alias, spec in config.models.items():
        pools = [config.backends[t.backend].pool for t in spec.targets]
        pool = next((p for p in pools if p is not None), None)
        if pool is None or pool not in groups:
            continue
        g = groups[pool]
        if spec.compare_to is not None:
            model: str | None = spec.compare_to.model
        else:
            model = next(
                (t.model for t in spec.targets if config.backends[t.backend].pool is None), None
            )
        if model is None or prices.find(model) is None:
            g.notes.append(
                f"alias {alias!r} is left out of pool {pool!r}'s comparison: no API model "
                "with a known price to compare with (set models.<alias>.compare_to)"
            )
            continue
        kind = _alias_kind(config, prices, alias, endpoints or {})
        model_kind = prices.kind(model)
        if kind is not None and model_kind is not None and kind != model_kind:
            g.notes.append(
                f"alias {alias!r} has no comparison: it serves {kind}, but the API model it "
                f"would be compared with, {model!r}, serves {model_kind} (set "
                f"models.{alias}.compare_to to a {kind} model)"
            )
            continue
        g.api_models[alias] = model
        g.aliases.append(alias)
    return [g for g in groups.values() if g.aliases]


def sum_columns(columns: Iterable[array], n: int) -> list[float]:
    out = [0.0] * n
    for col in columns:
        for i, v in enumerate(col):
            if v:
                out[i] += v
    return out


def regroup(values: Sequence[float], t0: float, width: int, interval: int) -> list[float]:
    """Sum buckets of `width` seconds starting at t0 into intervals of `interval` seconds
    aligned to multiples of `interval` in unix time (the first and last may be partial)."""
    if interval <= width:
        return list(values)
    out: list[float] = []
    current = None
    for i, v in enumerate(values):
        k = int((t0 + i * width) // interval)
        if k != current:
            out.append(0.0)
            current = k
        out[-1] += v
    return out


def human_count(n: float) -> str:
    """2,345,678 → '2.3M'; 310,000 → '310K'; 950 → '950'."""
    for size, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= size:
            value = n / size
            text = f"{value:.1f}" if value < 100 else f"{value:.0f}"
            return text.removesuffix(".0") + suffix
    return f"{n:.0f}"


def _saturation_limit(config: Config, pool: str) -> int:
    limits = [
        spec.spillover.max_inflight
        for spec in config.models.values()
        if spec.spillover.max_inflight is not None
        and config.backends[spec.targets[0].backend].pool == pool
    ]
    concurrency = sum(b.max_concurrency for b in config.backends.values() if b.pool == pool)
    return min([*limits, concurrency]) if concurrency else min(limits, default=1)


def _capacity(
    view: WindowView, ctx: Context, pool: str, base: GpuPoolCost
) -> tuple[GpuPoolCost | None, dict[str, Any]]:
    """The pool's cost model with the capacity to use, and where that capacity came from."""
    frame = view.minutes
    cols = frame.pools.get(pool)
    keys = [k for k, p in view.event_pool.items() if p == pool and k in frame.events]
    tokens = sum_columns(
        [frame.events[k][PROMPT] for k in keys] + [frame.events[k][COMPLETION] for k in keys],
        frame.n,
    )
    limit = _saturation_limit(ctx.config, pool)
    if cols is not None:
        busy, prov, peak = cols[BUSY], cols[PROVISIONED], cols[PEAK_INFLIGHT]
        saturated = [
            peak[i] >= limit and prov[i] > 0 and busy[i] >= SATURATED_BUSY_SHARE * prov[i]
            for i in range(frame.n)
        ]
        measured = measured_capacity(tokens, list(busy), saturated)
    else:  # never sampled yet: nothing measured
        measured = measured_capacity(tokens, [0.0] * frame.n, [False] * frame.n)
    info: dict[str, Any] = {
        "configured_tokens_per_gpu_s": base.capacity_tokens_per_s,
        "configured_requests_per_gpu_s": base.capacity_requests_per_s,
        "measured_saturated_tokens_per_gpu_s": measured.saturated_tokens_per_gpu_s,
        "saturated_minutes": measured.saturated_buckets,
        "saturation_rule": (
            f"a minute with the pool busy >= {SATURATED_BUSY_SHARE:.0%} of it and "
            f"{limit} requests in flight (its limit)"
        ),
        "measured_average_tokens_per_gpu_s": measured.average_tokens_per_gpu_s,
    }
    if measured.saturated_tokens_per_gpu_s:
        info["source"] = "measured while saturated"
        info["tokens_per_gpu_s"] = measured.saturated_tokens_per_gpu_s
        return replace(
            base, capacity_tokens_per_s=measured.saturated_tokens_per_gpu_s,
            capacity_requests_per_s=None,
        ), info  # fmt: skip
    if base.capacity_tokens_per_s is not None or base.capacity_requests_per_s is not None:
        info["source"] = "configured (the pool never saturated in this window)"
        info["tokens_per_gpu_s"] = base.capacity_tokens_per_s
        return base, info
    if measured.average_tokens_per_gpu_s:
        info["source"] = (
            "measured average while busy (never saturated, no capacity configured: "
            "a lower bound, so self-hosted figures are pessimistic)"
        )
        info["tokens_per_gpu_s"] = measured.average_tokens_per_gpu_s
        return replace(base, capacity_tokens_per_s=measured.average_tokens_per_gpu_s), info
    info["source"] = None
    info["tokens_per_gpu_s"] = None
    return None, info


def comparison(
    view: WindowView,
    ctx: Context,
    group: _Group,
    pools: Mapping[str, Mapping[str, Any]],
    chart: bool,
) -> dict[str, Any]:
    hours = ctx.hours_per_month
    ws = view.seconds
    keys: list[EventKey] = [k for k in view.events if k[0] in group.aliases and k[1] is not None]
    per_alias: dict[str, list[float]] = {a: [0.0, 0.0, 0.0] for a in group.aliases}
    t = dict.fromkeys(
        ("requests", "prompt_tokens", "completion_tokens", "cached_tokens", "api_requests",
         "api_usd", "selfhosted_requests", "selfhosted_usd", "selfhosted_gpu_seconds"),
        0.0,
    )  # fmt: skip
    for k in keys:
        v = view.events[k]
        t["requests"] += v[REQUESTS]
        t["prompt_tokens"] += v[PROMPT]
        t["completion_tokens"] += v[COMPLETION]
        t["cached_tokens"] += v[CACHED]
        mix = per_alias[k[0]]
        mix[0] += v[PROMPT]
        mix[1] += v[COMPLETION]
        mix[2] += v[CACHED]
        if view.event_pool.get(k) is None:
            t["api_requests"] += v[REQUESTS]
            t["api_usd"] += v[COST]
        else:
            t["selfhosted_requests"] += v[REQUESTS]
            t["selfhosted_usd"] += v[COST]
            t["selfhosted_gpu_seconds"] += v[GPU_SECONDS]
    frame = view.minutes
    interval = CURVE_INTERVAL_S[view.window]
    per_minute = sum_columns(
        (frame.events[k][REQUESTS] for k in keys if k in frame.events), frame.n
    )
    curve = regroup(per_minute, frame.t0, frame.width, interval)
    out: dict[str, Any] = {
        "pool": group.pool,
        "aliases": group.aliases,
        "api_model": group.api_model,
        "api_models": dict(group.api_models),
        "traffic": t,
        "load_curve": curve,
        "load_curve_t0": float(int(frame.t0 // interval) * interval),
        "load_curve_interval_seconds": interval,
        "scenarios": {},
        "breakeven": None,
        "chart": None,
    }
    spec = ctx.config.gpu_pools[group.pool]
    base = pool_cost(spec)
    pool_model, capacity = _capacity(view, ctx, group.pool, base)
    out["capacity"] = capacity
    eng = engineering_cost(ctx.config.engineering)
    # Each alias at its own model's rates: one price, weighted by each alias's tokens.
    api = blended_price(
        (ctx.prices.get(group.api_models[a]), per_alias[a][0], per_alias[a][1], per_alias[a][2])
        for a in group.aliases
    )
    profile = live_profile(
        t["requests"], t["prompt_tokens"], t["completion_tokens"], t["cached_tokens"],
        ws, curve, hours,
    ) if ws > 0 else None  # fmt: skip
    pool_row = pools[group.pool]
    out["profile"] = None
    if profile is None:
        out["recommendation"] = (
            f"No traffic for {', '.join(group.aliases)} in the last {view.window} yet: "
            "send some requests and the report fills in."
        )
        return out
    out["profile"] = {
        "requests_per_month": profile.requests_per_month,
        "prompt_tokens_per_request": profile.prompt_tokens_per_request,
        "completion_tokens_per_request": profile.completion_tokens_per_request,
        "cached_tokens_per_request": profile.cached_tokens_per_request,
        "peak_to_average": profile.peak_to_average,
    }
    if pool_model is None:
        out["recommendation"] = (
            f"Pool {group.pool!r} has no capacity to plan with: set "
            f"gpu_pools.{group.pool}.capacity_tokens_per_s, or let it serve traffic."
        )
        return out
    try:
        scenarios, be = _scenarios(view, ctx, profile, pool_model, api, eng, t, pool_row)
    except ValueError as exc:  # e.g. a capacity that cannot carry this token mix
        out["recommendation"] = f"Cannot cost pool {group.pool!r}'s traffic: {exc}"
        return out
    out["scenarios"] = {name: s.to_dict() for name, s in scenarios.items()}
    out["breakeven"] = be.to_dict() if be is not None else None
    out["cheapest"] = min(scenarios, key=lambda n: scenarios[n].monthly_usd)
    out["recommendation"] = _recommend(group, scenarios, be, profile, pool_row)
    if chart:
        volumes = chart_volumes(profile.requests_per_month, be.requests_per_month if be else None)
        curves = cost_curve(profile, pool_model, api, volumes, eng, hours)
        out["chart"] = {
            "volumes": volumes,
            **curves,
            "today_requests_per_month": profile.requests_per_month,
            "breakeven_requests_per_month": be.requests_per_month if be else None,
        }
    return out


def _scenarios(
    view: WindowView,
    ctx: Context,
    profile: TrafficProfile,
    pool: GpuPoolCost,
    api: ModelPrice,
    eng: EngineeringCost,
    t: Mapping[str, float],
    pool_row: Mapping[str, Any],
) -> tuple[dict[str, ScenarioResult], Any]:
    hours = ctx.hours_per_month
    ws = view.seconds
    out: dict[str, ScenarioResult] = {
        "api_only": api_only(profile, api, hours),
        "selfhosted_only": selfhosted_only_scenario(profile, pool, eng, hours),
    }
    out["hybrid_current"] = current_routing(
        pool,
        api_usd_per_month=project_monthly(t["api_usd"], ws, hours),
        busy_gpu_seconds_per_month=project_monthly(pool_row["busy_gpu_seconds"], ws, hours),
        requests_per_month=profile.requests_per_month,
        api_requests_per_month=project_monthly(t["api_requests"], ws, hours),
        engineering=eng,
        hours_per_month=hours,
        inputs={
            "api_usd_in_window": t["api_usd"],
            "api_requests_in_window": t["api_requests"],
            "busy_gpu_seconds_in_window": pool_row["busy_gpu_seconds"],
            "window_seconds": ws,
        },
    )
    if pool.dedicated:
        out["hybrid_optimal"] = hybrid_optimal(profile, pool, api, eng, hours)
        # Keep what the k search found comparable with today's k in the inputs.
        today = hybrid(profile, pool.gpus, pool, api, eng, hours)
        out["hybrid_current"] = replace(
            out["hybrid_current"],
            inputs={
                **out["hybrid_current"].inputs,
                "modelled_usd_at_configured_gpus": today.monthly_usd,
            },
        )
    be = breakeven(profile, pool, api, eng, hours)
    return out, be


_LABELS = {
    "api_only": "API-only",
    "selfhosted_only": "Self-hosted-only",
    "hybrid_current": "Today's routing",
    "hybrid_optimal": "The optimal hybrid",
}


def _recommend(
    group: _Group,
    scenarios: Mapping[str, ScenarioResult],
    be: Any,
    profile: TrafficProfile,
    pool_row: Mapping[str, Any],
) -> str:
    parts = []
    util = pool_row.get("utilization")
    if util is not None:
        parts.append(f"Pool {group.pool} runs at {util:.0%} GPU utilization.")
    current = scenarios["hybrid_current"].monthly_usd
    cheapest = min(scenarios, key=lambda n: scenarios[n].monthly_usd)
    best = scenarios[cheapest].monthly_usd
    if cheapest != "hybrid_current" and current - best >= 0.005:
        extra = f" ({scenarios[cheapest].gpus} GPUs)" if cheapest == "hybrid_optimal" else ""
        parts.append(
            f"{_LABELS[cheapest]}{extra} would cost {format_usd(current - best)}/month less "
            f"than today's routing ({format_usd(best)} vs {format_usd(current)})."
        )
    else:
        parts.append(f"Today's routing is the cheapest option at {format_usd(current)}/month.")
    today = profile.requests_per_month
    if be is not None and be.requests_per_month is not None:
        parts.append(
            f"Break-even is at {human_count(be.requests_per_month)} requests/month "
            f"({be.requests_per_month:,}); you are at {human_count(today)}."
        )
    else:
        parts.append(
            f"There is no break-even: at this token mix and load shape a fully loaded GPU "
            f"costs more than the API traffic it replaces; you are at {human_count(today)} "
            "requests/month."
        )
    return " ".join(parts)
