"""`hybridgate tco`: the offline TCO and breakeven calculator.

Every assumption is a flag; `--config` takes pools, engineering, prices and the month
length from hybridgate.yaml, and flags given explicitly win over the file. With no
flags the assumptions are the seed article's, and the output reproduces its figures
beside what its script leaves out (an always-on GPU's idle hours).

Heavy imports (rich, yaml, the price table) happen inside `run`, so `hybridgate --help`
stays fast.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from costing.api import ApiCost
    from costing.breakeven import BreakevenResult
    from costing.gpu import EngineeringCost, FineTuningCost, GpuPoolCost
    from costing.seed import SeedComparison
    from costing.tco import ScenarioResult, TrafficProfile

# Flags that change an assumption; if none is given (and no --config), the run is the seed's.
_ASSUMPTION_FLAGS = (
    "tokens_per_request",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "completion_share",
    "load_curve",
    "api_model",
    "api_usd_per_1k",
    "batch",
    "batch_discount",
    "billing",
    "gpu_usd_per_hour",
    "purchase_usd_per_gpu",
    "gpu_amortize_months",
    "power_kw_per_gpu",
    "usd_per_kwh",
    "hosting_usd_per_month",
    "serverless_usd_per_gpu_second",
    "cold_start_seconds",
    "cold_starts_per_month",
    "gpu_throughput_rps",
    "gpu_throughput_tps",
    "target_utilization",
    "setup_hours",
    "hourly_rate_usd",
    "setup_amortize_months",
    "maintenance_hours_per_month",
    "fine_tune_tokens",
)

# GpuPoolCost field -> the flag that sets it (for error messages that say what to type).
_POOL_FLAGS = {
    "usd_per_gpu_hour": "--gpu-usd-per-hour",
    "purchase_usd_per_gpu": "--purchase-usd-per-gpu",
    "amortize_months": "--gpu-amortize-months",
    "serverless_usd_per_gpu_second": "--serverless-usd-per-gpu-second",
}

_CONFIG_POOL_AMORTIZE_MONTHS = 36.0  # hybridgate.yaml's default for a bought pool
_MIN_WIDTH = 100  # columns the sweep table needs


def _volume(text: str) -> int:
    """`5000000`, `5,000,000`, `5_000_000`, `5M`, `100K`, `1.5B` -> whole requests."""
    cleaned = text.strip().replace(",", "").replace("_", "")
    scale = {"K": 10**3, "M": 10**6, "B": 10**9}.get(cleaned[-1:].upper(), 1)
    if scale != 1:
        cleaned = cleaned[:-1]
    try:
        value = float(cleaned) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a request volume: {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"volume must be >= 0: {text!r}")
    return round(value)


def _volumes(text: str) -> list[int]:
    return [_volume(part) for part in text.split(",") if part.strip()]


def _curve(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"load curve must be comma-separated numbers: {text!r}"
        ) from None
    if not values or any(not (math.isfinite(v) and v >= 0) for v in values) or sum(values) <= 0:
        raise argparse.ArgumentTypeError("load curve needs numbers >= 0 with a positive sum")
    return values


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return value


def _fraction(text: str) -> float:
    value = _non_negative(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1: {text!r}")
    return value


def register(subparsers: Any) -> None:
    """Add the `tco` subcommand to the `hybridgate` parser."""
    p = subparsers.add_parser(
        "tco",
        help="offline TCO and breakeven calculator (API vs self-hosted vs hybrid)",
        description="Monthly cost of one traffic profile served by the API, by self-hosted "
        "GPUs (rented, bought or serverless) and by a hybrid, and where self-hosting breaks "
        "even. Defaults are the seed article's assumptions; --config takes pools, "
        "engineering and prices from hybridgate.yaml; explicit flags win.",
    )
    mode = p.add_argument_group("output")
    mode.add_argument("--sweep", action="store_true", help="cost table over request volumes")
    mode.add_argument(
        "--volumes",
        type=_volumes,
        metavar="LIST",
        help="volumes for --sweep (default: 10K,100K,1M,10M,100M, the seed's)",
    )
    mode.add_argument(
        "--breakeven", action="store_true", help="the breakeven volume and its reasoning"
    )
    mode.add_argument("--json", action="store_true", help="machine-readable output")

    src = p.add_argument_group("sources")
    src.add_argument("--config", "-c", metavar="FILE", help="take pools/engineering/prices from")
    src.add_argument("--pool", metavar="NAME", help="which gpu_pools entry (when several)")
    src.add_argument(
        "--seed-defaults",
        action="store_true",
        help="the seed article's assumptions for every unset flag, and its figures checked",
    )

    t = p.add_argument_group("traffic")
    t.add_argument("--requests", type=_volume, metavar="N", help="requests/month (default 5M)")
    t.add_argument(
        "--tokens-per-request",
        type=_non_negative,
        metavar="N",
        help="prompt + completion tokens (default 1000)",
    )
    t.add_argument(
        "--completion-share",
        type=_fraction,
        metavar="F",
        help="share of --tokens-per-request that is completion (default 0.5)",
    )
    t.add_argument("--prompt-tokens", type=_non_negative, metavar="N")
    t.add_argument("--completion-tokens", type=_non_negative, metavar="N")
    t.add_argument(
        "--cached-tokens",
        type=_non_negative,
        metavar="N",
        help="prompt tokens per request served from the API's prompt cache",
    )
    t.add_argument(
        "--load-curve",
        type=_curve,
        metavar="W1,W2,...",
        help="relative demand in N equal intervals (e.g. 24 hourly values); default flat",
    )

    a = p.add_argument_group("API")
    api_price = a.add_mutually_exclusive_group()
    api_price.add_argument("--api-model", metavar="NAME", help="price from litellm's table")
    api_price.add_argument(
        "--api-usd-per-1k",
        type=_non_negative,
        metavar="USD",
        help="one blended price per 1K tokens (default 0.002, the seed's)",
    )
    a.add_argument("--batch", action="store_true", default=None, help="price the batch tier")
    a.add_argument(
        "--batch-discount",
        type=_fraction,
        metavar="F",
        help="batch discount where the table has none (0.5 = the seed's 50%%)",
    )

    g = p.add_argument_group("GPU pool")
    g.add_argument("--billing", choices=("rental", "purchase", "serverless"))
    g.add_argument("--gpu-usd-per-hour", type=_non_negative, metavar="USD", help="default 2.50")
    g.add_argument("--purchase-usd-per-gpu", type=_non_negative, metavar="USD")
    g.add_argument("--gpu-amortize-months", type=_non_negative, metavar="N")
    g.add_argument("--power-kw-per-gpu", type=_non_negative, metavar="KW")
    g.add_argument("--usd-per-kwh", type=_non_negative, metavar="USD")
    g.add_argument("--hosting-usd-per-month", type=_non_negative, metavar="USD")
    g.add_argument(
        "--serverless-usd-per-gpu-second",
        type=_non_negative,
        metavar="USD",
        help="default: --gpu-usd-per-hour / 3600",
    )
    g.add_argument("--cold-start-seconds", type=_non_negative, metavar="S")
    g.add_argument("--cold-starts-per-month", type=_non_negative, metavar="N")
    g.add_argument(
        "--gpu-throughput-rps", type=_non_negative, metavar="RPS", help="per GPU (default 50)"
    )
    g.add_argument(
        "--gpu-throughput-tps",
        type=_non_negative,
        metavar="TPS",
        help="per GPU, prompt + completion tokens/s",
    )
    g.add_argument(
        "--target-utilization",
        type=_fraction,
        metavar="F",
        help="size GPUs for this busy share at peak (default 1.0, as the seed)",
    )

    e = p.add_argument_group("engineering and fine-tuning")
    e.add_argument("--setup-hours", type=_non_negative, metavar="H", help="default 40")
    e.add_argument("--hourly-rate-usd", type=_non_negative, metavar="USD", help="default 100")
    e.add_argument("--setup-amortize-months", type=_non_negative, metavar="N", help="default 12")
    e.add_argument(
        "--maintenance-hours-per-month", type=_non_negative, metavar="H", help="default 5"
    )
    e.add_argument("--fine-tune-tokens", type=_non_negative, metavar="N")
    e.add_argument("--fine-tune-usd-per-1k", type=_non_negative, metavar="USD", default=0.0)
    e.add_argument("--fine-tune-amortize-months", type=_non_negative, metavar="N", default=12.0)

    p.add_argument(
        "--hours-per-month",
        type=_non_negative,
        metavar="H",
        help="month length (default 730; the seed uses 720)",
    )
    p.set_defaults(func=run)


# ------------------------------------------------------------------ assumptions


class _UsageError(ValueError):
    """A problem with the flags or the config file, reported without a traceback."""


@dataclass
class _Assumptions:
    requests: int
    profile: TrafficProfile
    api: ApiCost
    api_label: str
    pool: GpuPoolCost
    pool_label: str
    engineering: EngineeringCost
    fine_tuning: FineTuningCost | None
    hours_per_month: float
    hours_source: str
    target_utilization: float
    configured_gpus: int | None
    is_seed: bool
    notes: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        pr = self.profile
        pool = {f.name: getattr(self.pool, f.name) for f in fields(self.pool)}
        return {
            "requests_per_month": self.requests,
            "prompt_tokens_per_request": pr.prompt_tokens_per_request,
            "completion_tokens_per_request": pr.completion_tokens_per_request,
            "cached_tokens_per_request": pr.cached_tokens_per_request,
            "load_curve": list(pr.load_curve) if pr.load_curve else None,
            "peak_to_average": pr.peak_to_average,
            "api": self.api_label,
            "api_usd_per_1m": {
                "input": self.api.price.input * 1e6,
                "output": self.api.price.output * 1e6,
                "cached_input": None
                if self.api.price.cached_input is None
                else self.api.price.cached_input * 1e6,
            },
            "batch": self.api.batch,
            "pool": self.pool_label,
            "pool_cost": {k: v for k, v in pool.items() if v is not None},
            "engineering": {
                f.name: getattr(self.engineering, f.name) for f in fields(self.engineering)
            },
            "fine_tuning": None
            if self.fine_tuning is None
            else {f.name: getattr(self.fine_tuning, f.name) for f in fields(self.fine_tuning)},
            "target_utilization": self.target_utilization,
            "hours_per_month": self.hours_per_month,
            "hours_per_month_source": self.hours_source,
            "configured_gpus": self.configured_gpus,
            "seed_assumptions": self.is_seed,
            "notes": list(self.notes),
        }


class _LenientEnv(Mapping[str, str]):
    """os.environ where an unset variable reads as "": the calculator needs no secrets."""

    def __getitem__(self, key: str) -> str:
        return os.environ.get(key, "")

    def get(self, key: str, default: Any = None) -> str:
        return os.environ.get(key, "")

    def __iter__(self) -> Iterator[str]:
        return iter(os.environ)

    def __len__(self) -> int:
        return len(os.environ)


def _read_config(path: str) -> dict[str, Any]:
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise _UsageError(f"cannot read config {path}: {exc.strerror or exc}") from None
    try:
        from proxy.config import expand_env
    except ImportError:  # no env expansion available: read the file as written
        pass
    else:
        text = expand_env(text, _LenientEnv())
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise _UsageError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise _UsageError(f"{path}: expected a mapping at the top level")
    return data


def _section(config: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = config.get(key) or {}
    if not isinstance(value, dict):
        raise _UsageError(f"config {key}: expected a mapping")
    return value


def _number(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _UsageError(f"{where}: expected a number, got {value!r}")
    return float(value)


def _compare_to_model(config: Mapping[str, Any]) -> str | None:
    for alias in _section(config, "models").values():
        if isinstance(alias, dict) and isinstance(alias.get("compare_to"), dict):
            model = alias["compare_to"].get("model")
            if isinstance(model, str):
                return model
    return None


def _flag(args: argparse.Namespace, name: str) -> Any:
    return getattr(args, name, None)


def _resolve(args: argparse.Namespace) -> _Assumptions:
    """Flags > --config > the seed's defaults, for every assumption."""
    from costing.api import ApiCost
    from costing.gpu import EngineeringCost, FineTuningCost, GpuPoolCost
    from costing.prices import ModelPrice, PriceTable, UnknownModelPrice
    from costing.seed import (
        SEED_AMORTIZE_MONTHS,
        SEED_CAPACITY_RPS_PER_GPU,
        SEED_GPU_USD_PER_HOUR,
        SEED_HOURLY_RATE_USD,
        SEED_MAINTENANCE_HOURS_PER_MONTH,
        SEED_REQUESTS_PER_MONTH,
        SEED_SETUP_HOURS,
        SEED_TOKENS_PER_REQUEST,
        SEED_USD_PER_1K_TOKENS,
    )
    from costing.tco import TrafficProfile
    from costing.units import HOURS_PER_MONTH_DEFAULT

    if args.seed_defaults and args.config:
        raise _UsageError("--seed-defaults and --config exclude each other")
    notes: list[str] = []
    config = _read_config(args.config) if args.config else {}

    # traffic
    requests = SEED_REQUESTS_PER_MONTH if args.requests is None else args.requests
    split = args.prompt_tokens is not None or args.completion_tokens is not None
    if split and (args.tokens_per_request is not None or args.completion_share is not None):
        raise _UsageError(
            "give --tokens-per-request (with --completion-share) or --prompt-tokens/"
            "--completion-tokens, not both"
        )
    if split:
        prompt = args.prompt_tokens or 0.0
        completion = args.completion_tokens or 0.0
    else:
        total = (
            SEED_TOKENS_PER_REQUEST if args.tokens_per_request is None else args.tokens_per_request
        )
        share = 0.5 if args.completion_share is None else args.completion_share
        completion = total * share
        prompt = total - completion
    try:
        profile = TrafficProfile(
            requests, prompt, completion, args.cached_tokens or 0.0, args.load_curve
        )
    except ValueError as exc:
        raise _UsageError(str(exc)) from None

    # API price
    overrides = _section(config, "prices")
    model = args.api_model
    if model is None and args.api_usd_per_1k is None:
        model = _compare_to_model(config)
    if model is not None:
        try:
            price = PriceTable.load(overrides).get(model)
        except UnknownModelPrice as exc:
            raise _UsageError(str(exc)) from None
        except ValueError as exc:
            raise _UsageError(f"config {exc}") from None
        api_label = model
        if not args.api_model:
            notes.append(f"API model {model!r} from the config's compare_to")
    else:
        usd_per_1k = SEED_USD_PER_1K_TOKENS if args.api_usd_per_1k is None else args.api_usd_per_1k
        price = ModelPrice(input=usd_per_1k / 1000, output=usd_per_1k / 1000)
        api_label = f"${usd_per_1k:g} per 1K tokens"
    try:
        api = ApiCost(price, batch=bool(args.batch), batch_discount=args.batch_discount)
    except ValueError as exc:
        raise _UsageError(str(exc)) from None
    if args.batch:
        api_label += " (batch tier)"

    # GPU pool
    pools = _section(config, "gpu_pools")
    pool_values: dict[str, Any] = {}
    pool_label = "flags"
    if pools:
        name = args.pool
        if name is None:
            if len(pools) > 1:
                raise _UsageError(
                    f"config has several gpu_pools ({', '.join(pools)}): choose one with --pool"
                )
            name = next(iter(pools))
        if name not in pools:
            raise _UsageError(f"no gpu_pools entry {name!r} (have: {', '.join(pools)})")
        raw_pool = pools[name] or {}
        if not isinstance(raw_pool, dict):
            raise _UsageError(f"config gpu_pools.{name}: expected a mapping")
        known = {f.name for f in fields(GpuPoolCost)}
        pool_values = {k: v for k, v in raw_pool.items() if k in known and v is not None}
        for key, value in pool_values.items():
            if key not in ("billing", "gpus"):
                pool_values[key] = _number(f"config gpu_pools.{name}.{key}", value)
        if pool_values.get("billing") == "purchase":
            pool_values.setdefault("amortize_months", _CONFIG_POOL_AMORTIZE_MONTHS)
        pool_label = f"gpu_pools.{name}"
    elif args.pool:
        raise _UsageError("--pool needs --config with gpu_pools")
    configured_gpus = pool_values.get("gpus") if pools else None
    for flag_name, key in (
        ("billing", "billing"),
        ("gpu_usd_per_hour", "usd_per_gpu_hour"),
        ("purchase_usd_per_gpu", "purchase_usd_per_gpu"),
        ("gpu_amortize_months", "amortize_months"),
        ("power_kw_per_gpu", "power_kw_per_gpu"),
        ("usd_per_kwh", "usd_per_kwh"),
        ("hosting_usd_per_month", "hosting_usd_per_month"),
        ("serverless_usd_per_gpu_second", "serverless_usd_per_gpu_second"),
        ("cold_start_seconds", "cold_start_seconds"),
        ("cold_starts_per_month", "cold_starts_per_month"),
    ):
        if _flag(args, flag_name) is not None:
            pool_values[key] = _flag(args, flag_name)
    if args.gpu_throughput_rps is not None or args.gpu_throughput_tps is not None:
        pool_values["capacity_requests_per_s"] = args.gpu_throughput_rps
        pool_values["capacity_tokens_per_s"] = args.gpu_throughput_tps
    if (
        pool_values.get("capacity_requests_per_s") is None
        and pool_values.get("capacity_tokens_per_s") is None
    ):
        pool_values["capacity_requests_per_s"] = SEED_CAPACITY_RPS_PER_GPU
    billing = pool_values.setdefault("billing", "rental")
    if billing in ("rental", "serverless") and pool_values.get("usd_per_gpu_hour") is None:
        pool_values["usd_per_gpu_hour"] = SEED_GPU_USD_PER_HOUR
    if billing == "serverless" and pool_values.get("serverless_usd_per_gpu_second") is None:
        pool_values["serverless_usd_per_gpu_second"] = pool_values["usd_per_gpu_hour"] / 3600
        notes.append("serverless price per GPU-second derived as --gpu-usd-per-hour / 3600")
    if billing == "purchase":
        missing = [
            _POOL_FLAGS[key]
            for key in ("purchase_usd_per_gpu", "amortize_months")
            if pool_values.get(key) is None
        ]
        if missing:
            raise _UsageError(f"--billing purchase needs {' and '.join(missing)}")
    gpus = pool_values.setdefault("gpus", 1)
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1:
        raise _UsageError(f"{pool_label}.gpus: expected a whole number >= 1, got {gpus!r}")
    try:
        pool = GpuPoolCost(**pool_values)
    except (TypeError, ValueError) as exc:
        raise _UsageError(f"GPU pool ({pool_label}): {exc}") from None

    # engineering
    eng_cfg = _section(config, "engineering")
    eng_values = {
        "setup_hours": SEED_SETUP_HOURS,
        "hourly_rate_usd": SEED_HOURLY_RATE_USD,
        "amortize_months": SEED_AMORTIZE_MONTHS,
        "maintenance_hours_per_month": SEED_MAINTENANCE_HOURS_PER_MONTH,
    }
    for key in eng_values:
        if eng_cfg.get(key) is not None:
            eng_values[key] = _number(f"config engineering.{key}", eng_cfg[key])
    for flag_name, key in (
        ("setup_hours", "setup_hours"),
        ("hourly_rate_usd", "hourly_rate_usd"),
        ("setup_amortize_months", "amortize_months"),
        ("maintenance_hours_per_month", "maintenance_hours_per_month"),
    ):
        if _flag(args, flag_name) is not None:
            eng_values[key] = _flag(args, flag_name)
    if args.config and not eng_cfg:
        notes.append("the config has no engineering: section; the seed's figures are used")
    try:
        engineering = EngineeringCost(**eng_values)
        fine_tuning = (
            FineTuningCost(
                args.fine_tune_tokens, args.fine_tune_usd_per_1k, args.fine_tune_amortize_months
            )
            if args.fine_tune_tokens
            else None
        )
    except ValueError as exc:
        raise _UsageError(str(exc)) from None

    # month, headroom
    costing_cfg = _section(config, "costing")
    if args.hours_per_month is not None:
        hours, hours_source = args.hours_per_month, "--hours-per-month"
    elif costing_cfg.get("hours_per_month") is not None:
        hours = _number("config costing.hours_per_month", costing_cfg["hours_per_month"])
        hours_source = "config costing.hours_per_month"
    else:
        hours, hours_source = HOURS_PER_MONTH_DEFAULT, "default"
    if hours <= 0:
        raise _UsageError("hours per month must be > 0")
    target = 1.0 if args.target_utilization is None else args.target_utilization
    if target <= 0:
        raise _UsageError("--target-utilization must be > 0")

    is_seed = not args.config and all(_flag(args, n) is None for n in _ASSUMPTION_FLAGS)
    return _Assumptions(
        requests=requests,
        profile=profile,
        api=api,
        api_label=api_label,
        pool=pool,
        pool_label=pool_label,
        engineering=engineering,
        fine_tuning=fine_tuning,
        hours_per_month=hours,
        hours_source=hours_source,
        target_utilization=target,
        configured_gpus=configured_gpus,
        is_seed=is_seed,
        notes=notes,
    )


