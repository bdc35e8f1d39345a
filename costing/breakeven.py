"""Breakeven: the monthly volume where self-hosting stops costing more than the API.

Same token mix and load shape, volume varied, in whole requests per month. The API
costs a × V (a = USD per request). Self-hosted costs
  serverless:     fixed + b × V               (b = USD per GPU-second / capacity),
  rental/purchase fixed + j × p on step j     (j GPUs cover up to j × V_gpu requests),
a step function: at each new GPU the cost jumps by p, so after the first crossing it
can rise above the API line again ("cross back") before the per-GPU saving a × V_gpu − p
has paid for the fixed costs for good.

The closed form finds the step; the exact answer is then searched over whole volumes
with the very scenario functions the rest of the product reports (`api_only`,
`selfhosted_only`), so "self-hosted ≤ API at the breakeven and > API one request
below" holds for the figures the user sees, with no tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from costing.api import ApiCost
from costing.gpu import EngineeringCost, FineTuningCost, GpuPoolCost
from costing.prices import ModelPrice
from costing.tco import ScenarioResult, TrafficProfile, api_only, selfhosted_only
from costing.units import HOURS_PER_MONTH_DEFAULT, format_usd, seconds_per_month

MAX_REQUESTS_PER_MONTH: Final[int] = 10**15
"""Search ceiling (~380M requests/s): beyond it we report "no breakeven"."""

_MAX_WALK: Final[int] = 10_000  # steps walked past the closed-form estimate (float slack)


@dataclass(frozen=True)
class BreakevenResult:
    """Where self-hosted-only first costs no more than API-only, and what happens after.

    requests_per_month: the smallest whole monthly volume V with
      selfhosted_only(V) ≤ api_only(V), or None if there is none up to the search
      ceiling; self-hosted costs more at V − 1.
    crosses_back / cross_backs: whether (and how often) self-hosted becomes dearer
      again at a later GPU step; settled_requests_per_month: from there on it never does.
    """

    requests_per_month: int | None
    crosses_back: bool
    cross_backs: int
    settled_requests_per_month: int | None
    api_usd: float | None
    selfhosted_usd: float | None
    gpus: int | None
    hours_per_month: float
    reasoning: tuple[str, ...]
    inputs: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        out = asdict(self)
        out["reasoning"] = list(self.reasoning)
        out["inputs"] = dict(self.inputs)
        return out


class _Curves:
    """API-only and self-hosted-only cost as functions of whole monthly volume."""

    def __init__(
        self,
        profile: TrafficProfile,
        pool: GpuPoolCost,
        api: ApiCost,
        engineering: EngineeringCost | None,
        hours_per_month: float,
        target_utilization: float,
        fine_tuning: FineTuningCost | None,
        ceiling: int,
    ) -> None:
        self.profile = profile
        self.pool = pool
        self.api_model = api
        self.engineering = engineering
        self.hours = hours_per_month
        self.util = target_utilization
        self.fine_tuning = fine_tuning
        self.ceiling = ceiling
        self._uppers: dict[int, int] = {}

    def api(self, volume: int) -> ScenarioResult:
        return api_only(self.profile.with_requests(volume), self.api_model, self.hours)

    def selfhosted(self, volume: int) -> ScenarioResult:
        return selfhosted_only(
            self.profile.with_requests(volume),
            self.pool,
            self.engineering,
            self.hours,
            self.util,
            self.fine_tuning,
        )

    def ok(self, volume: int) -> bool:
        """Self-hosted costs no more than the API at this volume."""
        return self.selfhosted(volume).monthly_usd <= self.api(volume).monthly_usd

    def upper(self, gpus: int) -> int:
        """Largest volume (≤ ceiling) that `gpus` dedicated GPUs can carry."""
        if gpus not in self._uppers:
            self._uppers[gpus] = _last_true(
                lambda v: self.selfhosted(v).gpus <= gpus, 0, self.ceiling
            )
        return self._uppers[gpus]

    def step_start(self, gpus: int) -> int:
        return 0 if gpus <= 1 else self.upper(gpus - 1) + 1

    def merges_after(self, gpus: int) -> bool:
        """No cross back at the end of step `gpus`: self-hosted still ≤ API one request on."""
        end = self.upper(gpus)
        return end >= self.ceiling or self.ok(end + 1)


def _first_true(pred: Callable[[int], bool], lo: int, hi: int) -> int:
    """Smallest v in [lo, hi] with pred(v), given pred(hi) (bisection; pred(v−1) is False)."""
    if pred(lo):
        return lo
    while hi - lo > 1:  # invariant: not pred(lo), pred(hi)
        mid = (lo + hi) // 2
        if pred(mid):
            hi = mid
        else:
            lo = mid
    return hi


def _last_true(pred: Callable[[int], bool], lo: int, hi: int) -> int:
    """Largest v in [lo, hi] with pred(v), given pred(lo) (bisection)."""
    if pred(hi):
        return hi
    while hi - lo > 1:  # invariant: pred(lo), not pred(hi)
        mid = (lo + hi) // 2
        if pred(mid):
            lo = mid
        else:
            hi = mid
    return lo


def breakeven(
    profile: TrafficProfile,
    pool: GpuPoolCost,
    api: ApiCost | ModelPrice,
    engineering: EngineeringCost | None = None,
    hours_per_month: float = HOURS_PER_MONTH_DEFAULT,
    target_utilization: float = 1.0,
    fine_tuning: FineTuningCost | None = None,
    max_requests_per_month: int = MAX_REQUESTS_PER_MONTH,
) -> BreakevenResult:
    """Smallest whole monthly volume V (requests) with selfhosted_only(V) ≤ api_only(V).

    Closed form (a = API USD/request, V_gpu = capacity × target_utilization × month
    seconds / peak-to-average requests per GPU-month, p = USD per GPU-month, F = fixed
    USD/month: engineering, fine-tuning, hosting, cold starts):
      serverless:  V* = F / (a − b), b = USD per GPU-second / capacity; none if a ≤ b;
      dedicated:   first step j* = max(1, ceil(F / (a × V_gpu − p))), V* = (F + j* × p) / a;
                   none if a × V_gpu ≤ p; crosses back while j × (a × V_gpu − p) < F + p.
    The closed form only picks the step: the returned volume is searched exactly with
    the scenario functions. `profile.requests_per_month` is ignored.
    """
    api = api if isinstance(api, ApiCost) else ApiCost(api)
    curves = _Curves(
        profile,
        pool,
        api,
        engineering,
        hours_per_month,
        target_utilization,
        fine_tuning,
        max_requests_per_month,
    )
    a = api.request_cost(
        profile.prompt_tokens_per_request,
        profile.completion_tokens_per_request,
        profile.cached_tokens_per_request,
    )
    cap = pool.capacity_rps_per_gpu(profile.tokens_per_request)
    fixed_people = math.fsum(
        [
            engineering.monthly_cost() if engineering else 0.0,
            fine_tuning.monthly_cost() if fine_tuning else 0.0,
        ]
    )
    inputs: dict[str, Any] = {
        "billing": pool.billing,
        "usd_per_request_api": a,
        "capacity_rps_per_gpu": cap,
        "target_utilization": target_utilization,
        "peak_to_average": profile.peak_to_average,
        "hours_per_month": hours_per_month,
        "engineering_and_fine_tuning_usd_per_month": fixed_people,
    }
    if pool.dedicated:
        return _dedicated(curves, a, cap, fixed_people, inputs)
    return _serverless(curves, a, cap, fixed_people, inputs)


def _result(
    curves: _Curves,
    volume: int | None,
    cross_backs: int,
    settled: int | None,
    reasoning: list[str],
    inputs: dict[str, Any],
) -> BreakevenResult:
    if volume is None:
        return BreakevenResult(
            None, False, 0, None, None, None, None, curves.hours, tuple(reasoning), inputs
        )
    sh, ap = curves.selfhosted(volume), curves.api(volume)
    reasoning.append(
        f"At {volume:,} requests/month: API ${ap.monthly_usd:,.4f} ≥ self-hosted "
        f"${sh.monthly_usd:,.4f} ({sh.gpus} GPU{'s' if sh.gpus != 1 else ''})"
        + (
            f"; one request fewer: API ${curves.api(volume - 1).monthly_usd:,.4f} "
            f"< self-hosted ${curves.selfhosted(volume - 1).monthly_usd:,.4f}."
            if volume > 0
            else "."
        )
    )
    return BreakevenResult(
        requests_per_month=volume,
        crosses_back=cross_backs > 0,
        cross_backs=cross_backs,
        settled_requests_per_month=settled,
        api_usd=ap.monthly_usd,
        selfhosted_usd=sh.monthly_usd,
        gpus=sh.gpus,
        hours_per_month=curves.hours,
        reasoning=tuple(reasoning),
        inputs=inputs,
    )


def _serverless(
    curves: _Curves, a: float, cap: float, fixed_people: float, inputs: dict[str, Any]
) -> BreakevenResult:
    pool = curves.pool
    rate = pool.usd_per_gpu_second(curves.hours)
    b = rate / cap
    fixed = fixed_people + pool.cold_starts_per_month * pool.cold_start_seconds * rate
    inputs |= {"usd_per_request_gpu": b, "fixed_usd_per_month": fixed}
    reasoning = [
        f"API: ${a * 1000:,.4f} per 1,000 requests ({a:.6g} USD/request).",
        f"Serverless GPU: {b:.6g} USD/request ({rate:.6g} USD/GPU-s ÷ {cap:g} req/s) "
        f"plus {format_usd(fixed)}/month fixed (engineering, fine-tuning, cold starts).",
    ]
    if curves.ok(0):
        reasoning.append("Self-hosted costs no more than the API even at zero volume.")
        return _result(curves, 0, 0, 0, reasoning, inputs)
    if a <= b:
        reasoning.append(
            "No breakeven: a request costs at least as much on the GPU as on the API, "
            "and the fixed costs never pay back."
        )
        return _result(curves, None, 0, None, reasoning, inputs)
    estimate = fixed / (a - b)
    reasoning.append(
        f"Linear costs cross at fixed / (API − GPU per request) = {format_usd(fixed)} / "
        f"{a - b:.6g} ≈ {estimate:,.0f} requests/month."
    )
    hi = min(curves.ceiling, math.ceil(estimate) + 1)
    while not curves.ok(hi) and hi < curves.ceiling:
        hi = min(curves.ceiling, hi * 2)
    if not curves.ok(hi):
        reasoning.append(f"No breakeven up to {curves.ceiling:,} requests/month.")
        return _result(curves, None, 0, None, reasoning, inputs)
    lo = max(0, math.floor(estimate) - 1)
    if curves.ok(lo):
        lo = 0
    volume = _first_true(curves.ok, lo, hi)
    return _result(curves, volume, 0, volume, reasoning, inputs)


def _dedicated(
    curves: _Curves, a: float, cap: float, fixed_people: float, inputs: dict[str, Any]
) -> BreakevenResult:
    pool, hours = curves.pool, curves.hours
    one, two = pool.monthly_cost(hours, gpus=1), pool.monthly_cost(hours, gpus=2)
    p = two - one  # USD per extra GPU-month
    fixed = fixed_people + (one - p)  # + per-pool hosting
    v_gpu = cap * curves.util * seconds_per_month(hours) / curves.profile.peak_to_average
    margin = a * v_gpu - p  # API spend one full GPU replaces, minus that GPU's cost
    inputs |= {
        "usd_per_gpu_month": p,
        "fixed_usd_per_month": fixed,
        "requests_per_gpu_month": v_gpu,
        "margin_usd_per_full_gpu": margin,
    }
    reasoning = [
        f"API: ${a * 1000:,.4f} per 1,000 requests ({a:.6g} USD/request).",
        f"Self-hosted ({pool.billing}, paid busy or idle): each GPU carries up to "
        f"{v_gpu:,.0f} requests/month ({cap:g} req/s × {curves.util:.0%} target utilization "
        f"× {hours:g} h × 3600 s ÷ peak/average {curves.profile.peak_to_average:.2f}) and "
        f"costs {format_usd(p)}/month; fixed {format_usd(fixed)}/month "
        "(engineering, fine-tuning, hosting).",
        f"A full GPU replaces {format_usd(a * v_gpu)} of API spend: "
        f"margin {format_usd(margin)} per GPU-month.",
    ]
    if curves.ok(0):
        reasoning.append("Self-hosted costs no more than the API even at zero volume.")
        first_step = 1
    else:
        if margin <= 0 and not curves.ok(curves.upper(1)) and not curves.ok(curves.upper(2)):
            reasoning.append(
                "No breakeven: a fully loaded GPU costs at least what its traffic costs on "
                "the API, so more volume never pays back the fixed costs."
            )
            return _result(curves, None, 0, None, reasoning, inputs)
        estimate = max(1, math.ceil(fixed / margin)) if margin > 0 else 1
        j = max(1, estimate - 1)
        while j > 1 and curves.ok(curves.upper(j - 1)):
            j -= 1
        for _ in range(_MAX_WALK):
            if curves.ok(curves.upper(j)):
                break
            if curves.upper(j) >= curves.ceiling:
                reasoning.append(f"No breakeven up to {curves.ceiling:,} requests/month.")
                return _result(curves, None, 0, None, reasoning, inputs)
            j += 1
        else:  # pragma: no cover - the closed form puts the step within a few of j
            raise RuntimeError("breakeven search did not converge")
        first_step = j
        reasoning.append(
            f"First crossing on step {j} ({j} GPU{'s' if j != 1 else ''}): the smallest j with "
            f"j × margin ≥ fixed, so (fixed + j × {format_usd(p)}) / API per request."
        )
    volume = _first_true(curves.ok, curves.step_start(first_step), curves.upper(first_step))

    # Cross backs: after step j the next GPU adds p; it stays below the API only once
    # j × margin ≥ fixed + p. Find the last step that does not merge into the next.
    last_gap = first_step - 1
    if not curves.merges_after(first_step):
        j = first_step
        if margin > 0:
            j = max(first_step, math.ceil((fixed + p) / margin) - 1)
        while j > first_step and curves.merges_after(j):
            j -= 1
        for _ in range(_MAX_WALK):
            if curves.merges_after(j + 1):
                break
            j += 1
        last_gap = j
    cross_backs = last_gap - first_step + 1
    if cross_backs > 0:
        settled = _first_true(
            curves.ok, curves.step_start(last_gap + 1), curves.upper(last_gap + 1)
        )
        reasoning.append(
            f"Costs cross back {cross_backs} time{'s' if cross_backs != 1 else ''}: each new "
            f"GPU adds {format_usd(p)} before its traffic pays for it. Self-hosted stays at or "
            f"below the API from {settled:,} requests/month ({last_gap + 1} GPUs)."
        )
    else:
        settled = volume
        reasoning.append("Costs do not cross back: every later GPU step stays below the API line.")
    return _result(curves, volume, cross_backs, settled, reasoning, inputs)
