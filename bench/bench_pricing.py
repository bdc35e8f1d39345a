"""Micro-benchmark: the cost of pricing one request on the proxy's hot path.

Pricing a request is `PriceTable.get(model)` (a dict lookup) plus `api_cost(...)` (a few
multiplications). This measures it against same-run baselines (an empty loop and a bare
dict lookup) so the figure means something on any machine:

    python bench/bench_pricing.py [--iterations 1000000] [--reps 7] [--litellm]

Reports the median ns per priced request over the reps, net of the empty loop, and the
ratio to a bare dict lookup. `--litellm` adds litellm's own `cost_per_token` (imported
with LITELLM_LOCAL_MODEL_COST_MAP=True, no network) for comparison.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from costing import PriceTable, api_cost

MODEL = "gpt-4o-mini"
PREFIXED = "openai/gpt-4o-mini"  # found by the fallback: exact miss, then the bare name
PROMPT, COMPLETION, CACHED = 1200, 350, 400


def empty_loop(n: int) -> int:
    """Baseline: the loop alone."""
    t0 = time.perf_counter_ns()
    for _ in range(n):
        pass
    return time.perf_counter_ns() - t0


def make_dict_lookup(table: dict[str, object]) -> Callable[[int], int]:
    def dict_lookup(n: int) -> int:
        """Baseline: one bare dict.get per iteration."""
        get = table.get
        t0 = time.perf_counter_ns()
        for _ in range(n):
            get(MODEL)
        return time.perf_counter_ns() - t0

    return dict_lookup


def make_priced(prices: PriceTable, model: str, cached: int) -> Callable[[int], int]:
    def priced(n: int) -> int:
        """What the proxy does per request: table lookup + api_cost."""
        get = prices.get
        t0 = time.perf_counter_ns()
        for _ in range(n):
            api_cost(get(model), PROMPT, COMPLETION, cached)
        return time.perf_counter_ns() - t0

    return priced


def make_litellm() -> Callable[[int], int]:
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    import litellm

    def litellm_cost(n: int) -> int:
        """litellm.cost_per_token for the same request (what we avoid on the hot path)."""
        t0 = time.perf_counter_ns()
        for _ in range(n):
            litellm.cost_per_token(model=MODEL, prompt_tokens=PROMPT, completion_tokens=COMPLETION)
        return time.perf_counter_ns() - t0

    return litellm_cost


def median_ns_per_iter(fn: Callable[[int], int], n: int, reps: int) -> tuple[float, float]:
    """Median and spread (max − min) of ns per iteration over `reps` runs of `n` iterations."""
    fn(min(n, 10_000))  # warm up
    samples = [fn(n) / n for _ in range(reps)]
    return statistics.median(samples), max(samples) - min(samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--litellm", action="store_true", help="also time litellm.cost_per_token")
    args = parser.parse_args(argv)

    prices = PriceTable.load()
    price_dict: dict[str, object] = {MODEL: prices.get(MODEL)}
    cases: list[tuple[str, Callable[[int], int], int]] = [
        ("empty loop (baseline)", empty_loop, args.iterations),
        ("bare dict.get (baseline)", make_dict_lookup(price_dict), args.iterations),
        ("get + api_cost", make_priced(prices, MODEL, 0), args.iterations),
        ("get + api_cost, cached tokens", make_priced(prices, MODEL, CACHED), args.iterations),
        ("get(provider/…) + api_cost", make_priced(prices, PREFIXED, 0), args.iterations),
    ]
    if args.litellm:
        cases.append(("litellm.cost_per_token", make_litellm(), max(1, args.iterations // 100)))

    print(
        f"Python {sys.version.split()[0]}, {args.reps} reps, median ns per iteration "
        f"(net = minus the empty loop)"
    )
    results: dict[str, float] = {}
    for name, fn, n in cases:
        med, spread = median_ns_per_iter(fn, n, args.reps)
        results[name] = med
        print(f"  {name:<32} {med:8.1f} ns  (spread {spread:5.1f} ns, n={n:,})")
    loop = results["empty loop (baseline)"]
    bare = results["bare dict.get (baseline)"] - loop
    priced = results["get + api_cost"] - loop
    print(
        f"\nPricing one request: {priced:.1f} ns net "
        f"= {priced / bare:.1f}× a bare dict lookup ({bare:.1f} ns net)"
    )
    if args.litellm:
        lite = results["litellm.cost_per_token"] - loop
        print(f"litellm.cost_per_token: {lite / 1000:.1f} µs net = {lite / priced:,.0f}× ours")
    return 0


if __name__ == "__main__":
    sys.exit(main())