# ------------------------------------------------------------------ computing


@dataclass
class _Row:
    """Every scenario at one volume."""

    requests: int
    api_only: ScenarioResult
    busy_only: ScenarioResult | None
    selfhosted: ScenarioResult
    hybrid_current: ScenarioResult | None
    hybrid_optimal: ScenarioResult | None

    @property
    def winner(self) -> tuple[str, ScenarioResult]:
        """Cheapest real option; a tie goes to the simpler one (API, then self-hosted)."""
        options: list[tuple[str, ScenarioResult]] = [
            ("API-only", self.api_only),
            ("self-hosted", self.selfhosted),
        ]
        if self.hybrid_optimal is not None:
            options.append(("hybrid", self.hybrid_optimal))
        name, best = min(options, key=lambda o: o[1].monthly_usd)
        if name == "hybrid":
            name = f"hybrid ({best.gpus} GPU{'s' if best.gpus != 1 else ''} + API)"
        return name, best

    def scenarios(self) -> dict[str, ScenarioResult]:
        out = {"api_only": self.api_only}
        if self.busy_only is not None:
            out["selfhosted_busy_only"] = self.busy_only
        out["selfhosted_only"] = self.selfhosted
        if self.hybrid_current is not None:
            out["hybrid_current"] = self.hybrid_current
        if self.hybrid_optimal is not None:
            out["hybrid_optimal"] = self.hybrid_optimal
        return out


