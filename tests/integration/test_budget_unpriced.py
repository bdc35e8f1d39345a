"""A tenant with an API budget is never served by an API model whose price is unknown:
its spend could not be counted, so the budget would not hold."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from proxy.config import parse_config
from proxy.metering.pricing import load_prices, price_problems
from tests.support.sim import SimHandle
from tests.support.stack import run_stack

BUDGETED = "sk-budgeted-tenant-key-0001"
FREE = "sk-unbudgeted-tenant-key-0002"
MSGS = [{"role": "user", "content": "hi"}]


def _config(api: SimHandle, vllm: SimHandle) -> dict[str, Any]:
    return {
        "auth": {"keys": [{"key": BUDGETED, "tenant": "capped"}, {"key": FREE, "tenant": "open"}]},
        "tenants": {"capped": {"monthly_api_budget_usd": 0.00003}, "open": {}},
        "gpu_pools": {"gpu": {"gpus": 1, "usd_per_gpu_hour": 1.0}},
        "backends": {
            "api": {"base_url": api.base_url, "api_key": "sk-upstream-xyz"},
            "vllm": {"base_url": vllm.base_url, "pool": "gpu", "engine": "vllm"},
        },
        "models": {
            "mystery": {"targets": [{"backend": "api", "model": "mystery-model"}]},
            "mixed": {
                "targets": [
                    {"backend": "api", "model": "mystery-model"},
                    {"backend": "vllm", "model": "sim-model"},
                ]
            },
        },
        "health_checks": {"enabled": False},
    }


def _ask(url: str, key: str, alias: str) -> httpx.Response:
    return httpx.post(
        f"{url}/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": alias, "messages": MSGS, "max_tokens": 2},
        timeout=10,
    )


def test_budgeted_tenant_is_refused_an_unpriced_api_model(tmp_path: Path) -> None:
    with run_stack(tmp_path, lambda vllm, api: _config(api, vllm), local_args=(), api_args=()) as s:
        p, api = s.proxy, s.api
        for _ in range(5):  # never free: not once, not after the budget "holds"
            r = _ask(p.base_url, BUDGETED, "mystery")
            assert r.status_code == 403, r.text
            err = r.json()["error"]
            assert (err["code"], err["type"]) == ("unpriced_model", "permission_error")
            assert "prices.mystery-model" in err["message"] and "'capped'" in err["message"]
        assert api.stats()["requests_by_endpoint"].get("/v1/chat/completions", 0) == 0
        # With a self-hosted target beside it, the budgeted tenant is served there.
        r = _ask(p.base_url, BUDGETED, "mixed")
        assert r.status_code == 200 and r.headers["x-hybridgate-backend"] == "vllm"
        # A tenant without a budget is served as before (counted as unpriced).
        r = _ask(p.base_url, FREE, "mystery")
        assert r.status_code == 200 and r.headers["x-hybridgate-backend"] == "api"
        r = _ask(p.base_url, FREE, "mixed")
        assert r.status_code == 200 and r.headers["x-hybridgate-backend"] == "api"
        assert p.metric("hybridgate_unpriced_requests_total") == 2


def test_check_says_budgeted_tenants_are_refused_unpriced_models() -> None:
    cfg = parse_config(
        """
tenants: {capped: {monthly_api_budget_usd: 5}}
backends: {api: {base_url: "http://127.0.0.1:9/v1"}}
models: {m: {targets: [{backend: api, model: mystery-model}]}}
"""
    )
    (problem,) = price_problems(cfg, load_prices(cfg))
    assert "prices.mystery-model" in problem and "capped" in problem and "refused" in problem
