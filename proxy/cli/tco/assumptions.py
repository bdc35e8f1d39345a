"""The assumptions of one `tco` run: flags > --config (hybridgate.yaml) > the seed's.

The only module of the calculator that reads a file; `costing/` gets typed values.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from proxy.cli.tco.flags import ASSUMPTION_FLAGS

if TYPE_CHECKING:
    from costing.api import ApiCost
    from costing.gpu import EngineeringCost, FineTuningCost, GpuPoolCost
    from costing.tco import TrafficProfile

_POOL_FLAGS = {
    "usd_per_gpu_hour": "--gpu-usd-per-hour",
    "purchase_usd_per_gpu": "--purchase-usd-per-gpu",
    "amortize_months": "--gpu-amortize-months",
    "serverless_usd_per_gpu_second": "--serverless-usd-per-gpu-second",
}

_CONFIG_POOL_AMORTIZE_MONTHS = 36.0  # hybridgate.yaml's default for a bought pool


class UsageError(ValueError):
    """A problem with the flags or the config file, reported without a traceback."""


@dataclass
class Assumptions:
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
        raise UsageError(f"cannot read config {path}: {exc.strerror or exc}") from None
    try:
        from proxy.config import expand_env
    except ImportError:  # no env expansion available: read the file as written
        pass
    else:
        text = expand_env(text, _LenientEnv())
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping at the top level")
    return data


def _section(config: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = config.get(key) or {}
    if not isinstance(value, dict):
        raise UsageError(f"config {key}: expected a mapping")
    return value


def _number(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UsageError(f"{where}: expected a number, got {value!r}")
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


def resolve(args: argparse.Namespace) -> Assumptions:
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
        raise UsageError("--seed-defaults and --config exclude each other")
    notes: list[str] = []
    config = _read_config(args.config) if args.config else {}

    # traffic
    requests = SEED_REQUESTS_PER_MONTH if args.requests is None else args.requests
    split = args.prompt_tokens is not None or args.completion_tokens is not None
    if split and (args.tokens_per_request is not None or args.completion_share is not None):
        raise UsageError(
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
        raise UsageError(str(exc)) from None

    # API price
    overrides = _section(config, "prices")
    model = args.api_model
    if model is None and args.api_usd_per_1k is None:
        model = _compare_to_model(config)
    if model is not None:
        try:
            price = PriceTable.load(overrides).get(model)
        except UnknownModelPrice as exc:
            raise UsageError(str(exc)) from None
        except ValueError as exc:
            raise UsageError(f"config {exc}") from None
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
        raise UsageError(str(exc)) from None
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
                raise UsageError(
                    f"config has several gpu_pools ({', '.join(pools)}): choose one with --pool"
                )
            name = next(iter(pools))
        if name not in pools:
            raise UsageError(f"no gpu_pools entry {name!r} (have: {', '.join(pools)})")
        raw_pool = pools[name] or {}
        if not isinstance(raw_pool, dict):
            raise UsageError(f"config gpu_pools.{name}: expected a mapping")
        known = {f.name for f in fields(GpuPoolCost)}
        pool_values = {k: v for k, v in raw_pool.items() if k in known and v is not None}
        for key, value in pool_values.items():
            if key not in ("billing", "gpus"):
                pool_values[key] = _number(f"config gpu_pools.{name}.{key}", value)
        if pool_values.get("billing") == "purchase":
            pool_values.setdefault("amortize_months", _CONFIG_POOL_AMORTIZE_MONTHS)
        pool_label = f"gpu_pools.{name}"
    elif args.pool:
        raise UsageError("--pool needs --config with gpu_pools")
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
            raise UsageError(f"--billing purchase needs {' and '.join(missing)}")
    gpus = pool_values.setdefault("gpus", 1)
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1:
        raise UsageError(f"{pool_label}.gpus: expected a whole number >= 1, got {gpus!r}")
    try:
        pool = GpuPoolCost(**pool_values)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"GPU pool ({pool_label}): {exc}") from None

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
        raise UsageError(str(exc)) from None

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
        raise UsageError("hours per month must be > 0")
    target = 1.0 if args.target_utilization is None else args.target_utilization
    if target <= 0:
        raise UsageError("--target-utilization must be > 0")

    is_seed = not args.config and all(_flag(args, n) is None for n in ASSUMPTION_FLAGS)
    return Assumptions(
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
