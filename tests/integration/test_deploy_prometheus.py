"""The shipped Prometheus rules and Grafana panels against a real stack on loopback.

Simulated vLLM and API upstreams, `hybridgate serve` running deploy/hybridgate.yaml
(with .env.example's values and the simulators' addresses), and a real prometheus with
deploy/prometheus/rules loaded, scraping the proxy and the simulated vLLM every second.
Traffic covers every series the panels read: both aliases, streaming, failovers, upstream
errors, an over-budget tenant, API traffic a GPU could have served.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.support.deploy import (
    RULES_DIR,
    alerts_test_copy,
    env_example,
    panel_queries,
    recording_rules,
    shipped_config,
    variable_queries,
)
from tests.support.prometheus import PrometheusHandle, run_prometheus
from tests.support.proxy import ProxyHandle, run_proxy
from tests.support.sim import SimHandle, run_simulator

pytestmark = pytest.mark.timeout(180)

SERVED = "llama-3.1-8b-instruct"


@dataclass
class Stack:
    vllm: SimHandle
    api: SimHandle
    proxy: ProxyHandle
    prom: PrometheusHandle
    env: dict[str, str]

    def client(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.proxy.base_url, api_key=key, max_retries=0)


def stack_config() -> dict[str, Any]:
    """The shipped config, plus what a test needs: loopback, state in memory, quick health
    checks, and an alias that sends to the API first what the GPU could serve (the
    misrouting alert)."""
    config = shipped_config()
    config["listen"] = {"host": "127.0.0.1", "port": 4000}
    config["state"] = {"url": "memory://"}
    config["health_checks"] = {"enabled": True, "interval_s": 0.5, "timeout_s": 1}
    chat = config["models"]["chat"]
    config["models"]["misrouted"] = {
        "strategy": "priority",
        "targets": [chat["targets"][1], chat["targets"][0]],
        "compare_to": chat["compare_to"],
    }
    return config


@pytest.fixture
def stack_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with contextlib.ExitStack() as stack:

        def start(rule_files: Any = None) -> Stack:
            tmp = tmp_path_factory.mktemp("stack")
            vllm = stack.enter_context(
                run_simulator(tmp, "vllm", args=["--speed", "50", "--model", SERVED])
            )
            api = stack.enter_context(run_simulator(tmp, "api", args=["--speed", "50"]))
            env = env_example() | {
                "VLLM_BASE_URL": vllm.base_url,
                "OPENAI_BASE_URL": api.base_url,
                "VLLM_SERVED_MODEL_NAME": SERVED,
                # team-b's budget is gone after a few requests; team-a's lasts.
                "TEAM_B_MONTHLY_API_BUDGET_USD": "0.00002",
            }
            proxy = stack.enter_context(run_proxy(tmp, stack_config(), env=env))
            targets = {
                "hybridgate": [f"127.0.0.1:{proxy.port}"],
                "vllm": [{"targets": [f"127.0.0.1:{vllm.port}"], "labels": {"pool": "gpu"}}],
            }
            kwargs = {} if rule_files is None else {"rule_files": rule_files}
            prom = stack.enter_context(run_prometheus(tmp, targets, **kwargs))
            s = Stack(vllm, api, proxy, prom, env)
            # Twice, with a scrape between: Prometheus takes a counter's first sample as
            # its start, so a series born and finished before one scrape has no rate.
            sent = 0
            for _ in range(2):
                sent += drive_traffic(s)
                prom.wait_for(f"sum(hybridgate_requests_total) == {sent}")
            prom.wait_for("hybridgate:spend_usd_per_hour:rate5m > 0")
            return s

        yield start


def drive_traffic(s: Stack) -> int:
    """Requests that make every panel's series exist; returns how many were sent."""
    a, b = s.client(s.env["TEAM_A_KEY"]), s.client(s.env["TEAM_B_KEY"])
    msg = [{"role": "user", "content": "hi"}]
    sent = 0

    def chat(client: openai.OpenAI, model: str, stream: bool = False, **kw: Any) -> bool:
        nonlocal sent
        sent += 1
        try:
            if stream:
                for _ in client.chat.completions.create(
                    model=model, messages=msg, max_tokens=32, stream=True, **kw
                ):
                    pass
            else:
                client.chat.completions.create(model=model, messages=msg, max_tokens=32, **kw)
            return True
        except openai.APIError:
            return False

    for i in range(6):
        assert chat(a, "chat", stream=i % 2 == 0)  # self-hosted
        assert chat(a, "frontier", stream=i % 2 == 1)  # API only
        assert chat(a, "misrouted")  # API first, though the GPU is idle
    # vLLM answers 503 three times: chat fails over to the API.
    s.vllm.set_faults(status=503, count=3)
    for _ in range(3):
        assert chat(a, "chat")
    s.vllm.clear_faults()
    # The API answers 500 twice: frontier has nowhere else to go.
    s.api.set_faults(status=500, count=2)
    assert not chat(a, "frontier")
    assert not chat(a, "frontier")
    s.api.clear_faults()
    # team-b spends past its tiny API budget.
    for _ in range(3):
        chat(b, "frontier")
    return sent


