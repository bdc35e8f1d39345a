"""GPU pool, engineering and fine-tuning cost models, and GPUs needed for a load."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from costing import HOURS_PER_MONTH_DEFAULT, SEED_HOURS_PER_MONTH
from costing.capacity import gpus_needed, normalized_curve, peak_to_average
from costing.gpu import EngineeringCost, FineTuningCost, GpuPoolCost


def test_month_constants() -> None:
    assert HOURS_PER_MONTH_DEFAULT == 730 == 8760 / 12
    assert SEED_HOURS_PER_MONTH == 720 == 30 * 24


# ---------------------------------------------------------------- GPU pools


def test_rental_is_paid_busy_or_idle() -> None:
    pool = GpuPoolCost(gpus=2, billing="rental", usd_per_gpu_hour=2.50)
    # 2 GPUs × $2.50 × 730 h = $3,650.00, whatever the load.
    assert pool.monthly_cost() == pytest.approx(3650.0, abs=1e-9)
    assert pool.monthly_cost(busy_gpu_seconds=1e6) == pool.monthly_cost()
    assert pool.monthly_cost(720, gpus=1) == pytest.approx(1800.0, abs=1e-9)
    assert pool.usd_per_gpu_second() == pytest.approx(2.50 / 3600, rel=1e-15)


def test_purchase_amortises_and_adds_power_and_hosting() -> None:
    pool = GpuPoolCost(
        gpus=4,
        billing="purchase",
        purchase_usd_per_gpu=30_000,
        amortize_months=36,
        power_kw_per_gpu=0.7,
        usd_per_kwh=0.12,
        hosting_usd_per_month=400,
    )
    parts = pool.breakdown(730)
    assert parts["gpu_amortisation"] == pytest.approx(4 * 30_000 / 36, rel=1e-12)  # 3,333.33
    assert parts["gpu_power"] == pytest.approx(4 * 0.7 * 0.12 * 730, rel=1e-12)  # 245.28
    assert parts["gpu_hosting"] == 400
    assert pool.monthly_cost(730) == pytest.approx(3333.3333333 + 245.28 + 400, rel=1e-9)
    # Per GPU-second: the month's cost over 4 GPUs × 730 h × 3600 s.
    assert pool.usd_per_gpu_second(730) == pytest.approx(
        pool.monthly_cost(730) / (4 * 730 * 3600), rel=1e-12
    )
    assert pool.monthly_cost(gpus=0) == 0  # no GPUs, no pool: no hosting either


def test_serverless_pays_busy_seconds_and_cold_starts() -> None:
    pool = GpuPoolCost(
        billing="serverless",
        serverless_usd_per_gpu_second=0.001,
        cold_start_seconds=4,
        cold_starts_per_month=250,
    )
    # 10,000 busy s × $0.001 + 250 × 4 s × $0.001 = $10 + $1
    assert pool.monthly_cost(busy_gpu_seconds=10_000) == pytest.approx(11.0, rel=1e-12)
    assert pool.usd_per_gpu_second() == 0.001
    assert not pool.dedicated


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"billing": "rental"}, "usd_per_gpu_hour"),
        ({"billing": "purchase", "purchase_usd_per_gpu": 1.0}, "amortize_months"),
        ({"billing": "serverless"}, "serverless_usd_per_gpu_second"),
        ({"billing": "lease", "usd_per_gpu_hour": 1.0}, "billing must be"),
        ({"usd_per_gpu_hour": -1.0}, ">= 0"),
        ({"usd_per_gpu_hour": 1.0, "gpus": 1.5}, "gpus"),
        ({"usd_per_gpu_hour": 1.0, "capacity_requests_per_s": 0.0}, "> 0"),
    ],
)
def test_pool_validation_names_the_field(kwargs: dict[str, Any], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        GpuPoolCost(**kwargs)


def test_capacity_per_gpu_is_the_binding_limit() -> None:
    pool = GpuPoolCost(
        usd_per_gpu_hour=1.0, capacity_tokens_per_s=2500, capacity_requests_per_s=3.0
    )
    assert pool.capacity_rps_per_gpu(1000) == 2.5  # 2,500 tokens/s ÷ 1,000 tokens
    assert pool.capacity_rps_per_gpu(500) == 3.0  # the request limit binds
    with pytest.raises(ValueError, match="capacity"):
        GpuPoolCost(usd_per_gpu_hour=1.0).capacity_rps_per_gpu(1000)


# ---------------------------------------------------------------- people, training


def test_engineering_seed_figure() -> None:
    eng = EngineeringCost(40, 100, 12, 5)
    # 40 h × $100 / 12 + 5 h × $100 = $333.33 + $500.00
    assert eng.breakdown() == {
        "engineering_setup": pytest.approx(333.3333333333, rel=1e-12),
        "engineering_maintenance": 500.0,
    }
    assert round(eng.monthly_cost(), 2) == 833.33


def test_fine_tuning_is_amortised() -> None:
    ft = FineTuningCost(
        training_tokens=50_000_000, usd_per_1k_training_tokens=0.008, amortize_months=6
    )
    # 50M / 1K × $0.008 = $400, over 6 months
    assert ft.monthly_cost() == pytest.approx(400 / 6, rel=1e-12)


def test_zero_amortisation_is_rejected() -> None:
    with pytest.raises(ValueError):
        EngineeringCost(40, 100, 0, 5)
    with pytest.raises(ValueError):
        FineTuningCost(1, 1, 0)


# ---------------------------------------------------------------- GPUs needed


def test_gpus_needed_by_hand() -> None:
    assert gpus_needed(0, 50) == 0
    assert gpus_needed(50, 50) == 1
    assert gpus_needed(50.000001, 50) == 2
    assert gpus_needed(100, 50, target_utilization=0.8) == 3  # 100 / 40 = 2.5 -> 3
    assert gpus_needed(0.3, 0.1) == 3  # 0.3/0.1 is 2.9999999999999996 in floats; exact here


@given(
    st.floats(0, 1e9, allow_nan=False),
    st.floats(1e-6, 1e6, allow_nan=False),
    st.floats(0.01, 1.0, allow_nan=False),
)
def test_gpus_needed_is_the_smallest_k_covering_the_peak(
    peak: float, capacity: float, utilization: float
) -> None:
    k = gpus_needed(peak, capacity, utilization)
    usable = Fraction(capacity) * Fraction(utilization)
    assert k * usable >= Fraction(peak)
    assert k == 0 or (k - 1) * usable < Fraction(peak)


@pytest.mark.parametrize(
    ("args", "pattern"),
    [((-1, 50), "peak_demand"), ((1, 0), "capacity"), ((1, 50, 0), "target_utilization")],
)
def test_gpus_needed_rejects_nonsense(args: tuple[float, ...], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        gpus_needed(*args)


def test_load_curve_shape() -> None:
    assert normalized_curve(None) == (1.0,)
    assert normalized_curve([1, 1, 2]) == (0.75, 0.75, 1.5)
    assert peak_to_average([2, 2, 2, 2]) == 1.0
    assert peak_to_average([0, 0, 0, 10]) == 4.0
    with pytest.raises(ValueError):
        normalized_curve([0, 0])


@given(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=200))
def test_normalized_curve_has_mean_one(values: list[float]) -> None:
    if math.fsum(values) <= 0:
        with pytest.raises(ValueError):
            normalized_curve(values)
        return
    curve = normalized_curve(values)
    assert math.fsum(curve) / len(curve) == pytest.approx(1.0, rel=1e-9)
    assert max(curve) >= 1.0 - 1e-12