def _row(a: _Assumptions, requests: int) -> _Row:
    from costing.tco import (
        api_only,
        hybrid,
        hybrid_optimal,
        selfhosted_busy_only,
        selfhosted_only,
    )
    from costing.units import SEED_HOURS_PER_MONTH

    profile = a.profile.with_requests(requests)
    common = (a.engineering, a.hours_per_month, a.target_utilization, a.fine_tuning)
    dedicated = a.pool.dedicated
    busy_hours = SEED_HOURS_PER_MONTH if a.is_seed else a.hours_per_month
    return _Row(
        requests=requests,
        api_only=api_only(profile, a.api, a.hours_per_month),
        busy_only=selfhosted_busy_only(
            profile, a.pool, a.engineering, busy_hours, a.target_utilization, a.fine_tuning
        )
        if dedicated
        else None,
        selfhosted=selfhosted_only(profile, a.pool, *common),
        hybrid_current=hybrid(profile, a.configured_gpus, a.pool, a.api, *common)
        if dedicated and a.configured_gpus
        else None,
        hybrid_optimal=hybrid_optimal(profile, a.pool, a.api, *common) if dedicated else None,
    )


def _breakeven(a: _Assumptions) -> BreakevenResult:
    from costing.breakeven import breakeven

    return breakeven(
        a.profile,
        a.pool,
        a.api,
        a.engineering,
        a.hours_per_month,
        a.target_utilization,
        a.fine_tuning,
    )


