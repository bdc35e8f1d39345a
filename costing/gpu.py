"""Self-hosting cost models: a GPU pool (rented, bought or serverless) and the people.

Built from plain numbers, not from the config classes, so the calculator, the live
cost model and the tests share one definition. Every model exposes a `breakdown`
(named USD parts) and a `monthly_cost` that is exactly their sum, so a reader can
check any total by hand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Literal, get_args

from costing.units import HOURS_PER_MONTH_DEFAULT, SECONDS_PER_HOUR, seconds_per_month

Billing = Literal["rental", "purchase", "serverless"]
BILLINGS: tuple[str, ...] = get_args(Billing)


def _check_amount(name: str, value: float | None) -> None:
    if value is not None and (isinstance(value, bool) or not math.isfinite(value) or value < 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


@dataclass(frozen=True, slots=True)
class GpuPoolCost:
    """The price and capacity of one pool of identical GPUs.

    billing:
      rental      paid per GPU-hour whether busy or idle (`usd_per_gpu_hour`);
      purchase    bought: `purchase_usd_per_gpu` over `amortize_months`, plus power
                  (`power_kw_per_gpu` × `usd_per_kwh`) and `hosting_usd_per_month`
                  (per pool: rack, colocation), all paid busy or idle;
      serverless  paid per busy GPU-second (`serverless_usd_per_gpu_second`) plus
                  `cold_starts_per_month` × `cold_start_seconds` at the same rate.
    Capacity is per GPU: `capacity_requests_per_s` and/or `capacity_tokens_per_s`
    (prompt + completion tokens per second at saturation).
    """

    gpus: int = 1
    billing: Billing = "rental"
    usd_per_gpu_hour: float | None = None
    purchase_usd_per_gpu: float | None = None
    amortize_months: float | None = None
    power_kw_per_gpu: float = 0.0
    usd_per_kwh: float = 0.0
    hosting_usd_per_month: float = 0.0
    serverless_usd_per_gpu_second: float | None = None
    cold_start_seconds: float = 0.0
    cold_starts_per_month: float = 0.0
    capacity_tokens_per_s: float | None = None
    capacity_requests_per_s: float | None = None

    def __post_init__(self) -> None:
        if self.billing not in BILLINGS:
            raise ValueError(f"billing must be one of {', '.join(BILLINGS)}, got {self.billing!r}")
        if isinstance(self.gpus, bool) or not isinstance(self.gpus, int) or self.gpus < 0:
            raise ValueError(f"gpus must be an integer >= 0, got {self.gpus!r}")
        for f in fields(self):
            if f.name not in ("gpus", "billing"):
                _check_amount(f.name, getattr(self, f.name))
        required = {
            "rental": ("usd_per_gpu_hour",),
            "purchase": ("purchase_usd_per_gpu", "amortize_months"),
            "serverless": ("serverless_usd_per_gpu_second",),
        }[self.billing]
        missing = [name for name in required if getattr(self, name) is None]
        if missing:
            raise ValueError(f"billing {self.billing!r} needs {', '.join(missing)}")
        if self.billing == "purchase" and not self.amortize_months:
            raise ValueError("amortize_months must be > 0 for a purchased pool")
        for name in ("capacity_tokens_per_s", "capacity_requests_per_s"):
            if getattr(self, name) == 0:
                raise ValueError(f"{name} must be > 0 when given")

    @property
    def dedicated(self) -> bool:
        """True when GPUs are paid for busy or idle (rental, purchase)."""
        return self.billing != "serverless"

    def usd_per_gpu_second(self, hours_per_month: float = HOURS_PER_MONTH_DEFAULT) -> float:
        """USD per GPU-second, the price of one second of one GPU.

        rental:     usd_per_gpu_hour / 3600;
        purchase:   monthly_cost(gpus=max(gpus, 1)) / (max(gpus, 1) × hours_per_month × 3600),
                    i.e. amortisation + power + this GPU's share of hosting, per second;
        serverless: serverless_usd_per_gpu_second.
        """
        if self.billing == "rental":
            assert self.usd_per_gpu_hour is not None
            return self.usd_per_gpu_hour / SECONDS_PER_HOUR
        if self.billing == "serverless":
            assert self.serverless_usd_per_gpu_second is not None
            return self.serverless_usd_per_gpu_second
        gpus = max(self.gpus, 1)
        return self.monthly_cost(hours_per_month, gpus=gpus) / (
            gpus * seconds_per_month(hours_per_month)
        )

    def breakdown(
        self,
        hours_per_month: float = HOURS_PER_MONTH_DEFAULT,
        busy_gpu_seconds: float = 0.0,
        gpus: int | None = None,
    ) -> dict[str, float]:
        """Monthly USD by part; `monthly_cost` is their sum (see it for the formulas)."""
        n = self.gpus if gpus is None else gpus
        if n < 0 or busy_gpu_seconds < 0:
            raise ValueError("gpus and busy_gpu_seconds must be >= 0")
        seconds_per_month(hours_per_month)  # validates hours
        if self.billing == "rental":
            assert self.usd_per_gpu_hour is not None
            return {"gpu_rental": n * self.usd_per_gpu_hour * hours_per_month}
        if self.billing == "purchase":
            assert self.purchase_usd_per_gpu is not None and self.amortize_months
            return {
                "gpu_amortisation": n * self.purchase_usd_per_gpu / self.amortize_months,
                "gpu_power": n * self.power_kw_per_gpu * self.usd_per_kwh * hours_per_month,
                "gpu_hosting": self.hosting_usd_per_month if n > 0 else 0.0,
            }
        rate = self.usd_per_gpu_second(hours_per_month)
        return {
            "gpu_serverless_busy": busy_gpu_seconds * rate,
            "gpu_serverless_cold_starts": (
                self.cold_starts_per_month * self.cold_start_seconds * rate
            ),
        }

    def monthly_cost(
        self,
        hours_per_month: float = HOURS_PER_MONTH_DEFAULT,
        busy_gpu_seconds: float = 0.0,
        gpus: int | None = None,
    ) -> float:
        """USD per month for `gpus` GPUs (default: the pool's), h = hours_per_month:

        rental:     gpus × usd_per_gpu_hour × h (busy or idle);
        purchase:   gpus × purchase_usd_per_gpu / amortize_months
                    + gpus × power_kw_per_gpu × usd_per_kwh × h + hosting_usd_per_month;
        serverless: busy_gpu_seconds × usd_per_gpu_second
                    + cold_starts_per_month × cold_start_seconds × usd_per_gpu_second.
        `busy_gpu_seconds` only matters for serverless; a pool of 0 GPUs costs $0.
        """
        return math.fsum(self.breakdown(hours_per_month, busy_gpu_seconds, gpus).values())

    def capacity_rps_per_gpu(self, tokens_per_request: float) -> float:
        """Sustainable requests/s of one GPU: the binding one of capacity_requests_per_s
        and capacity_tokens_per_s / tokens_per_request (tokens = prompt + completion)."""
        limits: list[float] = []
        if self.capacity_requests_per_s is not None:
            limits.append(self.capacity_requests_per_s)
        if self.capacity_tokens_per_s is not None:
            if tokens_per_request > 0:
                limits.append(self.capacity_tokens_per_s / tokens_per_request)
            elif self.capacity_requests_per_s is None:
                raise ValueError("capacity_tokens_per_s needs tokens_per_request > 0")
        if not limits:
            raise ValueError(
                "the pool needs capacity_requests_per_s or capacity_tokens_per_s (per GPU)"
            )
        return min(limits)


@dataclass(frozen=True, slots=True)
class EngineeringCost:
    """People cost of running self-hosted models: setup amortised, plus upkeep.

    Left out of most GPU-vs-API comparisons, and often the largest self-hosted line
    at low volume (the seed's $833.33/month against $69.44 of GPU time).
    """

    setup_hours: float
    hourly_rate_usd: float
    amortize_months: float
    maintenance_hours_per_month: float

    def __post_init__(self) -> None:
        for f in fields(self):
            _check_amount(f.name, getattr(self, f.name))
        if not self.amortize_months:
            raise ValueError("amortize_months must be > 0")

    def breakdown(self) -> dict[str, float]:
        """Monthly USD by part; `monthly_cost` is their sum."""
        return {
            "engineering_setup": self.setup_hours * self.hourly_rate_usd / self.amortize_months,
            "engineering_maintenance": self.maintenance_hours_per_month * self.hourly_rate_usd,
        }

    def monthly_cost(self) -> float:
        """USD per month = setup_hours × hourly_rate_usd / amortize_months
        + maintenance_hours_per_month × hourly_rate_usd."""
        return math.fsum(self.breakdown().values())


@dataclass(frozen=True, slots=True)
class FineTuningCost:
    """An optional one-off training run, spread over the months it serves."""

    training_tokens: float
    usd_per_1k_training_tokens: float
    amortize_months: float

    def __post_init__(self) -> None:
        for f in fields(self):
            _check_amount(f.name, getattr(self, f.name))
        if not self.amortize_months:
            raise ValueError("amortize_months must be > 0")

    def breakdown(self) -> dict[str, float]:
        """Monthly USD by part; `monthly_cost` is their sum."""
        return {"fine_tuning": self.monthly_cost()}

    def monthly_cost(self) -> float:
        """USD per month = training_tokens / 1000 × usd_per_1k_training_tokens / amortize_months."""
        return self.training_tokens / 1000 * self.usd_per_1k_training_tokens / self.amortize_months
