"""Soak: steady mixed load with injected upstream faults; memory, fds and books at the end.

The default run is bounded by a request count (HYBRIDGATE_SOAK_REQUESTS, 2000: the same
mix, faults and end-of-run checks as the long run, in a fraction of its time); `pytest -m soak`
runs the 10-minute version.
Traffic goes to loopback only and stops by itself.
"""

from __future__ import annotations

import asyncio
import functools
import math
import os
import time
from pathlib import Path

import aiohttp
import pytest

from costing.prices import PriceTable
from tests.support.exposition import samples_sum
from tests.support.proxy import ProxyHandle, parse_metrics
from tests.support.routing import KEY, hybrid_config, wait_for
from tests.support.stack import run_stack

USD_PER_GPU_HOUR = 2.5
SHORT_REQUESTS = int(os.environ.get("HYBRIDGATE_SOAK_REQUESTS", "2000"))
Sample = tuple[int, int, int]  # requests sent so far, proxy RSS (KiB), proxy fds


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def drive(
    proxy: ProxyHandle,
    concurrency: int,
    samples: list[Sample],
    *,
    requests: int | None = None,
    seconds: float | None = None,
) -> dict[str, int]:
    """Closed-loop mixed load (1 in 3 streams) until `requests` were sent or `seconds`
    passed; samples RSS/fds of the proxy every half second and once at the end."""
    counts = {"sent": 0, "ok": 0, "errors": 0}
    deadline = time.monotonic() + (seconds if seconds is not None else math.inf)
    limit = requests if requests is not None else math.inf
    url = f"{proxy.base_url}/chat/completions"
    headers = {"Authorization": f"Bearer {KEY}"}
    pid = proxy.proc.pid

    def more() -> bool:
        return counts["sent"] < limit and time.monotonic() < deadline

    def sample() -> None:
        samples.append((counts["sent"], proxy.proc.rss_kb(), fds(pid)))

    async def worker(w: int) -> None:
        i = 0
        async with aiohttp.ClientSession() as s:
            while more():
                i += 1
                stream = (i + w) % 3 == 0
                body = {
                    "model": "chat",
                    "max_tokens": 4 + (i % 12),
                    "stream": stream,
                    "messages": [{"role": "user", "content": "soak " * (1 + i % 40)}],
                }
                counts["sent"] += 1
                async with s.post(url, json=body, headers=headers) as r:
                    data = await r.read()
                    good = r.status == 200 and (
                        not stream or data.rstrip().endswith(b"data: [DONE]")
                    )
                    counts["ok" if good else "errors"] += 1

    async def sampler() -> None:
        while more():
            sample()
            await asyncio.sleep(0.5)

    await asyncio.gather(sampler(), *(worker(w) for w in range(concurrency)))
    sample()
    return counts


def run_soak(tmp_path: Path, *, requests: int | None = None, seconds: float | None = None) -> None:
    big_log = ["--max-logged-requests", "1000000"]
    with run_stack(
        tmp_path,
        lambda local, api: hybrid_config(
            local,
            api,
            breaker={"failure_threshold": 1000, "cooldown_s": 1},
            gpu_pools={
                "h100": {"gpus": 1, "billing": "rental", "usd_per_gpu_hour": USD_PER_GPU_HOUR}
            },
        ),
        local_args=["--speed", "20", *big_log],
        api_args=big_log,
    ) as stack:
        proxy, vllm, api = stack.proxy, stack.local, stack.api
        # 5% of self-hosted requests fail with 503 and fail over to the API.
        vllm.set_faults(status=503, probability=0.05)
        samples: list[Sample] = []
        t0 = time.monotonic()
        counts = asyncio.run(drive(proxy, 8, samples, requests=requests, seconds=seconds))
        took = time.monotonic() - t0
        vllm.clear_faults()
        # After warm-up: the first quarter of the traffic (at most 15 s of a timed run).
        warm_after = (
            counts["sent"] / 4
            if seconds is None
            else min(15.0, seconds / 4) * (counts["sent"] / took)
        )
        warm = [s for s in samples if s[0] >= warm_after]
        assert len(warm) >= 2, samples
        rss_start, rss_end = warm[0][1], warm[-1][1]
        fd_start, fd_end = warm[0][2], warm[-1][2]
        v, a = vllm.stats(), api.stats()
        injected = v["responses_by_status"].get("503", 0)
        print(
            f"\nsoak {took:.0f}s: {counts['sent']} requests, {counts['errors']} errors, "
            f"{injected} injected 503s (failed over); RSS after warm-up "
            f"{rss_start / 1024:.1f} MB -> {rss_end / 1024:.1f} MB "
            f"({(rss_end - rss_start) / rss_start:+.1%}); fds {fd_start} -> {fd_end}"
        )
        assert counts["errors"] == 0
        assert counts["ok"] == counts["sent"]
        if requests is not None:
            assert counts["sent"] == requests
        assert injected > 0
        assert rss_end < rss_start * 1.10
        assert fd_end <= fd_start + 5

        # Every answer was read whole; its event may reach the books a moment later.
        wait_for(lambda: proxy.metric("hybridgate_requests_total") == counts["sent"], "every event")
        metric = functools.partial(samples_sum, parse_metrics(proxy.metrics_text()))
        assert metric("hybridgate_requests_total") == counts["sent"]
        assert metric("hybridgate_failovers_total", from_backend="local") == injected
        local_ok = [r for r in v["requests"] if r["status"] == 200]
        api_ok = [r for r in a["requests"] if r["status"] == 200]
        assert len(local_ok) + len(api_ok) == counts["sent"]
        for backend, recs in (("local", local_ok), ("api", api_ok)):
            assert metric("hybridgate_tokens_total", backend=backend, kind="prompt") == sum(
                r["prompt_tokens"] for r in recs
            )
            assert metric("hybridgate_tokens_total", backend=backend, kind="completion") == sum(
                r["completion_tokens"] for r in recs
            )
        price = PriceTable.load().get("gpt-4o-mini")
        api_cost = math.fsum(
            r["prompt_tokens"] * price.input + r["completion_tokens"] * price.output for r in api_ok
        )
        assert math.isclose(
            metric("hybridgate_cost_usd_total", backend="api"), api_cost, rel_tol=1e-9
        )
        busy = metric("hybridgate_gpu_busy_seconds_total", pool="h100")
        assert math.isclose(
            metric("hybridgate_cost_usd_total", backend="local"),
            busy * USD_PER_GPU_HOUR / 3600,
            rel_tol=1e-9,
        )


@pytest.mark.timeout(300)
def test_soak_short(tmp_path: Path) -> None:
    run_soak(tmp_path, requests=SHORT_REQUESTS)


@pytest.mark.soak
@pytest.mark.timeout(900)
def test_soak_ten_minutes(tmp_path: Path) -> None:
    run_soak(tmp_path, seconds=600.0)
