"""Soak: steady mixed load with injected upstream faults; memory, fds and books at the end.

The default run is 60 s (HYBRIDGATE_SOAK_S); `pytest -m soak` runs the 10-minute version.
Traffic goes to loopback only and stops by itself.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from costing.prices import PriceTable
from tests.support.proxy import ProxyHandle, parse_metrics, run_proxy
from tests.support.sim import run_simulator

KEY = "sk-soak-key-1234"
USD_PER_GPU_HOUR = 2.5


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def drive(
    proxy: ProxyHandle, seconds: float, concurrency: int, samples: list[tuple[float, int, int]]
) -> dict[str, int]:
    """Closed-loop mixed load: 1 in 3 streams; samples RSS/fds of the proxy every second."""
    counts = {"sent": 0, "ok": 0, "errors": 0}
    stop = time.monotonic() + seconds
    url = f"{proxy.base_url}/chat/completions"
    headers = {"Authorization": f"Bearer {KEY}"}
    pid = proxy.proc.pid

    async def worker(w: int) -> None:
        i = 0
        async with aiohttp.ClientSession() as s:
            while time.monotonic() < stop:
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
        t0 = time.monotonic()
        while time.monotonic() < stop:
            samples.append((time.monotonic() - t0, proxy.proc.rss_kb(), fds(pid)))
            await asyncio.sleep(1.0)

    await asyncio.gather(sampler(), *(worker(w) for w in range(concurrency)))
    return counts


def run_soak(tmp_path: Path, seconds: float) -> None:
    with (
        run_simulator(
            tmp_path, "vllm", args=["--speed", "20", "--max-logged-requests", "1000000"]
        ) as vllm,
        run_simulator(
            tmp_path, "api", name="api", args=["--max-logged-requests", "1000000"]
        ) as api,
    ):
        cfg: dict[str, Any] = {
            "auth": {"keys": [{"key": KEY, "tenant": "soak"}]},
            "tenants": {"soak": {}},
            "breaker": {"failure_threshold": 1000, "cooldown_s": 1},
            "gpu_pools": {
                "h100": {"gpus": 1, "billing": "rental", "usd_per_gpu_hour": USD_PER_GPU_HOUR}
            },
            "backends": {
                "local": {"type": "openai", "base_url": vllm.base_url, "pool": "h100"},
                "api": {"type": "openai", "base_url": api.base_url},
            },
            "models": {
                "chat": {
                    "targets": [
                        {"backend": "local", "model": "sim-model"},
                        {"backend": "api", "model": "gpt-4o-mini"},
                    ]
                }
            },
        }
        with run_proxy(tmp_path, cfg) as proxy:
            # 5% of self-hosted requests fail with 503 or 429 and fail over to the API.
            vllm.set_faults(status=503, probability=0.05)
            samples: list[tuple[float, int, int]] = []
            counts = asyncio.run(drive(proxy, seconds, 8, samples))
            vllm.clear_faults()
            time.sleep(0.5)
            warm = [s for s in samples if s[0] >= min(15.0, seconds / 4)]
            rss_start, rss_end = warm[0][1], warm[-1][1]
            fd_start, fd_end = warm[0][2], warm[-1][2]
            v, a = vllm.stats(), api.stats()
            injected = v["responses_by_status"].get("503", 0)
            print(
                f"\nsoak {seconds:.0f}s: {counts['sent']} requests, {counts['errors']} errors, "
                f"{injected} injected 503s (failed over); RSS after warm-up "
                f"{rss_start / 1024:.1f} MB -> {rss_end / 1024:.1f} MB "
                f"({(rss_end - rss_start) / rss_start:+.1%}); fds {fd_start} -> {fd_end}"
            )
            assert counts["errors"] == 0
            assert counts["ok"] == counts["sent"]
            assert injected > 0
            assert rss_end < rss_start * 1.10
            assert fd_end <= fd_start + 5

            m = parse_metrics(proxy.metrics_text())

            def metric(name: str, **labels: str) -> float:
                return sum(
                    x
                    for n, lab, x in m
                    if n == name and all(lab.get(k) == w for k, w in labels.items())
                )

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
                r["prompt_tokens"] * price.input + r["completion_tokens"] * price.output
                for r in api_ok
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
    run_soak(tmp_path, float(os.environ.get("HYBRIDGATE_SOAK_S", "60")))


@pytest.mark.soak
@pytest.mark.timeout(900)
def test_soak_ten_minutes(tmp_path: Path) -> None:
    run_soak(tmp_path, 600.0)