def _seed_check(a: _Assumptions) -> SeedComparison | None:
    if not a.is_seed:
        return None
    from costing.seed import seed_comparison

    return seed_comparison(a.requests, a.hours_per_month)


# ------------------------------------------------------------------ rendering


def _usd(x: float) -> str:
    from costing.units import format_usd

    return format_usd(x)


def _delta(x: float) -> str:
    text = _usd(x)
    return text if text.startswith("-") or text == "$0.00" else "+" + text


def _pct(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.1%}" if x >= 0.001 else f"{x:.3%}"


_LABELS = {
    "api_only": "API-only",
    "selfhosted_busy_only": "Busy GPU-seconds only (seed formula)",
    "selfhosted_only": "Self-hosted-only",
    "hybrid_current": "Hybrid, configured",
    "hybrid_optimal": "Hybrid, optimal",
}


def _scenario_label(key: str, r: ScenarioResult, a: _Assumptions) -> str:
    if key == "selfhosted_busy_only":
        return _LABELS[key]
    if key == "selfhosted_only":
        kind = {
            "rental": "rented, always on",
            "purchase": "bought, always on",
            "serverless": "serverless",
        }[a.pool.billing]
        return f"Self-hosted-only ({kind})"
    if key in ("hybrid_current", "hybrid_optimal"):
        return f"{_LABELS[key]} (k={r.gpus}, rest to API)"
    return f"API-only ({a.api_label})"


