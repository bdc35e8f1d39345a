"""The flags of `hybridgate tco`: their types (volumes like `5M`, load curves, fractions)
and the argument groups. Nothing here computes or prints."""

from __future__ import annotations

import argparse
import math

# Flags that change an assumption; if none is given (and no --config), the run is the seed's.
ASSUMPTION_FLAGS = (
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


def volume(text: str) -> int:
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


def volumes(text: str) -> list[int]:
    return [volume(part) for part in text.split(",") if part.strip()]


def curve(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"load curve must be comma-separated numbers: {text!r}"
        ) from None
    if not values or any(not (math.isfinite(v) and v >= 0) for v in values) or sum(values) <= 0:
        raise argparse.ArgumentTypeError("load curve needs numbers >= 0 with a positive sum")
    return values


def non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return value


def fraction(text: str) -> float:
    value = non_negative(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1: {text!r}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Every flag of `tco`, grouped as `--help` shows them."""
    mode = p.add_argument_group("output")
    mode.add_argument("--sweep", action="store_true", help="cost table over request volumes")
    mode.add_argument(
        "--volumes",
        type=volumes,
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
    t.add_argument("--requests", type=volume, metavar="N", help="requests/month (default 5M)")
    t.add_argument(
        "--tokens-per-request",
        type=non_negative,
        metavar="N",
        help="prompt + completion tokens (default 1000)",
    )
    t.add_argument(
        "--completion-share",
        type=fraction,
        metavar="F",
        help="share of --tokens-per-request that is completion (default 0.5)",
    )
    t.add_argument("--prompt-tokens", type=non_negative, metavar="N")
    t.add_argument("--completion-tokens", type=non_negative, metavar="N")
    t.add_argument(
        "--cached-tokens",
        type=non_negative,
        metavar="N",
        help="prompt tokens per request served from the API's prompt cache",
    )
    t.add_argument(
        "--load-curve",
        type=curve,
        metavar="W1,W2,...",
        help="relative demand in N equal intervals (e.g. 24 hourly values); default flat",
    )

    a = p.add_argument_group("API")
    api_price = a.add_mutually_exclusive_group()
    api_price.add_argument("--api-model", metavar="NAME", help="price from litellm's table")
    api_price.add_argument(
        "--api-usd-per-1k",
        type=non_negative,
        metavar="USD",
        help="one blended price per 1K tokens (default 0.002, the seed's)",
    )
    a.add_argument("--batch", action="store_true", default=None, help="price the batch tier")
    a.add_argument(
        "--batch-discount",
        type=fraction,
        metavar="F",
        help="batch discount where the table has none (0.5 = the seed's 50%%)",
    )

    g = p.add_argument_group("GPU pool")
    g.add_argument("--billing", choices=("rental", "purchase", "serverless"))
    g.add_argument("--gpu-usd-per-hour", type=non_negative, metavar="USD", help="default 2.50")
    g.add_argument("--purchase-usd-per-gpu", type=non_negative, metavar="USD")
    g.add_argument("--gpu-amortize-months", type=non_negative, metavar="N")
    g.add_argument("--power-kw-per-gpu", type=non_negative, metavar="KW")
    g.add_argument("--usd-per-kwh", type=non_negative, metavar="USD")
    g.add_argument("--hosting-usd-per-month", type=non_negative, metavar="USD")
    g.add_argument(
        "--serverless-usd-per-gpu-second",
        type=non_negative,
        metavar="USD",
        help="default: --gpu-usd-per-hour / 3600",
    )
    g.add_argument("--cold-start-seconds", type=non_negative, metavar="S")
    g.add_argument("--cold-starts-per-month", type=non_negative, metavar="N")
    g.add_argument(
        "--gpu-throughput-rps", type=non_negative, metavar="RPS", help="per GPU (default 50)"
    )
    g.add_argument(
        "--gpu-throughput-tps",
        type=non_negative,
        metavar="TPS",
        help="per GPU, prompt + completion tokens/s",
    )
    g.add_argument(
        "--target-utilization",
        type=fraction,
        metavar="F",
        help="size GPUs for this busy share at peak (default 1.0, as the seed)",
    )

    e = p.add_argument_group("engineering and fine-tuning")
    e.add_argument("--setup-hours", type=non_negative, metavar="H", help="default 40")
    e.add_argument("--hourly-rate-usd", type=non_negative, metavar="USD", help="default 100")
    e.add_argument("--setup-amortize-months", type=non_negative, metavar="N", help="default 12")
    e.add_argument(
        "--maintenance-hours-per-month", type=non_negative, metavar="H", help="default 5"
    )
    e.add_argument("--fine-tune-tokens", type=non_negative, metavar="N")
    e.add_argument("--fine-tune-usd-per-1k", type=non_negative, metavar="USD", default=0.0)
    e.add_argument("--fine-tune-amortize-months", type=non_negative, metavar="N", default=12.0)

    p.add_argument(
        "--hours-per-month",
        type=non_negative,
        metavar="H",
        help="month length (default 730; the seed uses 720)",
    )
