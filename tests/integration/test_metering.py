"""Metering against real simulators: GPU-seconds vs the engine's truth, books that balance."""

from __future__ import annotations

import asyncio
import functools
import math
import statistics
from pathlib import Path

import aiohttp
import httpx
import openai
import pytest

from costing.prices import PriceTable
from tests.support.exposition import samples_sum
from tests.support.metering import USD_PER_GPU_HOUR, drive, metering_stack
from tests.support.proxy import parse_metrics, read_log
from tests.support.routing import ADMIN, KEY, wait_for


@pytest.mark.serial  # compares timings with the upstream's own: runs alone
def test_gpu_seconds_match_the_engine_and_books_balance(tmp_path: Path) -> None:
    with metering_stack(tmp_path) as (proxy, vllm, _api, log):
        # 64 requests, 16 at a time; prompt and completion lengths vary, and each completion
        # length is unique so the engine's records can be matched to the proxy's events.
        jobs = [
            {
                "model": "chat",
                "max_tokens": 8 + i,
                "_stream": i % 3 == 0,
                "messages": [{"role": "user", "content": "tok " * (5 + (i * 37) % 300)}],
            }
            for i in range(64)
        ]
        asyncio.run(drive(proxy.base_url, jobs, 16))
        events = read_log(log, 64)
        assert len(events) == 64
        assert all(e["backend"] == "local" and e["outcome"] == "success" for e in events)
        truth = {
            r["completion_tokens"]: r
            for r in vllm.stats()["requests"]
            if r.get("gpu_seconds") is not None
        }
        assert len(truth) == 64
        errors = []
        for e in events:
            t = truth[e["completion_tokens"]]
            assert e["prompt_tokens"] == t["prompt_tokens"]
            errors.append(abs(e["gpu_seconds"] - t["gpu_seconds"]) / t["gpu_seconds"])
        ours = math.fsum(e["gpu_seconds"] for e in events)
        engine = math.fsum(t["gpu_seconds"] for t in truth.values())
        mean_err = statistics.fmean(errors)
        print(
            f"\nGPU-seconds: proxy {ours:.4f} vs engine {engine:.4f} "
            f"({(ours - engine) / engine:+.2%}); mean per-request error {mean_err:.2%}, "
            f"max {max(errors):.2%}"
        )
        assert mean_err < 0.10
        assert abs(ours - engine) / engine < 0.02

        # Books: attributed GPU-seconds add up to busy GPU-seconds, and cost to busy × price.
        m = functools.partial(samples_sum, parse_metrics(proxy.metrics_text()))

        busy = m("hybridgate_gpu_busy_seconds_total", pool="h100")
        assert math.isclose(busy, ours, rel_tol=1e-9)
        cost = m("hybridgate_cost_usd_total", backend="local")
        assert math.isclose(cost, busy * USD_PER_GPU_HOUR / 3600, rel_tol=1e-9)
        assert math.isclose(cost, math.fsum(e["cost_usd"] for e in events), rel_tol=1e-9)
        assert m("hybridgate_tokens_total", backend="local", kind="prompt") == sum(
            t["prompt_tokens"] for t in truth.values()
        )
        assert m("hybridgate_tokens_total", backend="local", kind="completion") == sum(
            t["completion_tokens"] for t in truth.values()
        )
        # Counterfactual: what gpt-4o-mini would have charged for the same tokens.
        price = PriceTable.load().get("gpt-4o-mini")
        expect_cf = math.fsum(
            e["prompt_tokens"] * price.input + e["completion_tokens"] * price.output for e in events
        )
        assert math.isclose(
            m("hybridgate_counterfactual_cost_usd_total", backend="local"), expect_cf, rel_tol=1e-9
        )


