"""The live report from real traffic through the simulator, against a hand computation.

Traffic of known shape: 12 `chat` requests served by the simulated vLLM, 3 more that
the vLLM refuses with 503 and the proxy fails over to the simulated API, and 4 to
`frontier` (an API-only alias, outside the comparison). Prices are round ($1 and $4 per
1M tokens), the GPU carries any peak this test can make (1,000 requests/s), so every
scenario and the breakeven follow from the tokens the clients saw and the window's
length the report states.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import time
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction as Q
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.proxy import ProxyHandle, metric_value
from tests.support.servers import PYTHON
from tests.support.sim import SimHandle
from tests.support.stack import run_stack

ADMIN = "admin-test-key"
KEY = "team-key"
SPM = Q(730 * 3600)
GPU_MONTH = Q(5, 2) * 730  # 1 GPU at $2.50/h, busy or idle
ENGINEERING = Q(40 * 100, 12) + 5 * 100
PRICE_IN, PRICE_OUT = Q(1, 10**6), Q(4, 10**6)


def cents(x: float | Q) -> Decimal:
    return Decimal(str(float(x))).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def config(vllm: SimHandle, api: SimHandle) -> dict[str, Any]:
    return {
        "auth": {"admin_key": ADMIN, "keys": [{"key": KEY, "tenant": "team"}]},
        "tenants": {"team": {}},
        "engineering": {"setup_hours": 40, "hourly_rate_usd": 100, "amortize_months": 12,
                        "maintenance_hours_per_month": 5},
        "breaker": {"failure_threshold": 1000},
        "gpu_pools": {"gpu": {"gpus": 1, "billing": "rental", "usd_per_gpu_hour": 2.5,
                              "capacity_requests_per_s": 1000}},
        "backends": {
            "vllm": {"type": "openai", "base_url": vllm.base_url, "pool": "gpu"},
            "api": {"type": "openai", "base_url": api.base_url, "api_key": "sk-sim"},
        },
        "models": {
            "chat": {
                "strategy": "priority",
                "targets": [{"backend": "vllm", "model": "llama"},
                            {"backend": "api", "model": "api-model"}],
                "compare_to": {"backend": "api", "model": "api-model"},
            },
            "frontier": {"targets": [{"backend": "api", "model": "big-model"}]},
        },
        "prices": {"api-model": {"input": 1, "output": 4}, "big-model": {"input": 3, "output": 9}},
    }  # fmt: skip


class Traffic:
    """What the clients saw: tokens per alias and serving backend."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, int, int]] = []

    def send(self, client: openai.OpenAI, model: str, n: int, max_tokens: int) -> None:
        for i in range(n):
            raw = client.chat.completions.with_raw_response.create(
                model=model,
                messages=[{"role": "user", "content": f"request {i}: " + "tell me more " * i}],
                max_tokens=max_tokens,
            )
            body = raw.parse()
            assert body.usage is not None
            self.rows.append(
                (model, raw.headers["x-hybridgate-backend"], body.usage.prompt_tokens,
                 body.usage.completion_tokens)
            )  # fmt: skip

    def select(self, alias: str, backend: str | None = None) -> list[tuple[int, int]]:
        return [
            (p, c) for a, b, p, c in self.rows if a == alias and (backend is None or b == backend)
        ]


@contextlib.contextmanager
def proxy_with_traffic(
    tmp_path: Path, on_gpu: int = 12, failed_over: int = 3, frontier: int = 4
) -> Iterator[tuple[ProxyHandle, Traffic]]:
    """Simulators and a proxy, after `on_gpu` chat requests served by the vLLM, then
    `failed_over` that it refuses with 503 (served by the API), then `frontier` ones."""
    with run_stack(tmp_path, config, local_args=["--model", "llama", "--speed", "20"]) as s:
        proxy, vllm = s.proxy, s.local
        client = openai.OpenAI(base_url=proxy.base_url, api_key=KEY, max_retries=0)
        traffic = Traffic()
        traffic.send(client, "chat", on_gpu, 20)
        vllm.set_faults(status=503, count=failed_over)
        traffic.send(client, "chat", failed_over, 24)
        traffic.send(client, "frontier", frontier, 8)
        yield proxy, traffic


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ProxyHandle, Traffic]]:
    """One proxy and its traffic for the module: the tests only read reports."""
    with proxy_with_traffic(tmp_path_factory.mktemp("report")) as served:
        yield served


