"""From a window of live traffic to monthly figures: the projection, the measured profile,
today's routing as a scenario, the measured capacity, and the points of a cost chart.

Pure functions on plain numbers (the proxy's window model hands them its sums), so a
user, or a test, can redo every figure by hand.

The projection (one rule for every monthly figure drawn from a window):

    per month = value in window × seconds_per_month / window_seconds

with seconds_per_month = hours_per_month × 3600 and window_seconds the time the window's
counts cover (never more than the proxy's uptime). It assumes the window repeats all
month: a one-hour window at lunch time projects a lunch-time month.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from costing.api import ApiCost
from costing.gpu import EngineeringCost, GpuPoolCost
from costing.prices import ModelPrice
from costing.tco import (
    ScenarioResult,
    TrafficProfile,
    api_only,
    hybrid_optimal,
    selfhosted_only,
)
from costing.units import HOURS_PER_MONTH_DEFAULT, seconds_per_month

PROJECTION_RULE: Final[str] = (
    "per month = value in window × seconds_per_month / window_seconds "
    "(seconds_per_month = hours_per_month × 3600)"
)
HYBRID_CHART_MAX_GPUS: Final[int] = 64
"""Above this many GPUs for the peak, the chart leaves hybrid_optimal out (it searches every k)."""


def project_monthly(
    value: float, window_seconds: float, hours_per_month: float = HOURS_PER_MONTH_DEFAULT
) -> float:
    """value × seconds_per_month / window_seconds (see PROJECTION_RULE)."""
    if not (window_seconds > 0 and math.isfinite(window_seconds)):
        raise ValueError(f"window_seconds must be > 0, got {window_seconds!r}")
    return value * seconds_per_month(hours_per_month) / window_seconds


def live_profile(
    requests: float,
    prompt_tokens: float,
    completion_tokens: float,
    cached_tokens: float,
    window_seconds: float,
    load_curve: Sequence[float] | None = None,
    hours_per_month: float = HOURS_PER_MONTH_DEFAULT,
) -> TrafficProfile | None:
    """The window's traffic as a month: volume projected, tokens per request averaged.

    requests_per_month = project_monthly(requests); X_tokens_per_request = X_tokens /
    requests; the load curve is the window's requests per interval (its shape only).
    None when the window has no requests (there is no token mix to price).
    """
    if requests <= 0:
        return None
    curve = tuple(load_curve) if load_curve is not None and math.fsum(load_curve) > 0 else None
    return TrafficProfile(
        requests_per_month=project_monthly(requests, window_seconds, hours_per_month),
        prompt_tokens_per_request=prompt_tokens / requests,
        completion_tokens_per_request=completion_tokens / requests,
        cached_tokens_per_request=min(cached_tokens, prompt_tokens) / requests,
        load_curve=curve,
    )


def current_routing(
    pool: GpuPoolCost,
    api_usd_per_month: float,
    busy_gpu_seconds_per_month: float,
    requests_per_month: float,
    api_requests_per_month: float,
    engineering: EngineeringCost | None = None,
    hours_per_month: float = HOURS_PER_MONTH_DEFAULT,
    inputs: dict[str, Any] | None = None,
) -> ScenarioResult:
    """Today's routing, measured and projected ("hybrid_current").

    monthly_usd = the pool as configured (`pool.gpus`, busy or idle; serverless: the
    projected busy GPU-seconds) + engineering + the API spend of this traffic projected
    to a month (USD). Nothing modelled: the split between GPU and API is the one the
    router made.
    """
    breakdown = {
        **pool.breakdown(hours_per_month, busy_gpu_seconds_per_month, pool.gpus),
        **(engineering.breakdown() if engineering is not None else {}),
        "api_tokens": api_usd_per_month,
    }
    paid = (
        pool.gpus * seconds_per_month(hours_per_month)
        if pool.dedicated
        else busy_gpu_seconds_per_month
    )
    return ScenarioResult(
        scenario="hybrid_current",
        monthly_usd=math.fsum(breakdown.values()),
        breakdown=breakdown,
        gpus=pool.gpus,
        utilization=busy_gpu_seconds_per_month / paid if paid > 0 else None,
        api_share=api_requests_per_month / requests_per_month if requests_per_month > 0 else 0.0,
        hours_per_month=hours_per_month,
        inputs={
            **(inputs or {}),
            "requests_per_month": requests_per_month,
            "api_requests_per_month": api_requests_per_month,
            "api_usd_per_month": api_usd_per_month,
            "busy_gpu_seconds_per_month": busy_gpu_seconds_per_month,
            "gpus": pool.gpus,
            "billing": pool.billing,
            "hours_per_month": hours_per_month,
        },
    )


@dataclass(frozen=True, slots=True)
class MeasuredCapacity:
    """A pool's sustainable throughput as measured: tokens per busy GPU-second.

    `saturated_tokens_per_gpu_s`: the best bucket among those where the pool was
    saturated (None if it never was). `average_tokens_per_gpu_s`: all tokens over all
    busy GPU-seconds of the window (a lower bound on capacity when never saturated).
    """

    saturated_tokens_per_gpu_s: float | None
    saturated_buckets: int
    average_tokens_per_gpu_s: float | None


def measured_capacity(
    tokens: Sequence[float],
    busy_gpu_seconds: Sequence[float],
    saturated: Sequence[bool],
) -> MeasuredCapacity:
    """Per bucket i: throughput_i = tokens_i / busy_gpu_seconds_i (tokens per GPU-second).

    saturated = max over saturated buckets with busy time of throughput_i;
    average = Σ tokens / Σ busy_gpu_seconds.
    """
    best: float | None = None
    count = 0
    for tok, busy, sat in zip(tokens, busy_gpu_seconds, saturated, strict=True):
        if sat and busy > 0:
            count += 1
            rate = tok / busy
            if best is None or rate > best:
                best = rate
    total_busy = math.fsum(busy_gpu_seconds)
    total_tokens = math.fsum(tokens)
    average = total_tokens / total_busy if total_busy > 0 and total_tokens > 0 else None
    return MeasuredCapacity(best, count, average)


def chart_volumes(
    today: float, breakeven: float | None = None, points: int = 48, decades: float = 3.0
) -> list[float]:
    """Monthly volumes for a cost-vs-volume chart: `points` log-spaced values up to
    4 × max(today, breakeven), over `decades` powers of ten, plus today and the breakeven
    themselves (sorted, no duplicates)."""
    top = 4.0 * max(today, breakeven or 0.0, 1.0)
    bottom = top / 10**decades
    step = decades / (points - 1)
    volumes = {bottom * 10 ** (i * step) for i in range(points)}
    volumes.add(today)
    if breakeven is not None:
        volumes.add(float(breakeven))
    return sorted(v for v in volumes if v > 0)


def cost_curve(
    profile: TrafficProfile,
    pool: GpuPoolCost,
    api: ApiCost | ModelPrice,
    volumes: Sequence[float],
    engineering: EngineeringCost | None = None,
    hours_per_month: float = HOURS_PER_MONTH_DEFAULT,
) -> dict[str, list[float | None]]:
    """Monthly USD of api_only, selfhosted_only and hybrid_optimal at each volume, same
    token mix and load shape (the very scenario functions the report uses).

    hybrid_optimal is None for serverless pools and where the peak needs more than
    HYBRID_CHART_MAX_GPUS GPUs.
    """
    out: dict[str, list[float | None]] = {
        "api_only": [],
        "selfhosted_only": [],
        "hybrid_optimal": [],
    }
    for v in volumes:
        p = profile.with_requests(v)
        out["api_only"].append(api_only(p, api, hours_per_month).monthly_usd)
        sh = selfhosted_only(p, pool, engineering, hours_per_month)
        out["selfhosted_only"].append(sh.monthly_usd)
        hy: float | None = None
        if pool.dedicated and sh.gpus <= HYBRID_CHART_MAX_GPUS:
            hy = hybrid_optimal(p, pool, api, engineering, hours_per_month).monthly_usd
        out["hybrid_optimal"].append(hy)
    return out
