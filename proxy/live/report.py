"""The live report: one window of traffic, priced by costing/, with every input shown.

`build_report(view, context)` is plain computation on copies (a `WindowView` and a
`Context`), so the service runs it in a worker thread, off the event loop. It adds up
traffic, spend and GPU pools, runs one comparison per GPU pool (proxy/live/compare.py)
and the series the dashboard charts. The first pool in config order with traffic is the
"primary" comparison: the gauges and the dashboard's breakeven chart show it.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Mapping, Sequence
from typing import Any, Final

from costing.live import PROJECTION_RULE, project_monthly
from costing.units import seconds_per_month
from proxy.live.compare import (
    CURVE_INTERVAL_S,
    Context,
    comparison,
    comparison_groups,
    regroup,
    sum_columns,
)
from proxy.live.window import (
    BUSY,
    CACHED,
    COMPLETION,
    COST,
    COUNTERFACTUAL,
    ERRORS,
    FIXED,
    PEAK_INFLIGHT,
    PROMPT,
    PROVISIONED,
    REQUESTS,
    Frame,
    WindowView,
)

CHART_POINTS: Final[int] = 240


def _finite(obj: Any) -> Any:
    """JSON-safe: non-finite floats become None, mappings and sequences recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


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
    for group in comparison_groups(ctx.config, ctx.prices, view.alias_endpoints):
        notes.extend(group.notes)
        comparisons.append(comparison(view, ctx, group, pools, chart))
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
    spend = {b: group(sum_columns(cols, n)) for b, cols in sorted(backends.items())}
    keys = [k for k in frame.events if k[1] is not None]
    requests = group(sum_columns((frame.events[k][REQUESTS] for k in keys), n))
    actual = group(sum_columns((frame.events[k][COST] for k in keys), n))
    counterfactual = group(sum_columns((frame.events[k][COUNTERFACTUAL] for k in keys), n))
    gpu: dict[str, dict[str, Sequence[float | None]]] = {}
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
