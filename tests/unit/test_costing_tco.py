"""TCO scenarios: API-only, self-hosted-only, hybrid(k), hybrid-optimal; and breakeven."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from costing import ModelPrice
from costing.breakeven import breakeven
from costing.gpu import EngineeringCost, GpuPoolCost
from costing.tco import (
    ScenarioResult,
    TrafficProfile,
    api_only,
    hybrid,
    hybrid_optimal,
    selfhosted_busy_only,
    selfhosted_only,
)

SEED_PRICE = ModelPrice(input=2e-6, output=2e-6)
SEED_ENG = EngineeringCost(40, 100, 12, 5)
SEED_POOL = GpuPoolCost(billing="rental", usd_per_gpu_hour=2.50, capacity_requests_per_s=50)
DIURNAL = (1, 1, 1, 1, 1, 1, 2, 4, 8, 10, 10, 10, 10, 10, 10, 10, 8, 6, 4, 3, 2, 2, 1, 1)


def _sum_is_total(r: ScenarioResult) -> bool:
    return r.monthly_usd == math.fsum(r.breakdown.values())


# ---------------------------------------------------------------- by hand


def test_api_only_by_hand() -> None:
    profile = TrafficProfile(1_000_000, 800, 200, cached_tokens_per_request=300)
    price = ModelPrice.per_million(input=0.15, output=0.60, cached_input=0.075)
    r = api_only(profile, price)
    # per request: 500 × 0.15e-6 + 300 × 0.075e-6 + 200 × 0.60e-6 = $0.0002175
    assert r.monthly_usd == pytest.approx(217.5, rel=1e-12)
    assert r.gpus == 0 and r.utilization is None and r.api_share == 1.0
    assert r.inputs["usd_per_request"] == pytest.approx(0.0002175, rel=1e-12)
    assert r.inputs["requests_per_month"] == 1_000_000


def test_selfhosted_rental_sizes_for_the_peak_of_the_load_curve() -> None:
    # 100M requests/month, flat: 100e6 / 2,628,000 s = 38.05 req/s -> 1 GPU at 50 req/s.
    flat = selfhosted_only(TrafficProfile(100_000_000, 1000, 0), SEED_POOL, SEED_ENG)
    assert flat.gpus == 1
    assert flat.monthly_usd == pytest.approx(1825 + 833.3333333, rel=1e-9)
    assert flat.utilization == pytest.approx(100e6 / 50 / (730 * 3600), rel=1e-12)
    # Same volume, peak 2× the average (two intervals, 1 and 3): 76.1 req/s -> 2 GPUs.
    peaky = selfhosted_only(TrafficProfile(100_000_000, 1000, 0, load_curve=(1, 3)), SEED_POOL)
    assert peaky.inputs["peak_to_average"] == 1.5
    assert peaky.gpus == 2  # 38.05 × 1.5 = 57.08 req/s
    assert peaky.breakdown == {"gpu_rental": pytest.approx(2 * 2.5 * 730, rel=1e-12)}


def test_selfhosted_needs_at_least_one_gpu_even_at_zero_volume() -> None:
    r = selfhosted_only(TrafficProfile(0, 1000, 0), SEED_POOL, SEED_ENG)
    assert r.gpus == 1
    assert r.utilization == 0
    assert round(r.monthly_usd, 2) == 2658.33


def test_serverless_pays_per_busy_second() -> None:
    pool = GpuPoolCost(
        billing="serverless",
        serverless_usd_per_gpu_second=0.0008,
        cold_start_seconds=3,
        cold_starts_per_month=100,
        capacity_requests_per_s=20,
    )
    r = selfhosted_only(TrafficProfile(2_000_000, 500, 500), pool)
    # 2M / 20 = 100,000 busy s × $0.0008 = $80; cold starts 100 × 3 s × $0.0008 = $0.24
    assert r.breakdown == {
        "gpu_serverless_busy": pytest.approx(80.0, rel=1e-12),
        "gpu_serverless_cold_starts": pytest.approx(0.24, rel=1e-12),
    }
    assert r.utilization == pytest.approx(100_000 / 100_300, rel=1e-12)


def test_busy_only_is_the_seed_formula_and_never_above_always_on() -> None:
    profile = TrafficProfile(5_000_000, 1000, 0)
    busy = selfhosted_busy_only(profile, SEED_POOL, SEED_ENG, 720)
    assert busy.breakdown["gpu_busy_only"] == pytest.approx(5e6 / 50 * 2.5 / 3600, rel=1e-12)
    assert busy.inputs["idle_gpu_time_charged"] is False
    always = selfhosted_only(profile, SEED_POOL, SEED_ENG, 720)
    assert busy.monthly_usd < always.monthly_usd


def test_hybrid_spills_the_excess_interval_by_interval() -> None:
    # Two equal intervals, demand 1:3. 2,628,000 requests/month over 730 h = 1 req/s on
    # average, so 0.5 and 1.5 req/s. One GPU at 1 req/s takes 0.5 then 1.0; the excess,
    # 0.5 req/s for half the month, is 0.5 × 1,314,000 s = 657,000 requests to the API.
    pool = GpuPoolCost(billing="rental", usd_per_gpu_hour=1.0, capacity_requests_per_s=1.0)
    profile = TrafficProfile(2_628_000, 1000, 0, load_curve=(1, 3))
    r = hybrid(profile, 1, pool, SEED_PRICE)
    assert r.inputs["spilled_requests"] == pytest.approx(657_000, rel=1e-12)
    assert r.api_share == pytest.approx(0.25, rel=1e-12)
    assert r.breakdown["api_tokens"] == pytest.approx(657_000 * 0.002, rel=1e-12)
    assert r.breakdown["gpu_rental"] == pytest.approx(730.0, rel=1e-12)
    assert r.utilization == pytest.approx(0.75, rel=1e-12)
    assert _sum_is_total(r)


def test_hybrid_ends_are_api_only_and_selfhosted_only() -> None:
    profile = TrafficProfile(30_000_000, 500, 500, load_curve=DIURNAL)
    pool = GpuPoolCost(billing="rental", usd_per_gpu_hour=2.5, capacity_requests_per_s=5)
    price = ModelPrice.per_million(input=0.15, output=0.60)
    api = api_only(profile, price)
    sh = selfhosted_only(profile, pool, SEED_ENG)
    assert hybrid(profile, 0, pool, price, SEED_ENG).monthly_usd == api.monthly_usd
    full = hybrid(profile, sh.gpus, pool, price, SEED_ENG)
    assert full.monthly_usd == sh.monthly_usd and full.api_share == 0
    best = hybrid_optimal(profile, pool, price, SEED_ENG)
    assert 0 < best.gpus < sh.gpus  # this load is worth splitting
    assert best.monthly_usd < min(api.monthly_usd, sh.monthly_usd)
    assert best.inputs["monthly_usd_by_k"][best.gpus] == best.monthly_usd
    assert min(best.inputs["monthly_usd_by_k"].values()) == best.monthly_usd


def test_hybrid_needs_dedicated_gpus() -> None:
    pool = GpuPoolCost(
        billing="serverless", serverless_usd_per_gpu_second=0.001, capacity_requests_per_s=5
    )
    with pytest.raises(ValueError, match="dedicated"):
        hybrid(TrafficProfile(1000, 10, 10), 1, pool, SEED_PRICE)


def test_every_result_carries_its_inputs_and_hours() -> None:
    r = selfhosted_only(TrafficProfile(1_000_000, 600, 400), SEED_POOL, SEED_ENG, 720)
    assert r.hours_per_month == 720
    for key in ("requests_per_month", "capacity_rps_per_gpu", "busy_gpu_seconds", "pool"):
        assert key in r.inputs
    assert r.to_dict()["inputs"]["pool"]["usd_per_gpu_hour"] == 2.5


def test_profile_validation() -> None:
    with pytest.raises(ValueError, match="cached"):
        TrafficProfile(1, 10, 10, cached_tokens_per_request=11)
    with pytest.raises(ValueError, match="requests_per_month"):
        TrafficProfile(-1, 10, 10)
    with pytest.raises(ValueError, match="load_curve"):
        TrafficProfile(1, 10, 10, load_curve=())


# ---------------------------------------------------------------- breakeven by hand


def test_seed_breakeven_by_hand() -> None:
    # API $0.002/request vs one always-on GPU $1,825 + $833.33 engineering = $2,658.33:
    # 2,658.333… / 0.002 = 1,329,166.67 -> the first whole request count is 1,329,167.
    r = breakeven(TrafficProfile(0, 1000, 0), SEED_POOL, SEED_PRICE, SEED_ENG)
    assert r.requests_per_month == 1_329_167
    assert not r.crosses_back and r.cross_backs == 0
    assert r.settled_requests_per_month == 1_329_167
    assert r.gpus == 1 and r.hours_per_month == 730
    assert any("131,400,000" in line for line in r.reasoning)  # one GPU's monthly capacity


def test_breakeven_with_cross_backs_by_hand() -> None:
    # API $0.00002/request; a GPU carries 131.4M requests/month (replacing $2,628 of API)
    # and costs $1,825: margin $803/GPU. Fixed $833.33, so the first crossing is on step 2
    # at (833.33 + 2 × 1825) / 0.00002 = 224,166,667 requests. The 3rd and 4th GPUs each
    # push self-hosted above the API again (j × 803 < 833.33 + 1825 for j = 2, 3); from
    # step 4, at (833.33 + 4 × 1825) / 0.00002 = 406,666,667, it stays below.
    price = ModelPrice(input=2e-8, output=2e-8)
    r = breakeven(TrafficProfile(0, 1000, 0), SEED_POOL, price, SEED_ENG)
    assert r.requests_per_month == 224_166_667
    assert r.crosses_back and r.cross_backs == 2
    assert r.settled_requests_per_month == 406_666_667


def test_no_breakeven_when_a_full_gpu_costs_more_than_its_traffic_on_the_api() -> None:
    price = ModelPrice(input=1e-9, output=1e-9)  # a full GPU replaces only $131.40
    r = breakeven(TrafficProfile(0, 1000, 0), SEED_POOL, price, SEED_ENG)
    assert r.requests_per_month is None
    assert any("No breakeven" in line for line in r.reasoning)


def test_serverless_breakeven_closed_form() -> None:
    pool = GpuPoolCost(
        billing="serverless", serverless_usd_per_gpu_second=0.001, capacity_requests_per_s=50
    )
    # GPU $0.00002/request, API $0.002: fixed $833.33 / $0.00198 = 420,875.42 -> 420,876
    r = breakeven(TrafficProfile(0, 1000, 0), pool, SEED_PRICE, SEED_ENG)
    assert r.requests_per_month == 420_876
    assert not r.crosses_back


# ---------------------------------------------------------------- properties

volumes = st.integers(0, 10**10)
token_counts = st.integers(1, 8000)
curves = st.none() | st.lists(st.integers(0, 100), min_size=1, max_size=24).filter(
    lambda c: sum(c) > 0
)
per_million = st.floats(0.01, 60.0)
dedicated_pools = st.builds(
    GpuPoolCost,
    billing=st.just("rental"),
    usd_per_gpu_hour=st.floats(0.2, 12.0),
    capacity_requests_per_s=st.floats(0.5, 200.0),
) | st.builds(
    GpuPoolCost,
    billing=st.just("purchase"),
    purchase_usd_per_gpu=st.floats(1000, 60000),
    amortize_months=st.floats(6, 60),
    power_kw_per_gpu=st.floats(0, 1.5),
    usd_per_kwh=st.floats(0, 0.4),
    hosting_usd_per_month=st.floats(0, 2000),
    capacity_requests_per_s=st.floats(0.5, 200.0),
)
serverless_pools = st.builds(
    GpuPoolCost,
    billing=st.just("serverless"),
    serverless_usd_per_gpu_second=st.floats(1e-5, 5e-3),
    cold_start_seconds=st.floats(0, 5),
    cold_starts_per_month=st.floats(0, 1000),
    capacity_requests_per_s=st.floats(0.5, 200.0),
)
engineering = st.builds(
    EngineeringCost,
    setup_hours=st.floats(0, 400),
    hourly_rate_usd=st.floats(0, 250),
    amortize_months=st.floats(1, 36),
    maintenance_hours_per_month=st.floats(0, 40),
)
utilizations = st.floats(0.3, 1.0)


@st.composite
def profiles(draw: st.DrawFn) -> TrafficProfile:
    prompt = draw(token_counts)
    curve = draw(curves)
    return TrafficProfile(
        draw(volumes),
        prompt,
        draw(token_counts),
        draw(st.integers(0, prompt)),
        None if curve is None else tuple(curve),
    )


@given(
    profiles(),
    volumes,
    dedicated_pools | serverless_pools,
    st.builds(ModelPrice.per_million, per_million, per_million),
    engineering,
    utilizations,
)
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_costs_are_non_negative_and_monotone_in_volume(
    profile: TrafficProfile,
    more: int,
    pool: GpuPoolCost,
    price: ModelPrice,
    eng: EngineeringCost,
    util: float,
) -> None:
    low, high = profile, profile.with_requests(profile.requests_per_month + more)
    pairs = [
        (api_only(low, price), api_only(high, price)),
        (
            selfhosted_only(low, pool, eng, target_utilization=util),
            selfhosted_only(high, pool, eng, target_utilization=util),
        ),
    ]
    if pool.dedicated:
        pairs.append(
            (
                hybrid_optimal(low, pool, price, eng, target_utilization=util),
                hybrid_optimal(high, pool, price, eng, target_utilization=util),
            )
        )
    for a, b in pairs:
        assert 0 <= a.monthly_usd <= b.monthly_usd, a.scenario
        assert _sum_is_total(a) and _sum_is_total(b)
        if a.utilization is not None:
            assert 0 <= a.utilization <= 1


@given(
    profiles(),
    dedicated_pools,
    st.builds(ModelPrice.per_million, per_million, per_million),
    engineering,
    utilizations,
)
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_hybrid_optimal_is_never_worse_than_either_pure_scenario(
    profile: TrafficProfile,
    pool: GpuPoolCost,
    price: ModelPrice,
    eng: EngineeringCost,
    util: float,
) -> None:
    sh = selfhosted_only(profile, pool, eng, target_utilization=util)
    assume(sh.gpus <= 400)  # keep the exhaustive k search small
    best = hybrid_optimal(profile, pool, price, eng, target_utilization=util)
    assert best.monthly_usd <= api_only(profile, price).monthly_usd
    assert best.monthly_usd <= sh.monthly_usd
    assert 0 <= best.gpus <= sh.gpus


@given(
    profiles(),
    dedicated_pools | serverless_pools,
    st.builds(ModelPrice.per_million, per_million, per_million),
    engineering,
    utilizations,
)
@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
def test_costs_straddle_at_the_reported_breakeven(
    profile: TrafficProfile,
    pool: GpuPoolCost,
    price: ModelPrice,
    eng: EngineeringCost,
    util: float,
) -> None:
    r = breakeven(profile, pool, price, eng, target_utilization=util)

    def costs(v: int) -> tuple[float, float]:
        p = profile.with_requests(v)
        return (
            selfhosted_only(p, pool, eng, target_utilization=util).monthly_usd,
            api_only(p, price).monthly_usd,
        )

    event(
        "no breakeven"
        if r.requests_per_month is None
        else f"breakeven, crosses back: {r.crosses_back}, {pool.billing}"
    )
    if r.requests_per_month is None:
        # No breakeven: self-hosted costs more at a volume far beyond any real one.
        sh, api = costs(10**12)
        assert sh > api
        return
    v = r.requests_per_month
    sh, api = costs(v)
    assert sh <= api  # at (and so "just above") the breakeven the API is no cheaper
    assert r.selfhosted_usd == sh and r.api_usd == api
    if v > 0:
        sh_below, api_below = costs(v - 1)
        assert api_below < sh_below  # one request below, the API is cheaper
    if r.crosses_back:
        assert r.settled_requests_per_month is not None
        assert r.settled_requests_per_month > v
        sh_s, api_s = costs(r.settled_requests_per_month)
        sh_b, api_b = costs(r.settled_requests_per_month - 1)
        assert sh_s <= api_s and api_b < sh_b
    else:
        assert r.settled_requests_per_month == v
