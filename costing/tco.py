"""Monthly total cost of ownership of one traffic profile under each way of serving it.

Scenarios: API-only, self-hosted-only (rented, bought or serverless GPUs), hybrid with
k dedicated GPUs (base load on the GPUs, the excess over their capacity spilled to the
API, interval by interval along the load curve) and the k that minimises it. Each
returns a `ScenarioResult` whose `monthly_usd` is exactly the sum of its `breakdown`
(math.fsum), with every input that produced it, so a reader can redo it by hand.

Capacity model: one GPU serves `capacity_rps_per_gpu` requests/s at saturation, so a
request costs 1 / capacity GPU-seconds of work ("busy GPU-seconds"); a dedicated pool
is sized for the peak of the load curve.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from costing.api import ApiCost
from costing.capacity import gpus_needed, normalized_curve
from costing.gpu import EngineeringCost, FineTuningCost, GpuPoolCost
from costing.prices import ModelPrice
from costing.units import HOURS_PER_MONTH_DEFAULT, TOKENS_PER_MILLION, seconds_per_month


@dataclass(frozen=True)
class TrafficProfile:
    """A month of traffic: volume, average tokens per request, and the shape over time.

    `cached_tokens_per_request` is the part of the prompt served from the API's prompt
    cache (OpenAI `usage` convention: included in prompt tokens). `load_curve` is N
    equal intervals of relative demand (24 hourly shares, or rates in any unit); only
    its shape matters. None = flat: the peak equals the average.
    """

    requests_per_month: float
    prompt_tokens_per_request: float
    completion_tokens_per_request: float
    cached_tokens_per_request: float = 0.0
    load_curve: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        for name in (
            "requests_per_month",
            "prompt_tokens_per_request",
            "completion_tokens_per_request",
            "cached_tokens_per_request",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.cached_tokens_per_request > self.prompt_tokens_per_request:
            raise ValueError("cached_tokens_per_request cannot exceed prompt_tokens_per_request")
        if self.load_curve is not None:
            curve = tuple(float(v) for v in self.load_curve)
            normalized_curve(curve)  # validates
            object.__setattr__(self, "load_curve", curve)

    @property
    def tokens_per_request(self) -> float:
        """Prompt + completion tokens per request (tokens)."""
        return self.prompt_tokens_per_request + self.completion_tokens_per_request

    @property
    def peak_to_average(self) -> float:
        """Peak interval demand / average demand (1.0 when flat)."""
        return max(normalized_curve(self.load_curve))

    def average_rps(self, hours_per_month: float = HOURS_PER_MONTH_DEFAULT) -> float:
        """Average requests/s = requests_per_month / (hours_per_month × 3600)."""
        return self.requests_per_month / seconds_per_month(hours_per_month)

    def peak_rps(self, hours_per_month: float = HOURS_PER_MONTH_DEFAULT) -> float:
        """Peak requests/s = average_rps × peak_to_average."""
        return self.average_rps(hours_per_month) * self.peak_to_average

    def with_requests(self, requests_per_month: float) -> TrafficProfile:
        """The same token mix and load shape at another monthly volume."""
        return replace(self, requests_per_month=requests_per_month)


@dataclass(frozen=True)
class ScenarioResult:
    """One scenario's monthly cost, its parts and the figures it was computed from.

    `utilization` = busy GPU-seconds / paid GPU-seconds (None without GPUs);
    `api_share` = fraction of requests sent to the API.
    """

    scenario: str
    monthly_usd: float
    breakdown: Mapping[str, float]
    gpus: int
    utilization: float | None
    api_share: float
    hours_per_month: float
    inputs: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        out = asdict(self)
        out["breakdown"] = dict(self.breakdown)
        out["inputs"] = dict(self.inputs)
        return out


def _as_api(api: ApiCost | ModelPrice) -> ApiCost:
    return api if isinstance(api, ApiCost) else ApiCost(api)


def _price_inputs(api: ApiCost) -> dict[str, Any]:
    p = api.price
    per_m = {
        f"{name}_usd_per_1m": (None if v is None else v * TOKENS_PER_MILLION)
        for name, v in (
            ("input", p.input),
            ("output", p.output),
            ("cached_input", p.cached_input),
            ("cache_write_input", p.cache_write_input),
            ("batch_input", p.batch_input),
            ("batch_output", p.batch_output),
        )
    }
    return {**per_m, "batch": api.batch, "batch_discount": api.batch_discount}


def _profile_inputs(profile: TrafficProfile, hours_per_month: float) -> dict[str, Any]:
    return {
        "requests_per_month": profile.requests_per_month,
        "prompt_tokens_per_request": profile.prompt_tokens_per_request,
        "completion_tokens_per_request": profile.completion_tokens_per_request,
        "cached_tokens_per_request": profile.cached_tokens_per_request,
        "load_curve_intervals": 1 if profile.load_curve is None else len(profile.load_curve),
        "peak_to_average": profile.peak_to_average,
        "hours_per_month": hours_per_month,
        "average_rps": profile.average_rps(hours_per_month),
        "peak_rps": profile.peak_rps(hours_per_month),
    }


def _request_cost(api: ApiCost, profile: TrafficProfile) -> float:
    return api.request_cost(
        profile.prompt_tokens_per_request,
        profile.completion_tokens_per_request,
        profile.cached_tokens_per_request,
    )


def api_only(
    profile: TrafficProfile,
    api: ApiCost | ModelPrice,
    hours_per_month: float = HOURS_PER_MONTH_DEFAULT,
) -> ScenarioResult:
    """Every request to the pay-per-token API.

    monthly_usd = requests_per_month × api_cost(prompt, completion, cached tokens) (USD).
    """
    api = _as_api(api)
    per_request = _request_cost(api, profile)
    usd = profile.requests_per_month * per_request
    return ScenarioResult(
        scenario="api_only",
        monthly_usd=usd,
        breakdown={"api_tokens": usd},
        gpus=0,
        utilization=None,
        api_share=1.0,
        hours_per_month=hours_per_month,
        inputs={
            **_profile_inputs(profile, hours_per_month),
            **_price_inputs(api),
            "usd_per_request": per_request,
        },
    )


@dataclass(frozen=True, slots=True)
class _Load:
    """What a pool must carry for a profile: computed once, shared by every k."""

    capacity_rps_per_gpu: float
    seconds: float
    average_rps: float
    curve: tuple[float, ...]
    peak_rps: float
    gpus_for_peak: int
    busy_gpu_seconds: float


def _load(
    profile: TrafficProfile, pool: GpuPoolCost, hours_per_month: float, target_utilization: float
) -> _Load:
    cap = pool.capacity_rps_per_gpu(profile.tokens_per_request)
    curve = normalized_curve(profile.load_curve)
    avg = profile.average_rps(hours_per_month)
    peak = avg * max(curve)
    return _Load(
        capacity_rps_per_gpu=cap,
        seconds=seconds_per_month(hours_per_month),
        average_rps=avg,
        curve=curve,
        peak_rps=peak,
        gpus_for_peak=gpus_needed(peak, cap, target_utilization),
        busy_gpu_seconds=profile.requests_per_month / cap,
    )


def _pool_inputs(
    pool: GpuPoolCost, load: _Load, hours_per_month: float, target_utilization: float
) -> dict[str, Any]:
    return {
        "billing": pool.billing,
        "capacity_rps_per_gpu": load.capacity_rps_per_gpu,
        "target_utilization": target_utilization,
        "gpus_for_peak": load.gpus_for_peak,
        "usd_per_gpu_second": pool.usd_per_gpu_second(hours_per_month),
        "pool": {k: v for k, v in asdict(pool).items() if v is not None},
    }


def _fixed_parts(
    engineering: EngineeringCost | None, fine_tuning: FineTuningCost | None
) -> dict[str, float]:
    parts: dict[str, float] = {}
    if engineering is not None:
        parts.update(engineering.breakdown())
    if fine_tuning is not None:
        parts.update(fine_tuning.breakdown())
    return parts


def selfhosted_only(
    profile: TrafficProfile,
    pool: GpuPoolCost,
    engineering: EngineeringCost | None = None,
    hours_per_month: float = HOURS_PER_MONTH_DEFAULT,
    target_utilization: float = 1.0,
    fine_tuning: FineTuningCost | None = None,
) -> ScenarioResult:
    """Every request on self-hosted GPUs.

    busy GPU-seconds = requests_per_month / capacity_rps_per_gpu (s);
    rental/purchase: GPUs = max(1, gpus_needed(peak_rps, capacity, target_utilization)),
      paid busy or idle: pool.monthly_cost(hours, gpus=GPUs);
    serverless: pool.monthly_cost(busy_gpu_seconds=busy) (busy seconds + cold starts);
    monthly_usd = GPU cost + engineering + fine-tuning (USD).
    """
    load = _load(profile, pool, hours_per_month, target_utilization)
    if pool.dedicated:
        gpus = max(1, load.gpus_for_peak)
        paid_seconds = gpus * load.seconds
    else:
        gpus = load.gpus_for_peak  # concurrency at peak; billing follows busy seconds
        paid_seconds = load.busy_gpu_seconds + pool.cold_starts_per_month * pool.cold_start_seconds
    breakdown = {
        **pool.breakdown(hours_per_month, load.busy_gpu_seconds, gpus),
        **_fixed_parts(engineering, fine_tuning),
    }
    return ScenarioResult(
        scenario=f"selfhosted_only_{pool.billing}",
        monthly_usd=math.fsum(breakdown.values()),
        breakdown=breakdown,
        gpus=gpus,
        utilization=load.busy_gpu_seconds / paid_seconds if paid_seconds > 0 else None,
        api_share=0.0,
        hours_per_month=hours_per_month,
        inputs={
            **_profile_inputs(profile, hours_per_month),
            **_pool_inputs(pool, load, hours_per_month, target_utilization),
            "busy_gpu_seconds": load.busy_gpu_seconds,
            "paid_gpu_seconds": paid_seconds,
        },
    )


def selfhosted_busy_only(
    profile: TrafficProfile,
    pool: GpuPoolCost,
    engineering: EngineeringCost | None = None,
    hours_per_month: float = HOURS_PER_MONTH_DEFAULT,
    target_utilization: float = 1.0,
    fine_tuning: FineTuningCost | None = None,
) -> ScenarioResult:
    """The seed article's formula: pay only for busy GPU-seconds, idle time free.

    monthly_usd = requests_per_month / capacity_rps_per_gpu × pool.usd_per_gpu_second
    + engineering + fine-tuning (USD). Equivalent to serverless billing at the pool's
    per-second price with no cold starts; a lower bound no always-on GPU reaches.
    """
    # Price a GPU-second as the pool sized for this load would (per-pool hosting spread
    # over its GPUs), so busy-only never exceeds the always-on cost of the same GPUs.
    sized = pool
    if pool.dedicated:
        load = _load(profile, pool, hours_per_month, target_utilization)
        sized = replace(pool, gpus=max(1, load.gpus_for_peak))
    busy_pool = replace(
        pool,
        billing="serverless",
        serverless_usd_per_gpu_second=sized.usd_per_gpu_second(hours_per_month),
        cold_start_seconds=0.0,
        cold_starts_per_month=0.0,
    )
    result = selfhosted_only(
        profile, busy_pool, engineering, hours_per_month, target_utilization, fine_tuning
    )
    breakdown = {"gpu_busy_only": result.breakdown["gpu_serverless_busy"]}
    breakdown.update(_fixed_parts(engineering, fine_tuning))
    return replace(
        result,
        scenario="selfhosted_busy_only",
        breakdown=breakdown,
        monthly_usd=math.fsum(breakdown.values()),
        inputs={**result.inputs, "billing": pool.billing, "idle_gpu_time_charged": False},
    )


def _spilled_requests(load: _Load, k: int, target_utilization: float) -> float:
    """Requests per month above k GPUs' capacity, summed interval by interval:
    Σ_i max(rate_i − k × capacity × target_utilization, 0) × interval seconds."""
    if k == 0:
        return math.inf  # caller: everything goes to the API
    if k >= load.gpus_for_peak:
        return 0.0
    ceiling = k * load.capacity_rps_per_gpu * target_utilization
    interval_s = load.seconds / len(load.curve)
    excess = math.fsum(max(load.average_rps * w - ceiling, 0.0) for w in load.curve)
    return excess * interval_s


def hybrid(
    profile: TrafficProfile,
    k: int,
    pool: GpuPoolCost,
    api: ApiCost | ModelPrice,
    engineering: EngineeringCost | None = None,
    hours_per_month: float = HOURS_PER_MONTH_DEFAULT,
    target_utilization: float = 1.0,
    fine_tuning: FineTuningCost | None = None,
) -> ScenarioResult:
    """k dedicated GPUs take the base load; what exceeds them goes to the API.

    In each load-curve interval i: API rate = max(rate_i − k × capacity ×
    target_utilization, 0) (requests/s). Spilled requests = Σ_i API rate_i × interval
    seconds; GPU busy seconds = (requests − spilled) / capacity.
    monthly_usd = pool.monthly_cost(gpus=k) + spilled × api_cost per request
    + engineering + fine-tuning (the last two only when k > 0) (USD).
    k = 0 is API-only; k >= the GPUs needed for the peak is self-hosted-only.
    """
    if not pool.dedicated:
        raise ValueError("hybrid needs dedicated GPUs (rental or purchase); serverless scales")
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be an integer >= 0, got {k!r}")
    api = _as_api(api)
    load = _load(profile, pool, hours_per_month, target_utilization)
    return _hybrid(
        profile, k, pool, api, load, engineering, hours_per_month, target_utilization, fine_tuning
    )


def _hybrid(
    profile: TrafficProfile,
    k: int,
    pool: GpuPoolCost,
    api: ApiCost,
    load: _Load,
    engineering: EngineeringCost | None,
    hours_per_month: float,
    target_utilization: float,
    fine_tuning: FineTuningCost | None,
) -> ScenarioResult:
    requests = profile.requests_per_month
    spilled = min(_spilled_requests(load, k, target_utilization), requests)
    per_request = _request_cost(api, profile)
    busy = (requests - spilled) / load.capacity_rps_per_gpu
    breakdown: dict[str, float] = {}
    if k > 0:
        breakdown.update(pool.breakdown(hours_per_month, busy, k))
        breakdown.update(_fixed_parts(engineering, fine_tuning))
    breakdown["api_tokens"] = spilled * per_request
    return ScenarioResult(
        scenario="hybrid",
        monthly_usd=math.fsum(breakdown.values()),
        breakdown=breakdown,
        gpus=k,
        utilization=busy / (k * load.seconds) if k > 0 else None,
        api_share=spilled / requests if requests > 0 else 0.0,
        hours_per_month=hours_per_month,
        inputs={
            **_profile_inputs(profile, hours_per_month),
            **_pool_inputs(pool, load, hours_per_month, target_utilization),
            **_price_inputs(api),
            "k": k,
            "usd_per_request": per_request,
            "spilled_requests": spilled,
            "busy_gpu_seconds": busy,
        },
    )


def hybrid_optimal(
    profile: TrafficProfile,
    pool: GpuPoolCost,
    api: ApiCost | ModelPrice,
    engineering: EngineeringCost | None = None,
    hours_per_month: float = HOURS_PER_MONTH_DEFAULT,
    target_utilization: float = 1.0,
    fine_tuning: FineTuningCost | None = None,
) -> ScenarioResult:
    """The hybrid with the cheapest k, by exact search over k = 0 … GPUs for the peak.

    monthly_usd = min_k hybrid(k).monthly_usd (USD); ties go to the smaller k. k = 0
    (API-only) and k = max(1, GPUs for the peak) (self-hosted-only) are candidates, so
    the result is never worse than either; more GPUs than the peak needs only add cost.
    """
    if not pool.dedicated:
        raise ValueError("hybrid needs dedicated GPUs (rental or purchase); serverless scales")
    api = _as_api(api)
    load = _load(profile, pool, hours_per_month, target_utilization)
    k_max = max(1, load.gpus_for_peak)
    best: ScenarioResult | None = None
    costs: dict[int, float] = {}
    for k in range(k_max + 1):
        result = _hybrid(
            profile,
            k,
            pool,
            api,
            load,
            engineering,
            hours_per_month,
            target_utilization,
            fine_tuning,
        )
        costs[k] = result.monthly_usd
        if best is None or result.monthly_usd < best.monthly_usd:
            best = result
    assert best is not None
    inputs = dict(best.inputs)
    if len(costs) <= 64:
        inputs["monthly_usd_by_k"] = costs
    inputs["k_searched"] = [0, k_max]
    return replace(best, scenario="hybrid_optimal", inputs=inputs)