def get_report(proxy: ProxyHandle, window: str = "1h") -> dict[str, Any]:
    r = httpx.get(
        f"{proxy.url}/costs/report",
        params={"window": window},
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return r.json()


def expected(traffic: Traffic, window_seconds: float) -> dict[str, Any]:
    """The hand computation (exact fractions, rounded to the cent at the end)."""
    chat = traffic.select("chat")
    on_api = traffic.select("chat", "api")
    n = len(chat)
    prompt = sum(p for p, _ in chat)
    completion = sum(c for _, c in chat)
    ws = Q(window_seconds)
    volume = n * SPM / ws
    per_request = Q(prompt, n) * PRICE_IN + Q(completion, n) * PRICE_OUT
    api_spend = sum(p * PRICE_IN + c * PRICE_OUT for p, c in on_api)
    api_only = volume * per_request
    selfhosted = GPU_MONTH + ENGINEERING  # one GPU carries any peak here
    return {
        "requests": n,
        "prompt": prompt,
        "completion": completion,
        "volume": volume,
        "api_only": api_only,
        "selfhosted_only": selfhosted,
        "hybrid_current": selfhosted + api_spend * SPM / ws,
        "hybrid_optimal": min(api_only, selfhosted),
        # Self-hosted costs a flat $2,658.33 up to 1,000 req/s; the API a × V.
        "breakeven": math.ceil(selfhosted / per_request),
    }


def test_report_matches_the_hand_computation(live: tuple[ProxyHandle, Traffic]) -> None:
    proxy, traffic = live
    assert len(traffic.select("chat", "vllm")) == 12
    assert len(traffic.select("chat", "api")) == 3  # the failed-over ones
    report = get_report(proxy)
    hand = expected(traffic, report["inputs"]["window_seconds"])
    assert report["inputs"]["window_seconds"] <= report["inputs"]["uptime_seconds"]
    (c,) = report["comparisons"]
    assert (c["pool"], c["aliases"], c["api_model"]) == ("gpu", ["chat"], "api-model")
    # Tokens, exactly.
    assert c["traffic"]["requests"] == hand["requests"]
    assert c["traffic"]["prompt_tokens"] == hand["prompt"]
    assert c["traffic"]["completion_tokens"] == hand["completion"]
    frontier = traffic.select("frontier")
    assert report["traffic"]["by_alias"]["frontier"] == {
        "requests": 4, "errors": 0, "prompt_tokens": sum(p for p, _ in frontier),
        "completion_tokens": sum(c for _, c in frontier), "cached_tokens": 0,
    }  # fmt: skip
    # Projected volume and each scenario, to the cent.
    assert cents(report["today_requests_per_month"]) == cents(hand["volume"])
    for name in ("api_only", "selfhosted_only", "hybrid_current", "hybrid_optimal"):
        assert cents(report["scenarios"][name]) == cents(hand[name]), name
    assert report["breakeven_requests_per_month"] == hand["breakeven"]
    assert f"({hand['breakeven']:,})" in report["recommendation"]
    assert c["capacity"]["source"].startswith("configured")
    # The books: per-backend spend equals what Prometheus counted from the same events.
    text = proxy.metrics_text()
    for backend in ("vllm", "api"):
        assert math.isclose(
            report["spend"]["by_backend"][backend]["actual_usd"],
            metric_value(text, "hybridgate_cost_usd_total", backend=backend),
            rel_tol=1e-9,
        )
    on_gpu = traffic.select("chat", "vllm")
    assert math.isclose(
        report["spend"]["by_backend"]["vllm"]["counterfactual_usd"],
        float(sum(p * PRICE_IN + c * PRICE_OUT for p, c in on_gpu)),
        rel_tol=1e-9,
    )
    json.dumps(report, allow_nan=False)


def test_gauges_follow_the_report(live: tuple[ProxyHandle, Traffic]) -> None:
    proxy, traffic = live
    hand = expected(traffic, 60.0)  # the breakeven does not depend on the window's length
    deadline = time.monotonic() + 30
    while True:  # the refresher runs every few seconds, off the request path
        text = proxy.metrics_text()
        be = metric_value(text, "hybridgate_breakeven_requests_per_month")
        if be == hand["breakeven"] or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert be == hand["breakeven"]
    assert cents(
        metric_value(text, "hybridgate_tco_monthly_usd", scenario="selfhosted_only")
    ) == cents(hand["selfhosted_only"])
    for scenario in ("api_only", "hybrid_current", "hybrid_optimal"):
        assert metric_value(text, "hybridgate_tco_monthly_usd", scenario=scenario) > 0
    assert metric_value(text, "hybridgate_projected_requests_per_month") > 0
    util = metric_value(text, "hybridgate_gpu_utilization_ratio", pool="gpu")
    assert 0 < util <= 1


def test_report_needs_the_admin_key_and_a_known_window(
    live: tuple[ProxyHandle, Traffic],
) -> None:
    proxy, _ = live
    r = httpx.get(f"{proxy.url}/costs/report", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_api_key"
    assert KEY not in r.text
    r = httpx.get(
        f"{proxy.url}/costs/report",
        params={"window": "2h"},
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "window"
    for window in ("24h", "7d", "all"):
        rep = get_report(proxy, window)
        assert rep["window"] == window and rep["traffic"]["requests"] == 19


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "HYBRIDGATE_ADMIN_KEY"}
    full_env.update(env or {}, COLUMNS="200")
    return subprocess.run(
        [PYTHON, "-m", "proxy", "report", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
    )


def test_report_command(live: tuple[ProxyHandle, Traffic]) -> None:
    proxy, traffic = live
    hand = expected(traffic, 60.0)
    table = _cli("--url", proxy.url, "--window", "1h", "--admin-key", ADMIN)
    assert table.returncode == 0, table.stderr
    assert "Recommendation" in table.stdout
    assert f"Break-even: {hand['breakeven']:,} requests/month" in table.stdout
    assert "$2,658.33" in table.stdout  # selfhosted_only
    as_json = _cli("--url", proxy.url, "--window", "24h", "--json",
                   env={"HYBRIDGATE_ADMIN_KEY": ADMIN})  # fmt: skip
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["window"] == "24h"
    assert data["breakeven_requests_per_month"] == hand["breakeven"]
    refused = _cli("--url", proxy.url, "--admin-key", "wrong")
    assert refused.returncode == 1 and "HTTP 401" in refused.stderr
    assert "wrong" not in refused.stderr
    missing = _cli("--url", proxy.url)
    assert missing.returncode == 2 and "admin key" in missing.stderr


def test_window_outlives_a_config_reload(tmp_path: Path) -> None:
    with proxy_with_traffic(tmp_path, on_gpu=4, failed_over=1, frontier=1) as (proxy, traffic):
        before = get_report(proxy, "all")
        r = httpx.post(
            f"{proxy.url}/admin/reload", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30
        )
        assert r.status_code == 200 and r.json()["status"] == "reloaded", r.text
        client = openai.OpenAI(base_url=proxy.base_url, api_key=KEY, max_retries=0)
        traffic.send(client, "chat", 2, 8)
        after = get_report(proxy, "all")
    assert before["traffic"]["by_alias"]["chat"]["requests"] == 5
    assert after["traffic"]["by_alias"]["chat"]["requests"] == 7
    chat = traffic.select("chat")
    assert after["comparisons"][0]["traffic"]["prompt_tokens"] == sum(p for p, _ in chat)
    assert after["inputs"]["uptime_seconds"] > before["inputs"]["uptime_seconds"]
