"""How many GPUs a load needs, and the shape of that load over a month.

GPU counts are a step function of demand, so they are computed in exact rational
arithmetic (`fractions.Fraction` of the given floats): "the smallest k whose capacity
covers the peak" holds exactly, with no rounding tolerance to tune.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction


def gpus_needed(
    peak_demand: float, capacity_per_gpu: float, target_utilization: float = 1.0
) -> int:
    """GPUs = ceil(peak_demand / (capacity_per_gpu × target_utilization)).

    Demand and capacity in the same unit (requests/s or tokens/s, per GPU for
    capacity). `target_utilization` in (0, 1] leaves headroom (0.8 = plan for 80%
    busy at peak); the default 1.0 matches the seed. Zero demand needs zero GPUs.
    Exact: the result k is the smallest integer with
    k × capacity_per_gpu × target_utilization >= peak_demand.
    """
    if not (math.isfinite(peak_demand) and peak_demand >= 0):
        raise ValueError(f"peak_demand must be a finite number >= 0, got {peak_demand!r}")
    if not (math.isfinite(capacity_per_gpu) and capacity_per_gpu > 0):
        raise ValueError(f"capacity_per_gpu must be > 0, got {capacity_per_gpu!r}")
    if not 0 < target_utilization <= 1:
        raise ValueError(f"target_utilization must be in (0, 1], got {target_utilization!r}")
    usable = Fraction(capacity_per_gpu) * Fraction(target_utilization)
    return math.ceil(Fraction(peak_demand) / usable)


def normalized_curve(load_curve: Sequence[float] | None) -> tuple[float, ...]:
    """Per-interval demand as multiples of the average: w_i × n / Σw (mean 1.0).

    A load curve is N equal intervals (24 hourly values, 7×24, any N) of demand shares
    or rates; only its shape matters, the volume comes from requests per month.
    None means flat: (1.0,).
    """
    if load_curve is None:
        return (1.0,)
    values = tuple(float(v) for v in load_curve)
    if not values:
        raise ValueError("load_curve must have at least one interval")
    if any(not (math.isfinite(v) and v >= 0) for v in values):
        raise ValueError("load_curve values must be finite and >= 0")
    total = math.fsum(values)
    if total <= 0:
        raise ValueError("load_curve must have some demand (sum > 0)")
    n = len(values)
    return tuple(v * n / total for v in values)


def peak_to_average(load_curve: Sequence[float] | None) -> float:
    """Peak / average demand of a load curve (1.0 when flat or absent)."""
    return max(normalized_curve(load_curve))