def finite(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(r["value"][1])) for r in result)


def test_every_recording_rule_and_panel_query_returns_data(stack_factory: Any) -> None:
    s: Stack = stack_factory()
    checks = [(f"rule {name}", expr) for name, expr in recording_rules().items()]
    checks += [(f"rule {name} (recorded)", name) for name in recording_rules()]
    checks += [(f"panel {q.id}", q.promql) for q in panel_queries()]
    assert len(checks) > 60

    empty = []
    for label, expr in checks:
        try:
            result = s.prom.wait_for(expr, timeout=5)
        except TimeoutError:
            empty.append(f"{label}: {expr}")
            continue
        if not finite(result):
            empty.append(f"{label}: only NaN/Inf: {expr} -> {result}")
    assert not empty, "empty queries:\n" + "\n".join(empty)

    for dash, var, label, metric in variable_queries():
        assert s.prom.label_values(label, metric), f"{dash}: ${var} has no values"

    # The books, seen through Prometheus: the recorded spend split adds up.
    [total] = s.prom.query("hybridgate:spend_usd_per_hour:rate5m")
    parts = s.prom.query(
        "sum(backend_tenant:hybridgate_cost_usd_per_hour:rate5m)"
        " + sum(pool:hybridgate_selfhosted_fixed_cost_usd_per_hour:rate5m)"
    )
    assert float(total["value"][1]) > 0
    assert float(parts[0]["value"][1]) == pytest.approx(float(total["value"][1]), rel=0.05)
    # Failovers and errors reached Prometheus with the labels the panels group by.
    failovers = s.prom.query("alias_reason:hybridgate_failovers:rate5m")
    assert {(f["metric"]["alias"], f["metric"]["from_backend"]) for f in failovers} == {
        ("chat", "vllm")
    }
    errors = s.prom.query('alias:hybridgate_requests_errors:ratio_rate5m{alias="frontier"}')
    assert float(errors[0]["value"][1]) > 0
    # The cost dashboard's TCO bars and budget gauge have what they are drawn from.
    scenarios = {r["metric"]["scenario"] for r in s.prom.query("hybridgate_tco_monthly_usd")}
    assert scenarios == {"api_only", "selfhosted_only", "hybrid_current", "hybrid_optimal"}
    used = s.prom.query("tenant:hybridgate_tenant_budget_used:ratio")
    assert {r["metric"]["tenant"]: float(r["value"][1]) >= 1 for r in used} == {
        "team-a": False,
        "team-b": True,
    }


def test_alerts_fire_when_provoked(stack_factory: Any, tmp_path: Path) -> None:
    alerts = alerts_test_copy(
        tmp_path / "alerts-test-copy.yml",
        {
            # The test stack's GPU costs ~3.6 USD/h all in, and a 1h rate over a minute of
            # data sees a sixtieth of that; the shipped threshold is 50.
            "HybridgateSpendHigh": {"> 50": "> 0.001"},
            # 24h of history cannot be had in a test: ask for 2 seconds.
            "HybridgateGpuIdle": {"offset 23h": "offset 2s"},
        },
    )
    s: Stack = stack_factory(rule_files=[RULES_DIR / "recording.yml", alerts])
    ready = s.proxy.ready(s.env["HYBRIDGATE_ADMIN_KEY"]).json()
    assert ready["backends"]["vllm"] == "up"

    firing = wait_firing(
        s.prom,
        {
            "HybridgateSpendHigh",
            "HybridgateGpuIdle",
            "HybridgateApiWhileSelfHostedCheaper",
            "HybridgateErrorRatioHigh",  # 4 of 22 frontier requests failed
            "HybridgateTenantBudgetExhausted",  # team-b's tiny budget
        },
    )
    assert firing["HybridgateGpuIdle"] == [
        {"alertname": "HybridgateGpuIdle", "pool": "gpu", "severity": "warning"}
    ]
    assert "HybridgateBackendDown" not in firing
    assert "VllmDown" not in firing
    assert [a["alias"] for a in firing["HybridgateErrorRatioHigh"]] == ["frontier"]
    assert [a["tenant"] for a in firing["HybridgateTenantBudgetExhausted"]] == ["team-b"]
    assert "HybridgateTenantBudget80" not in firing  # team-a has spent next to nothing

    # vLLM dies: Prometheus sees its target down, the proxy's health checks see it too.
    s.vllm.kill()
    firing = wait_firing(s.prom, {"VllmDown", "HybridgateBackendDown"})
    assert firing["VllmDown"][0]["instance"] == f"127.0.0.1:{s.vllm.port}"
    assert [a["backend"] for a in firing["HybridgateBackendDown"]] == ["vllm"]

    s.proxy.proc.stop()
    assert wait_firing(s.prom, {"HybridgateProxyDown"})["HybridgateProxyDown"][0]["job"] == (
        "hybridgate"
    )


def wait_firing(prom: PrometheusHandle, names: set[str], timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        firing = prom.firing()
        if names <= set(firing):
            return firing
        if time.monotonic() > deadline:
            raise AssertionError(f"not firing: {sorted(names - set(firing))}; firing: {firing}")
        time.sleep(0.25)