def _render_assumptions(console: Console, a: _Assumptions, sweep: bool = False) -> None:
    from rich.table import Table

    pr = a.profile
    pool = a.pool
    table = Table(title="Assumptions", show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    tokens = (
        f"{pr.prompt_tokens_per_request:g} prompt + {pr.completion_tokens_per_request:g} "
        f"completion tokens/request"
    )
    if pr.cached_tokens_per_request:
        tokens += f" ({pr.cached_tokens_per_request:g} prompt tokens cached)"
    shape = (
        "flat load"
        if pr.load_curve is None
        else f"{len(pr.load_curve)}-interval load curve, peak/average {pr.peak_to_average:.2f}"
    )
    volume = "volumes in the table" if sweep else f"{a.requests:,} requests/month"
    table.add_row("Traffic", f"{volume}; {tokens}; {shape}")
    p = a.api.price
    table.add_row(
        "API",
        f"{a.api_label}: input ${p.input * 1e6:g}/1M, output ${p.output * 1e6:g}/1M"
        + (f", cached ${p.cached_input * 1e6:g}/1M" if p.cached_input is not None else ""),
    )
    if pool.billing == "rental":
        price = f"rented at ${pool.usd_per_gpu_hour:,.2f}/GPU-hour"
    elif pool.billing == "purchase":
        price = (
            f"bought at ${pool.purchase_usd_per_gpu:,.0f}/GPU over {pool.amortize_months:g} "
            f"months, {pool.power_kw_per_gpu:g} kW × ${pool.usd_per_kwh:g}/kWh, "
            f"hosting ${pool.hosting_usd_per_month:,.2f}/month"
        )
    else:
        price = (
            f"serverless at ${pool.serverless_usd_per_gpu_second:.6g}/GPU-second, "
            f"{pool.cold_starts_per_month:g} cold starts × {pool.cold_start_seconds:g} s/month"
        )
    capacity = []
    if pool.capacity_requests_per_s is not None:
        capacity.append(f"{pool.capacity_requests_per_s:g} req/s")
    if pool.capacity_tokens_per_s is not None:
        capacity.append(f"{pool.capacity_tokens_per_s:g} tokens/s")
    table.add_row(
        "GPU",
        f"{a.pool_label}: {price}; capacity {' and '.join(capacity)} per GPU; sized for "
        f"{a.target_utilization:.0%} busy at peak",
    )
    e = a.engineering
    table.add_row(
        "Engineering",
        f"{e.setup_hours:g} h setup × ${e.hourly_rate_usd:g} / {e.amortize_months:g} months + "
        f"{e.maintenance_hours_per_month:g} h/month × ${e.hourly_rate_usd:g} = "
        f"{_usd(e.monthly_cost())}/month",
    )
    if a.fine_tuning is not None:
        table.add_row("Fine-tuning", f"{_usd(a.fine_tuning.monthly_cost())}/month amortised")
    table.add_row("Month", f"{a.hours_per_month:g} hours ({a.hours_source})")
    for note in a.notes:
        table.add_row("Note", note)
    console.print(table)
    console.print()


def _table(
    title: str, headers: Sequence[tuple[str, str]], rows: Sequence[Sequence[str]], **kw: Any
) -> Any:
    """A rich Table; columns of kind "num" (right-aligned) and "word" are never wrapped or
    truncated, "text" columns fold."""
    from rich.table import Table

    table = Table(title=title, **kw)
    for i, (header, kind) in enumerate(headers):
        if kind == "text":
            table.add_column(header, overflow="fold")
        else:
            width = max([len(r[i]) for r in rows] or [1])
            table.add_column(
                header,
                justify="right" if kind == "num" else "left",
                no_wrap=True,
                min_width=width,
            )
    for r in rows:
        table.add_row(*r)
    return table


def _render_single(console: Console, a: _Assumptions, row: _Row) -> None:
    scenarios = row.scenarios()
    api_usd = row.api_only.monthly_usd
    rows = [
        (
            _scenario_label(key, r, a),
            f"{r.hours_per_month:g} h",
            _usd(r.monthly_usd),
            "–" if key == "api_only" else _delta(r.monthly_usd - api_usd),
            str(r.gpus) if r.gpus else "–",
            _pct(r.utilization),
            f"{r.api_share:.0%}",
        )
        for key, r in scenarios.items()
    ]
    headers = [
        ("Scenario", "text"),
        ("Month", "word"),
        ("USD/month", "num"),
        ("vs API", "num"),
        ("GPUs", "num"),
        ("GPU util.", "num"),
        ("To API", "num"),
    ]
    console.print(_table(f"Monthly cost at {row.requests:,} requests/month", headers, rows))

    parts: list[str] = []
    for r in scenarios.values():
        parts.extend(k for k in r.breakdown if k not in parts)
    short = {
        "api_only": "API",
        "selfhosted_busy_only": "Busy-only",
        "selfhosted_only": "Self-hosted",
        "hybrid_current": "Hybrid (cfg)",
        "hybrid_optimal": "Hybrid (opt)",
    }
    bd_rows = [
        (
            part,
            *(_usd(r.breakdown[part]) if part in r.breakdown else "" for r in scenarios.values()),
        )
        for part in parts
    ]
    bd_rows.append(("total", *(_usd(r.monthly_usd) for r in scenarios.values())))
    bd_headers = [("Part", "text"), *((short[key], "num") for key in scenarios)]
    console.print(_table("Where the money goes (USD/month)", bd_headers, bd_rows))
    name, best = row.winner
    console.print(f"Cheapest: [bold]{name}[/bold] at {_usd(best.monthly_usd)}/month.")
    if row.busy_only is not None:
        console.print(
            "The busy-only line pays for GPU-seconds in use and nothing for idle hours; no "
            "always-on GPU is billed that way, so it is shown for reference, not as an option."
        )
    console.print()


def _render_seed(console: Console, seed: SeedComparison) -> None:
    from rich.panel import Panel

    from costing.seed import (
        SEED_GPU_USD_PER_HOUR,
        SEED_PRINTED_SELFHOSTED_USD,
    )

    api, formula, always = seed.api, seed.seed_formula, seed.always_on
    eng = formula.breakdown["engineering_setup"] + formula.breakdown["engineering_maintenance"]
    gpu = formula.breakdown["gpu_busy_only"]
    requests = int(api.inputs["requests_per_month"])
    gap = SEED_PRINTED_SELFHOSTED_USD - formula.monthly_usd
    lines = [
        f"API: {requests:,} requests × 1,000 tokens × $0.002/1K = [bold]{_usd(api.monthly_usd)}"
        "[/bold]/month.",
        f"Self-hosted by the seed's formula (busy GPU-seconds only, {formula.hours_per_month:g} h "
        f"month): {requests:,} / 50 req/s × ${SEED_GPU_USD_PER_HOUR:.2f} / 3600 = {_usd(gpu)} "
        f"+ engineering {_usd(eng)} = [bold]{_usd(formula.monthly_usd)}[/bold]/month; "
        f"savings {_usd(seed.seed_savings_usd)}.",
        f"The article prints {_usd(SEED_PRINTED_SELFHOSTED_USD)} for self-hosting: that does "
        f"not follow from its own code (the gap, {_usd(gap)}, equals one month of amortised "
        "setup, so it may be counted twice).",
        "Its script ignores idle GPU time. The same traffic on an always-on rented GPU: "
        f"{always.gpus} GPU × ${SEED_GPU_USD_PER_HOUR:.2f} × {always.hours_per_month:g} h = "
        f"{_usd(always.breakdown['gpu_rental'])} + engineering {_usd(eng)} = "
        f"[bold]{_usd(always.monthly_usd)}[/bold]/month (GPU busy {_pct(always.utilization)} "
        f"of the time); savings {_usd(seed.always_on_savings_usd)}.",
    ]
    console.print(Panel("\n".join(lines), title="The seed article, checked", expand=False))
    console.print()


def _render_sweep(console: Console, a: _Assumptions, rows: Sequence[_Row]) -> None:
    from rich import box

    title = (
        f"Monthly cost by volume ({a.hours_per_month:g} h month"
        + (", busy-only at the seed's 720 h" if a.is_seed else "")
        + ")"
    )
    dedicated = a.pool.dedicated
    headers = [("Requests/mo", "num"), ("API-only", "num")]
    if dedicated:
        headers.append(("Busy-only¹", "num"))
    headers += [("Self-hosted²", "num"), ("GPUs", "num"), ("Util.", "num")]
    if dedicated:
        headers += [("Hybrid³", "num"), ("k", "num")]
    headers.append(("Winner", "word"))
    cells: list[list[str]] = []
    for row in rows:
        line = [f"{row.requests:,}", _usd(row.api_only.monthly_usd)]
        if row.busy_only is not None:
            line.append(_usd(row.busy_only.monthly_usd))
        line += [
            _usd(row.selfhosted.monthly_usd),
            str(row.selfhosted.gpus),
            _pct(row.selfhosted.utilization),
        ]
        if row.hybrid_optimal is not None:
            line += [_usd(row.hybrid_optimal.monthly_usd), str(row.hybrid_optimal.gpus)]
        line.append(row.winner[0].split(" (")[0])
        cells.append(line)
    console.print(_table(title, headers, cells, box=box.SIMPLE_HEAVY, pad_edge=False))
    kind = {"rental": "rented", "purchase": "bought", "serverless": "serverless"}[a.pool.billing]
    if dedicated:
        console.print(
            "¹ the seed's formula: busy GPU-seconds only, idle hours free (not an option you "
            "can buy; never the winner)."
        )
    console.print(
        f"² self-hosted-only, {kind} GPUs sized for the peak"
        + (", paid busy or idle" if dedicated else ", paid per busy second")
        + "; every self-hosted figure includes engineering "
        + f"({_usd(a.engineering.monthly_cost())}/month)."
    )
    if dedicated:
        console.print(
            "³ the cheapest hybrid: k GPUs carry the base load, the excess over their capacity "
            "in each interval of the load curve goes to the API (k = 0 is API-only)."
        )
    console.print()


def _breakeven_headline(result: BreakevenResult) -> str:
    if result.requests_per_month is None:
        head = "No breakeven: self-hosted-only never costs less than API-only."
    else:
        head = (
            f"Breakeven, self-hosted-only vs API-only: [bold]{result.requests_per_month:,} "
            "requests/month[/bold] "
            f"(≈ {result.requests_per_month / (result.hours_per_month * 3600):,.2f} req/s on "
            f"average, {result.hours_per_month:g} h month)"
            + (
                f"; costs cross back {result.cross_backs}×, self-hosted stays cheaper from "
                f"{result.settled_requests_per_month:,}"
                if result.crosses_back
                else "; costs do not cross back"
            )
            + "."
        )
    return head


def _render_breakeven(console: Console, result: BreakevenResult) -> None:
    from rich.panel import Panel

    head = _breakeven_headline(result)
    body = "\n".join([head, "", *(f"• {line}" for line in result.reasoning)])
    console.print(Panel(body, title="Breakeven: self-hosted-only vs API-only", expand=False))
    console.print()


# ------------------------------------------------------------------ entry point


def run(args: argparse.Namespace) -> int:
    """Compute and print; exit 2 on a bad flag or config (message on stderr)."""
    try:
        a = _resolve(args)
    except _UsageError as exc:
        print(f"hybridgate tco: error: {exc}", file=sys.stderr)
        return 2
    from costing.seed import SEED_VOLUMES

    main = _row(a, a.requests)
    sweep = [_row(a, v) for v in (args.volumes or SEED_VOLUMES)] if args.sweep else []
    be = _breakeven(a) if args.breakeven or args.sweep else None
    seed = _seed_check(a)
    if args.seed_defaults and seed is None:
        a.notes.append("flags changed the seed's assumptions, so its figures are not checked")

    if args.json:
        out: dict[str, Any] = {
            "hours_per_month": a.hours_per_month,
            "assumptions": a.describe(),
            "scenarios": {k: r.to_dict() for k, r in main.scenarios().items()},
            "cheapest": main.winner[0],
            "seed_check": None if seed is None else seed.to_dict(),
        }
        if args.sweep:
            out["sweep"] = [
                {
                    "requests_per_month": row.requests,
                    "winner": row.winner[0],
                    **{k: r.to_dict() for k, r in row.scenarios().items()},
                }
                for row in sweep
            ]
        if be is not None:
            out["breakeven"] = be.to_dict()
        json.dump(out, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
        return 0

    from rich.console import Console

    console = Console()
    if console.width < _MIN_WIDTH:  # a pipe or a narrow terminal: never squeeze out numbers
        console = Console(width=_MIN_WIDTH)
    _render_assumptions(console, a, sweep=bool(args.sweep))
    if args.sweep:
        _render_sweep(console, a, sweep)
        if be is not None and not args.breakeven:
            console.print(_breakeven_headline(be) + " (--breakeven shows why)")
            console.print()
    else:
        _render_single(console, a, main)
    if seed is not None:
        _render_seed(console, seed)
    if be is not None and args.breakeven:
        _render_breakeven(console, be)
    return 0
