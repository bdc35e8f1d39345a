"""The live report: one window of traffic, priced by costing/, with every input shown.

`build_report(view, context)` is plain computation on copies (a `WindowView` and a
`Context`), so the service runs it in a worker thread, off the event loop.

Scope of the TCO comparison: per GPU pool, the traffic of the aliases whose first
self-hosted target is on that pool and that have an API price to compare with
(`compare_to`, else their first API target). Aliases with no self-hosted target (a
`frontier` alias on an API) cost the same under every scenario and are left out of it;
they are in the spend figures. The first pool in config order with such traffic is the
"primary" comparison: the gauges and the dashboard's breakeven chart show it.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

from costing.breakeven import breakeven
from costing.gpu import EngineeringCost, GpuPoolCost
from costing.live import (
    PROJECTION_RULE,
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
from costing.units import format_usd, seconds_per_month
from proxy.config import Config
from proxy.live.window import (
    BUSY,
    CACHED,
    COMPLETION,
    COST,
    COUNTERFACTUAL,
    ERRORS,
    FIXED,
    GPU_SECONDS,
    PEAK_INFLIGHT,
    PROMPT,
    PROVISIONED,
    REQUESTS,
    EventKey,
    Frame,
    WindowView,
)
from proxy.pricing import PoolPricing, engineering_cost, pool_cost

SCENARIOS: Final[tuple[str, ...]] = (
    "api_only",
    "selfhosted_only",
    "hybrid_current",
    "hybrid_optimal",
)
CURVE_INTERVAL_S: Final[dict[str, int]] = {"1h": 60, "24h": 3600, "7d": 3600, "all": 3600}
"""Load-curve resolution per window: per minute for an hour, by hour of day beyond."""
CHART_POINTS: Final[int] = 240
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
    def from_runtime(cls, rt: Any) -> Context:
        return cls(rt.config, rt.prices, dict(rt.meter.pricing), rt.meter.hours_per_month)


@dataclass
class _Group:
    pool: str
    aliases: list[str] = field(default_factory=list)
    api_model: str | None = None
    notes: list[str] = field(default_factory=list)


def comparison_groups(config: Config, prices: PriceTable) -> list[_Group]:
    """Per pool, the aliases whose first self-hosted target is on it and that have an API
    price to compare with; notes say which aliases were left out and why."""
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
        if g.api_model is None:
            g.api_model = model
        elif model != g.api_model:
            g.notes.append(
                f"alias {alias!r} compares with {model!r}; pool {pool!r}'s comparison prices "
                f"all its traffic at {g.api_model!r} (the first alias's)"
            )
        g.aliases.append(alias)
    return [g for g in groups.values() if g.aliases]


# ---------------------------------------------------------------- helpers


def _sum_cols(columns: Iterable[array], n: int) -> list[float]:
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


def _finite(obj: Any) -> Any:
    """JSON-safe: non-finite floats become None, mappings and sequences recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def human_count(n: float) -> str:
    """2,345,678 → '2.3M'; 310,000 → '310K'; 950 → '950'."""
    for size, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= size:
            value = n / size
            text = f"{value:.1f}" if value < 100 else f"{value:.0f}"
            return text.removesuffix(".0") + suffix
    return f"{n:.0f}"


# ---------------------------------------------------------------- the report