def test_every_request_counted_once_whatever_happened(tmp_path: Path) -> None:
    with metering_stack(tmp_path, ["--speed", "10"]) as (proxy, vllm, api, log):
        client = openai.OpenAI(base_url=proxy.base_url, api_key=KEY, max_retries=0)
        msgs = [{"role": "user", "content": "count me exactly once"}]
        for _ in range(5):  # served by the API
            client.chat.completions.create(model="frontier", messages=msgs, max_tokens=6)
        vllm.set_faults(status=503, count=3)  # three fail over from local to the API
        for _ in range(3):
            client.chat.completions.create(model="chat", messages=msgs, max_tokens=4)
        vllm.clear_faults()
        for _ in range(2):  # rejected: wrong key
            r = httpx.post(
                f"{proxy.base_url}/chat/completions",
                timeout=5,
                headers={"Authorization": "Bearer nope"},
                json={"model": "chat", "messages": msgs},
            )
            assert r.status_code == 401
        with httpx.stream(
            "POST",
            f"{proxy.base_url}/chat/completions",
            timeout=10,
            headers=proxy.headers(),
            json={"model": "chat", "messages": msgs, "max_tokens": 400, "stream": True},
        ) as r:
            lines = r.iter_lines()
            for _ in range(8):
                next(lines)
        events = read_log(log, 11)
        assert len(events) == 11
        outcomes = sorted(e["outcome"] for e in events)
        assert outcomes == sorted(["success"] * 8 + ["rejected"] * 2 + ["client_disconnect"])
        assert proxy.metric("hybridgate_requests_total") == 11
        assert (
            proxy.metric(
                "hybridgate_requests_total", alias="chat", backend="api", outcome="success"
            )
            == 3
        )
        assert (
            proxy.metric(
                "hybridgate_failovers_total", alias="chat", from_backend="local", to_backend="api"
            )
            == 3
        )
        assert proxy.metric("hybridgate_requests_total", outcome="rejected") == 2
        # API tokens and cost equal the simulator's usage × litellm's gpt-4o-mini price.
        api_records = [r for r in api.stats()["requests"] if r.get("status", 200) == 200]
        prompt = sum(r["prompt_tokens"] for r in api_records)
        completion = sum(r["completion_tokens"] for r in api_records)
        assert proxy.metric("hybridgate_tokens_total", backend="api", kind="prompt") == prompt
        assert (
            proxy.metric("hybridgate_tokens_total", backend="api", kind="completion") == completion
        )
        price = PriceTable.load().get("gpt-4o-mini")
        assert math.isclose(
            proxy.metric("hybridgate_cost_usd_total", backend="api"),
            prompt * price.input + completion * price.output,
            rel_tol=1e-9,
        )
        # The disconnected stream is metered with what the engine generated before the cut.
        cut = next(e for e in events if e["outcome"] == "client_disconnect")
        cancelled = [r for r in vllm.stats()["requests"] if r.get("cancelled")]
        assert len(cancelled) == 1
        assert 1 <= cut["completion_tokens"] <= cancelled[0]["completion_tokens"] < 400
        assert cancelled[0]["completion_tokens"] - cut["completion_tokens"] <= 2


def test_idle_time_is_visible(tmp_path: Path) -> None:
    with metering_stack(tmp_path, ["--speed", "10"]) as (proxy, _vllm, _api, _log):
        openai.OpenAI(base_url=proxy.base_url, api_key=KEY).chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "x"}], max_tokens=5
        )

        def pool() -> dict[str, float]:
            s = parse_metrics(proxy.metrics_text())
            return {n: v for n, lab, v in s if lab.get("pool") == "h100"}

        prov = "hybridgate_gpu_provisioned_seconds_total"
        before = pool()
        after: dict[str, float] = {}

        def idle_accrued() -> bool:  # poll the clock-driven counter, no fixed sleep
            after.update(pool())
            return after[prov] - before[prov] >= 0.5

        wait_for(idle_accrued, "provisioned GPU-seconds accrue while idle", timeout=15)
        grew = after[prov] - before[prov]
        assert (
            after["hybridgate_gpu_busy_seconds_total"]
            == before["hybridgate_gpu_busy_seconds_total"]
        )
        fixed_grew = (
            after["hybridgate_selfhosted_fixed_cost_usd_total"]
            - before["hybridgate_selfhosted_fixed_cost_usd_total"]
        )
        assert math.isclose(fixed_grew, grew * USD_PER_GPU_HOUR / 3600, rel_tol=0.05)
        assert (
            after["hybridgate_gpu_utilization_ratio"] < before["hybridgate_gpu_utilization_ratio"]
        )


@pytest.mark.timeout(300)
def test_labels_never_come_from_client_input(tmp_path: Path) -> None:
    with metering_stack(tmp_path, ["--speed", "10"]) as (proxy, _vllm, _api, _log):

        def series() -> int:
            return len(parse_metrics(proxy.metrics_text()))

        async def spam(n: int, key: str) -> None:
            # aiohttp as a plain, fast HTTP client: 10,000 requests in a few seconds.
            async with aiohttp.ClientSession() as client:
                sem = asyncio.Semaphore(32)

                async def one(i: int) -> int:
                    async with (
                        sem,
                        client.post(
                            f"{proxy.base_url}/chat/completions",
                            headers={"Authorization": f"Bearer {key}"},
                            json={
                                "model": f"bogus-model-{i}",
                                "messages": [{"role": "user", "content": "x"}],
                            },
                        ) as r,
                    ):
                        await r.read()
                        return r.status

                codes = await asyncio.gather(*(one(i) for i in range(n)))
                assert set(codes) == {404 if key == KEY else 401}

        asyncio.run(spam(10, KEY))
        asyncio.run(spam(10, "sk-wrong-secret-key-xyz"))
        baseline = series()
        asyncio.run(spam(10_000, KEY))
        asyncio.run(spam(200, "sk-wrong-secret-key-xyz"))
        assert series() == baseline
        text = proxy.metrics_text()
        assert "bogus-model" not in text
        for secret in (KEY, ADMIN, "sk-wrong-secret-key-xyz"):
            assert secret not in text
            assert secret not in proxy.proc.log_text()
        assert proxy.metric("hybridgate_requests_total", alias="other") == 10_220
