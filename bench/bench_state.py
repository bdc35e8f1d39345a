"""Latency the state store adds: memory:// against redis://, in one run.

Starts the simulator in API mode with zero latency (the upstream), a throwaway
redis-server, and two `hybridgate serve` processes that differ only in `state.url`
(memory:// and redis://). The key has an rpm limit and its tenant a budget, so every
request goes through the budget and rate checks and every event through the state sink.
Requests are sent one at a time, in interleaved rounds (direct, memory, redis, then the
reverse order, ...), so drift on a shared machine hits all three alike. Prints, per
target, the median latency, the median added over the direct call, and the ratio
redis/memory of the added latency.

    python bench/bench_state.py [--requests 1500] [--rounds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.proxy import metric_value, run_proxy  # noqa: E402
from tests.support.redis import run_redis  # noqa: E402
from tests.support.sim import run_simulator  # noqa: E402

KEY = "sk-bench-state-key"
BODY = {"model": "bench", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 5}


def config(state_url: str, upstream: str) -> dict:
    return {
        "state": {"url": state_url},
        "auth": {"keys": [{"key": KEY, "tenant": "team", "name": "bench", "rpm": 10**9}]},
        "tenants": {"team": {"monthly_api_budget_usd": 10**9}},
        "backends": {"api": {"type": "openai", "base_url": upstream}},
        "models": {"bench": {"targets": [{"backend": "api", "model": "gpt-4o-mini"}]}},
        "health_checks": {"enabled": False},
    }


async def one_round(session: aiohttp.ClientSession, url: str, n: int, out: list[float]) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    for _ in range(n):
        t0 = time.perf_counter()
        async with session.post(url, json=BODY, headers=headers) as r:
            await r.read()
            if r.status != 200:
                raise RuntimeError(f"{url}: HTTP {r.status}")
        out.append(time.perf_counter() - t0)


async def measure(urls: dict[str, str], requests: int, rounds: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in urls}
    per_round = max(1, requests // rounds)
    conn = aiohttp.TCPConnector(limit=8)
    async with aiohttp.ClientSession(connector=conn) as session:
        for url in urls.values():  # warm up: connections, caches, first sync
            await one_round(session, url, 100, [])
        order = list(urls.items())
        for _ in range(rounds):
            for name, url in order:
                await one_round(session, url, per_round, samples[name])
            order.reverse()  # no target always goes first
    return samples


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=1500, help="per target")
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d, contextlib.ExitStack() as stack:
        tmp = Path(d)
        sim = stack.enter_context(
            run_simulator(tmp, "api", args=["--ttft-ms", "0", "--itl-ms", "0"], name="up")
        )
        redis = stack.enter_context(run_redis(tmp))
        mem = stack.enter_context(run_proxy(tmp, config("memory://", sim.base_url), name="mem"))
        red = stack.enter_context(run_proxy(tmp, config(redis.url, sim.base_url), name="redis"))
        urls = {
            "direct": f"{sim.base_url}/chat/completions",
            "memory://": f"{mem.base_url}/chat/completions",
            "redis://": f"{red.base_url}/chat/completions",
        }
        samples = asyncio.run(measure(urls, args.requests, args.rounds))
        med = {name: statistics.median(v) for name, v in samples.items()}
        print(
            f"{'target':<10} {'n':>6} {'median ms':>10} {'added ms':>9} {'proxy overhead ms':>18}"
        )
        for name, m in med.items():
            added = (m - med["direct"]) * 1000
            proxy = {"memory://": mem, "redis://": red}.get(name)
            overhead = ""
            if proxy is not None:
                text = proxy.metrics_text()
                s = metric_value(text, "hybridgate_overhead_seconds_sum")
                c = metric_value(text, "hybridgate_overhead_seconds_count")
                overhead = f"{s / c * 1000:.3f} (mean)" if c else "-"
            print(
                f"{name:<10} {len(samples[name]):>6} {m * 1000:>10.3f} "
                f"{added if proxy else 0:>9.3f} {overhead:>18}"
            )
        added_mem = med["memory://"] - med["direct"]
        added_red = med["redis://"] - med["direct"]
        print(f"added latency ratio redis/memory: {added_red / added_mem:.3f}")
        health = red.metrics_text()
        failures = metric_value(health, "hybridgate_state_flush_failures_total")
        print(f"redis flush failures during the run: {failures:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