def build_report(
    view: WindowView, ctx: Context, *, series: bool = True, chart: bool = True
) -> dict[str, Any]:
    """The live report for one window (see the module docstring for its scope)."""
    hours = ctx.hours_per_month
    ws = view.seconds
    notes: list[str] = []
    report: dict[str, Any] = {
        "window": view.window,
        "generated_at": view.end,
        "inputs": {
            "window_start": view.start,
            "window_end": view.end,
            "window_seconds": ws,
            "uptime_seconds": view.end - view.started_at,
            "window_rule": (
                "window = the current minute bucket and the whole minutes before it, up to "
                "the window's length; window_seconds = now − max(proxy start, start of its "
                "oldest minute)"
                if view.window != "all"
                else "window = since the proxy started; window_seconds = its uptime"
            ),
            "projection": PROJECTION_RULE,
            "hours_per_month": hours,
            "seconds_per_month": seconds_per_month(hours),
            "requests_counted": "requests that reached a backend, whatever their outcome",
            "load_curve_interval_seconds": CURVE_INTERVAL_S[view.window],
        },
    }
    proj = (lambda v: project_monthly(v, ws, hours)) if ws > 0 else (lambda v: 0.0)
    report["traffic"] = _traffic(view)
    pools = _pools(view, ctx)
    report["spend"] = _spend(view, pools)
    report["pools"] = pools
    requests = report["traffic"]["requests"]
    report["projected"] = {
        "requests_per_month": proj(requests),
        "actual_usd_per_month": proj(
            report["spend"]["actual_usd"] + report["spend"]["gpu_fixed_usd"]
        ),
        "gpu_idle_usd_per_month": proj(report["spend"]["gpu_idle_usd"]),
    }
    comparisons = []
    for group in comparison_groups(ctx.config, ctx.prices):
        notes.extend(group.notes)
        comparisons.append(_comparison(view, ctx, group, pools, chart))
    report["comparisons"] = comparisons
    primary = next(
        (c for c in comparisons if c["scenarios"]), comparisons[0] if comparisons else None
    )
    report["primary_pool"] = primary["pool"] if primary else None
    report["scenarios"] = (
        {name: s["monthly_usd"] for name, s in primary["scenarios"].items()} if primary else {}
    )
    report["today_requests_per_month"] = (
        primary["profile"]["requests_per_month"] if primary and primary["profile"] else 0.0
    )
    report["breakeven_requests_per_month"] = (
        primary["breakeven"]["requests_per_month"] if primary and primary["breakeven"] else None
    )
    if primary is None:
        report["recommendation"] = (
            "No comparison to make: the config has no alias with a self-hosted target and an "
            "API price to compare with (gpu_pools, a backend with pool:, and compare_to)."
        )
    else:
        report["recommendation"] = primary["recommendation"]
    if series:
        report["series"] = _series(view, ctx)
    report["notes"] = notes
    return _finite(report)


def _traffic(view: WindowView) -> dict[str, Any]:
    by_alias: dict[str, dict[str, float]] = {}
    by_backend: dict[str, dict[str, float]] = {}
    totals = dict.fromkeys(
        ("requests", "errors", "prompt_tokens", "completion_tokens", "cached_tokens"), 0.0
    )
    rejected = 0.0
    for (alias, backend), v in view.events.items():
        if backend is None:
            rejected += v[REQUESTS]
            continue
        row = {
            "requests": v[REQUESTS],
            "errors": v[ERRORS],
            "prompt_tokens": v[PROMPT],
            "completion_tokens": v[COMPLETION],
            "cached_tokens": v[CACHED],
        }
        for target in (
            by_alias.setdefault(alias, dict.fromkeys(row, 0.0)),
            by_backend.setdefault(backend, dict.fromkeys(row, 0.0)),
            totals,
        ):
            for k, x in row.items():
                target[k] += x
    return {
        **totals,
        "rejected_before_backend": rejected,
        "by_alias": by_alias,
        "by_backend": by_backend,
    }


def _pools(view: WindowView, ctx: Context) -> dict[str, dict[str, Any]]:
    out = {}
    for name, spec in ctx.config.gpu_pools.items():
        v = view.pools.get(name, (0.0, 0.0, 0.0, 0.0))
        pricing = ctx.pricing.get(name)
        prov, busy = v[PROVISIONED], v[BUSY]
        idle = max(0.0, prov - busy)
        idle_price = pricing.idle_usd_per_gpu_second if pricing else 0.0
        idle_usd = idle * idle_price
        out[name] = {
            "gpus": spec.gpus,
            "billing": spec.billing,
            "provisioned_gpu_seconds": prov,
            "busy_gpu_seconds": busy,
            "idle_gpu_seconds": idle,
            "utilization": busy / prov if prov > 0 else None,
            "usd_per_gpu_second": pricing.usd_per_gpu_second if pricing else None,
            "idle_usd": idle_usd,
            "fixed_usd": v[FIXED],
            "engineering_usd": max(0.0, v[FIXED] - idle_usd),
            "peak_inflight": v[PEAK_INFLIGHT],
        }
    return out


