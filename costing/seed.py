"""The seed article's calculator, reproduced, and what it leaves out.

Its defaults: 1,000 tokens per request at $0.002 per 1K tokens; a $2.50/GPU-hour GPU
serving 50 requests/s; 40 setup hours at $100/hour amortised over 12 months plus
5 maintenance hours a month; 720-hour months. Its formula charges only the GPU-seconds
the requests keep busy (requests / 50 req/s × $2.50 / 3600), so at 5M requests/month:

    API          5,000,000 × 1,000 / 1,000 × $0.002           = $10,000.00
    self-hosted  5,000,000 / 50 s × $2.50 / 3600 = $69.44
                 + 40 × $100 / 12 + 5 × $100     = $833.33  -> $902.78

The article prints $1,236.11, which does not follow from its own code (the difference,
$333.33, equals one month of amortised setup, so it may count setup twice; the code
does not say). And a GPU you rent is paid for idle hours too: one always-on GPU is
$2.50 × 730 h = $1,825.00, plus $833.33 engineering = $2,658.33.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from costing.gpu import EngineeringCost, GpuPoolCost
from costing.prices import ModelPrice
from costing.tco import (
    ScenarioResult,
    TrafficProfile,
    api_only,
    selfhosted_busy_only,
    selfhosted_only,
)
from costing.units import HOURS_PER_MONTH_DEFAULT, SEED_HOURS_PER_MONTH

SEED_REQUESTS_PER_MONTH: Final[int] = 5_000_000
SEED_TOKENS_PER_REQUEST: Final[int] = 1_000
SEED_USD_PER_1K_TOKENS: Final[float] = 0.002
SEED_GPU_USD_PER_HOUR: Final[float] = 2.50
SEED_CAPACITY_RPS_PER_GPU: Final[float] = 50.0
SEED_SETUP_HOURS: Final[float] = 40.0
SEED_HOURLY_RATE_USD: Final[float] = 100.0
SEED_AMORTIZE_MONTHS: Final[float] = 12.0
SEED_MAINTENANCE_HOURS_PER_MONTH: Final[float] = 5.0
SEED_PRINTED_SELFHOSTED_USD: Final[float] = 1236.11
"""What the article prints for self-hosting 5M requests; not what its formula gives."""
SEED_VOLUMES: Final[tuple[int, ...]] = (10_000, 100_000, 1_000_000, 10_000_000, 100_000_000)
"""The request volumes of the seed's comparison table (requests per month)."""


def seed_price() -> ModelPrice:
    """The seed's API price: $0.002 per 1K tokens for input and output alike
    (= 0.002 / 1000 USD per token)."""
    per_token = SEED_USD_PER_1K_TOKENS / 1000
    return ModelPrice(input=per_token, output=per_token)


def seed_profile(requests_per_month: float = SEED_REQUESTS_PER_MONTH) -> TrafficProfile:
    """1,000 tokens per request, flat load. The seed prices all tokens at one rate, so
    the prompt/completion split does not change any figure; they are counted as prompt."""
    return TrafficProfile(requests_per_month, SEED_TOKENS_PER_REQUEST, 0)


def seed_pool() -> GpuPoolCost:
    """One rented GPU at $2.50/hour serving 50 requests/s."""
    return GpuPoolCost(
        gpus=1,
        billing="rental",
        usd_per_gpu_hour=SEED_GPU_USD_PER_HOUR,
        capacity_requests_per_s=SEED_CAPACITY_RPS_PER_GPU,
    )


def seed_engineering() -> EngineeringCost:
    """40 setup hours × $100 / 12 months + 5 maintenance hours × $100 = $833.33/month."""
    return EngineeringCost(
        setup_hours=SEED_SETUP_HOURS,
        hourly_rate_usd=SEED_HOURLY_RATE_USD,
        amortize_months=SEED_AMORTIZE_MONTHS,
        maintenance_hours_per_month=SEED_MAINTENANCE_HOURS_PER_MONTH,
    )


@dataclass(frozen=True)
class SeedComparison:
    """The seed's two numbers, and the always-on GPU it leaves out, for one volume."""

    api: ScenarioResult
    seed_formula: ScenarioResult
    always_on: ScenarioResult

    @property
    def seed_savings_usd(self) -> float:
        """What the seed's formula says self-hosting saves: API − busy-only (USD/month)."""
        return self.api.monthly_usd - self.seed_formula.monthly_usd

    @property
    def always_on_savings_usd(self) -> float:
        """Savings once idle GPU hours are paid: API − always-on (USD/month; < 0 = a loss)."""
        return self.api.monthly_usd - self.always_on.monthly_usd

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return {
            "api": self.api.to_dict(),
            "seed_formula": self.seed_formula.to_dict(),
            "always_on": self.always_on.to_dict(),
            "seed_savings_usd": self.seed_savings_usd,
            "always_on_savings_usd": self.always_on_savings_usd,
            "seed_printed_selfhosted_usd": SEED_PRINTED_SELFHOSTED_USD,
        }


def seed_comparison(
    requests_per_month: float = SEED_REQUESTS_PER_MONTH,
    hours_per_month: float = HOURS_PER_MONTH_DEFAULT,
) -> SeedComparison:
    """The seed's figures for `requests_per_month`, all in USD per month:

    api          = requests × 1,000 tokens × $0.002 / 1K;
    seed_formula = requests / 50 req/s × $2.50 / 3600 + $833.33 (720 h month, as the seed);
    always_on    = GPUs for the peak (≥ 1) × $2.50 × hours_per_month + $833.33.
    """
    profile = seed_profile(requests_per_month)
    pool = seed_pool()
    engineering = seed_engineering()
    return SeedComparison(
        api=api_only(profile, seed_price(), SEED_HOURS_PER_MONTH),
        seed_formula=selfhosted_busy_only(profile, pool, engineering, SEED_HOURS_PER_MONTH),
        always_on=selfhosted_only(profile, pool, engineering, hours_per_month),
    )