def _spend(view: WindowView, pools: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    by_backend: dict[str, dict[str, Any]] = {}
    actual = cf = sh_actual = sh_cf = 0.0
    for (_alias, backend), v in view.events.items():
        if backend is None:
            continue
        row = by_backend.setdefault(
            backend,
            {"actual_usd": 0.0, "counterfactual_usd": 0.0, "requests": 0.0,
             "self_hosted": view.event_pool.get((_alias, backend)) is not None},
        )  # fmt: skip
        row["actual_usd"] += v[COST]
        row["counterfactual_usd"] += v[COUNTERFACTUAL]
        row["requests"] += v[REQUESTS]
        actual += v[COST]
        cf += v[COUNTERFACTUAL]
        if row["self_hosted"]:
            sh_actual += v[COST]
            sh_cf += v[COUNTERFACTUAL]
    idle = math.fsum(p["idle_usd"] for p in pools.values())
    fixed = math.fsum(p["fixed_usd"] for p in pools.values())
    return {
        "actual_usd": actual,
        "counterfactual_usd": cf,
        "gpu_idle_usd": idle,
        "gpu_fixed_usd": fixed,
        "total_usd": actual + fixed,
        "selfhosted_savings_usd": sh_cf - sh_actual - fixed,
        "selfhosted_savings_rule": (
            "API price of the self-hosted requests − their attributed GPU cost − the pools' "
            "fixed cost (idle GPU-seconds and engineering) over the window"
        ),
        "by_backend": by_backend,
    }


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
    tokens = _sum_cols(
        [frame.events[k][PROMPT] for k in keys] + [frame.events[k][COMPLETION] for k in keys],
        frame.n,
    )
    if cols is not None:
        limit = _saturation_limit(ctx.config, pool)
        busy, prov, peak = cols[BUSY], cols[PROVISIONED], cols[PEAK_INFLIGHT]
        saturated = [
            peak[i] >= limit and prov[i] > 0 and busy[i] >= SATURATED_BUSY_SHARE * prov[i]
            for i in range(frame.n)
        ]
        measured = measured_capacity(tokens, list(busy), saturated)
    else:
        limit = _saturation_limit(ctx.config, pool)
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


def _comparison(
    view: WindowView,
    ctx: Context,
    group: _Group,
    pools: Mapping[str, Mapping[str, Any]],
    chart: bool,
) -> dict[str, Any]:
    hours = ctx.hours_per_month
    ws = view.seconds
    keys: list[EventKey] = [k for k in view.events if k[0] in group.aliases and k[1] is not None]
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
        if view.event_pool.get(k) is None:
            t["api_requests"] += v[REQUESTS]
            t["api_usd"] += v[COST]
        else:
            t["selfhosted_requests"] += v[REQUESTS]
            t["selfhosted_usd"] += v[COST]
            t["selfhosted_gpu_seconds"] += v[GPU_SECONDS]
    frame = view.minutes
    interval = CURVE_INTERVAL_S[view.window]
    per_minute = _sum_cols((frame.events[k][REQUESTS] for k in keys if k in frame.events), frame.n)
    curve = regroup(per_minute, frame.t0, frame.width, interval)
    out: dict[str, Any] = {
        "pool": group.pool,
        "aliases": group.aliases,
        "api_model": group.api_model,
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
    assert group.api_model is not None
    api = ctx.prices.get(group.api_model)
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


def _series(view: WindowView, ctx: Context) -> dict[str, Any]:
    """Per-interval figures for the dashboard's time charts (at most CHART_POINTS)."""
    frame: Frame = view.seconds_frame or view.minutes
    factor = max(1, math.ceil(frame.n / CHART_POINTS))
    interval = frame.width * factor

    def group(values: Sequence[float]) -> list[float]:
        return regroup(values, frame.t0, frame.width, interval)

    n = frame.n
    backends: dict[str, list[array]] = {}
    for (_alias, backend), cols in frame.events.items():
        if backend is not None:
            backends.setdefault(backend, []).append(cols[COST])
    spend = {b: group(_sum_cols(cols, n)) for b, cols in sorted(backends.items())}
    keys = [k for k in frame.events if k[1] is not None]
    requests = group(_sum_cols((frame.events[k][REQUESTS] for k in keys), n))
    actual = group(_sum_cols((frame.events[k][COST] for k in keys), n))
    counterfactual = group(_sum_cols((frame.events[k][COUNTERFACTUAL] for k in keys), n))
    gpu: dict[str, dict[str, list[float | None]]] = {}
    idle_total = [0.0] * len(requests)
    for pool, cols in sorted(frame.pools.items()):
        prov, busy = group(cols[PROVISIONED]), group(cols[BUSY])
        pricing = ctx.pricing.get(pool)
        price = pricing.idle_usd_per_gpu_second if pricing else 0.0
        idle_usd = [max(0.0, p - b) * price for p, b in zip(prov, busy, strict=True)]
        for i, x in enumerate(idle_usd):
            idle_total[i] += x
        gpu[pool] = {
            "utilization": [b / p if p > 0 else None for p, b in zip(prov, busy, strict=True)],
            "idle_usd": idle_usd,
        }
    t0 = int(frame.t0 // interval) * interval
    return {
        "interval_seconds": interval,
        "t": [float(t0 + i * interval) for i in range(len(requests))],
        "requests": requests,
        "spend_by_backend": spend,
        "actual_usd": actual,
        "counterfactual_usd": counterfactual,
        "gpu_idle_usd": idle_total,
        "gpu": gpu,
    }
