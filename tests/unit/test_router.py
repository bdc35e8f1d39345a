"""The router's plans: rules, context windows, availability and each strategy.

Built on the real control plane (breakers, health state, engine snapshots) and the
real Meter's marginal cost; nothing here touches the network.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

import pytest

from costing.prices import ModelPrice, PriceTable
from proxy.backends import build_backend
from proxy.config import Config
from proxy.metering.meter import Meter
from proxy.metering.prometheus import Metrics
from proxy.routing.control import ControlPlane
from proxy.routing.engine_metrics import EngineSnapshot
from proxy.routing.health import DOWN
from proxy.routing.router import NoRoute, Router, RouteRequest

PRICES = PriceTable(
    {
        "mini": ModelPrice.per_million(0.15, 0.60),
        "big": ModelPrice.per_million(5.0, 15.0),
    },
    context_windows={"mini": 128_000},
)
NOWHERE = "http://127.0.0.1:9/v1"


def config(models: dict[str, Any], rules: list[dict] | None = None, **extra: Any) -> Config:
    return Config.model_validate(
        {
            "gpu_pools": {
                "h100": {
                    "gpus": 1,
                    "billing": "rental",
                    "usd_per_gpu_hour": 3.6,
                    "capacity_tokens_per_s": 1000,
                }
            },
            "backends": {
                "local": {"base_url": NOWHERE, "pool": "h100", "max_concurrency": 8},
                "local2": {"base_url": NOWHERE, "pool": "h100", "max_concurrency": 8},
                "api": {"base_url": NOWHERE, "max_concurrency": 100},
                "api2": {"base_url": NOWHERE, "max_concurrency": 100},
            },
            "models": models,
            "rules": rules or [],
            **extra,
        }
    )


class Rig:
    def __init__(self, cfg: Config, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.backends = {n: build_backend(n, b) for n, b in cfg.backends.items()}
        self.control = ControlPlane(cfg, self.backends, Metrics(), clock=clock)
        self.inflight = dict.fromkeys(cfg.backends, 0)
        meter = Meter(cfg, PRICES)
        self.router = Router(
            cfg, PRICES, self.control, self.inflight, meter.marginal_selfhosted_cost
        )

    def plan(self, alias: str = "chat", **kw: Any) -> list[str]:
        return [t.backend for t in self.router.plan(self.req(alias, **kw))]

    @staticmethod
    def req(
        alias: str = "chat",
        tenant: str = "t",
        headers: dict[bytes, bytes] | None = None,
        body: dict[str, Any] | None = None,
        tokens: int = 100,
        only: str | None = None,
    ) -> RouteRequest:
        return RouteRequest(alias, tenant, headers or {}, body or {}, tokens, only)

    def open_breaker(self, backend: str) -> None:
        b = self.control.breakers[backend]
        for _ in range(b.cfg.failure_threshold):
            b.record_failure()


def targets(*pairs: str, **spec: Any) -> dict[str, Any]:
    return {"targets": [{"backend": b, "model": m} for b, m in pairs], **spec}


HYBRID = targets(("local", "llama"), ("api", "mini"))


def test_priority_keeps_config_order_and_skips_open_breakers() -> None:
    rig = Rig(config({"chat": HYBRID}))
    assert rig.plan() == ["local", "api"]
    rig.open_breaker("local")
    assert rig.plan() == ["api"]


def test_health_down_is_skipped_too() -> None:
    rig = Rig(config({"chat": HYBRID}))

    async def probe_twice() -> None:  # nothing listens there: two failed probes
        for _ in range(2):
            assert not await rig.control.health.check("local")
        await rig.backends["local"].close()

    asyncio.run(probe_twice())
    assert rig.control.health.state["local"].status == DOWN
    assert rig.plan() == ["api"]
    assert rig.control.state("local") == "down"


def test_nothing_available_is_a_503_with_retry_after() -> None:
    rig = Rig(config({"chat": HYBRID}, breaker={"failure_threshold": 1, "cooldown_s": 30}))
    rig.open_breaker("local")
    rig.open_breaker("api")
    with pytest.raises(NoRoute) as exc:
        rig.plan()
    assert exc.value.status == 503
    assert (b"retry-after", b"30") in exc.value.headers
    assert "circuit open" in exc.value.message


def test_only_self_hosted_keeps_api_targets_out_even_when_self_hosted_is_down() -> None:
    rules = [
        {"name": "confidential", "when": {"header": {"x-data-class": "confidential"}},
         "only": "self_hosted"}
    ]  # fmt: skip
    rig = Rig(config({"chat": HYBRID}, rules))
    secret = {b"x-data-class": b"confidential"}
    assert rig.plan(headers=secret) == ["local"]
    assert rig.plan() == ["local", "api"]
    rig.open_breaker("local")
    with pytest.raises(NoRoute) as exc:
        rig.plan(headers=secret)
    assert exc.value.status == 503
    assert "rule 'confidential'" in exc.value.message
    assert "not sent anywhere else" in exc.value.message
    assert rig.plan() == ["api"]


def test_only_self_hosted_on_an_api_only_alias_is_refused() -> None:
    rig = Rig(config({"chat": targets(("api", "mini"))}, [{"when": {}, "only": "self_hosted"}]))
    with pytest.raises(NoRoute) as exc:
        rig.plan()
    assert "has no self-hosted target" in exc.value.message


def test_budget_policy_only_holds_and_says_why() -> None:
    rig = Rig(config({"chat": HYBRID}))
    assert rig.plan(only="self_hosted") == ["local"]
    rig.open_breaker("local")
    with pytest.raises(NoRoute) as exc:
        rig.plan(only="self_hosted")
    assert "only be served by self-hosted backends (the tenant's budget policy)" in str(
        exc.value.message
    )


def test_prefer_reorders_and_route_to_switches_alias() -> None:
    rules = [
        {"when": {"tenant": "analytics"}, "prefer": "api"},
        {"when": {"min_prompt_tokens": 5000}, "route_to": "frontier"},
    ]
    rig = Rig(config({"chat": HYBRID, "frontier": targets(("api2", "big"))}, rules))
    assert rig.plan(tenant="analytics") == ["api", "local"]
    plan = rig.router.plan(rig.req(tokens=6000))
    assert plan.alias == "frontier" and [t.backend for t in plan] == ["api2"]


def test_context_window_skips_small_targets_and_keeps_the_largest_if_none_fit() -> None:
    chat = {
        "targets": [
            {"backend": "local", "model": "llama", "context_window": 8192},
            {"backend": "api", "model": "mini"},  # 128k from the price table
        ]
    }
    rig = Rig(config({"chat": chat}))
    assert rig.plan(tokens=8000) == ["local", "api"]
    assert rig.plan(tokens=9000) == ["api"]
    assert rig.plan(tokens=500_000) == ["api"]


def test_context_window_reported_by_the_engine_counts() -> None:
    rig = Rig(config({"chat": HYBRID}))
    rig.control.engines.set_windows("local", {"llama": 4096})
    assert rig.plan(tokens=5000) == ["api"]
    assert rig.plan(tokens=4000) == ["local", "api"]


def test_larger_window_after_a_context_error() -> None:
    chat = {
        "targets": [
            {"backend": "local", "model": "llama", "context_window": 8192},
            {"backend": "local2", "model": "llama", "context_window": 4096},
            {"backend": "api", "model": "mini"},
        ]
    }
    rig = Rig(config({"chat": chat}))
    plan = rig.router.plan(rig.req(tokens=10))
    assert [t.backend for t in plan] == ["local", "local2", "api"]
    assert plan.larger_window_after(0)  # api's 128k
    small = {"targets": chat["targets"][:2]}
    rig = Rig(config({"chat": small}))
    assert not rig.router.plan(rig.req(tokens=10)).larger_window_after(0)


def test_spillover_on_in_flight_count() -> None:
    rig = Rig(
        config({"chat": {**HYBRID, "strategy": "spillover", "spillover": {"max_inflight": 4}}})
    )
    rig.inflight["local"] = 3
    assert rig.plan() == ["local", "api"]
    rig.inflight["local"] = 4
    assert rig.plan() == ["api", "local"]  # local stays as the last resort


def test_spillover_without_max_inflight_uses_max_concurrency() -> None:
    rig = Rig(config({"chat": {**HYBRID, "strategy": "spillover"}}))
    rig.inflight["local"] = 7
    assert rig.plan() == ["local", "api"]
    rig.inflight["local"] = 8
    assert rig.plan() == ["api", "local"]


def test_spillover_on_engine_waiting_and_kv_cache_when_fresh() -> None:
    spill = {"max_inflight": 100, "max_waiting": 2, "max_kv_cache": 0.9}
    rig = Rig(config({"chat": {**HYBRID, "strategy": "spillover", "spillover": spill}}))
    snaps = rig.control.engines.snapshots
    snaps["local"] = EngineSnapshot(running=5, waiting=2, kv_cache=0.5, at=time.monotonic())
    assert rig.plan() == ["local", "api"]
    snaps["local"] = EngineSnapshot(running=5, waiting=3, kv_cache=0.5, at=time.monotonic())
    assert rig.plan() == ["api", "local"]
    snaps["local"] = EngineSnapshot(running=5, waiting=0, kv_cache=0.9, at=time.monotonic())
    assert rig.plan() == ["api", "local"]
    snaps["local"] = EngineSnapshot(running=5, waiting=9, kv_cache=0.99, at=time.monotonic() - 60)
    assert rig.plan() == ["local", "api"]  # stale figures are not routed on


def test_a_slow_metrics_page_keeps_the_engine_figures_fresh() -> None:
    """Regression (CI, real vLLM): a full vLLM on 2 cores took over a second to serve
    /metrics, so each snapshot aged past three 0.25 s intervals before the next arrived and
    spillover on `waiting` never fired while the engine was full."""
    spill = {"max_inflight": 100, "max_waiting": 0}
    rig = Rig(config({"chat": {**HYBRID, "strategy": "spillover", "spillover": spill}}))
    interval = rig.control.engines.cfg.interval_s
    old = time.monotonic() - 3 * interval - 0.5
    snaps = rig.control.engines.snapshots
    snaps["local"] = EngineSnapshot(running=8, waiting=3, at=old, took=0.5)
    assert rig.plan() == ["api", "local"]  # read 1 s ago, taking 0.5 s: still current
    snaps["local"] = EngineSnapshot(running=8, waiting=3, at=old, took=0.0)
    assert rig.plan() == ["local", "api"]  # a fast page that old is stale


def test_cheapest_orders_by_expected_cost() -> None:
    chat = targets(("api2", "big"), ("local", "llama"), ("api", "mini"), strategy="cheapest")
    rig = Rig(config({"chat": chat}))
    # 1000 prompt + 100 completion tokens: mini $0.00021, self-hosted 1100 tokens at
    # 1000 tok/s x $0.001/GPU-s = $0.0011, big $0.0065.
    assert rig.plan(tokens=1000, body={"max_tokens": 100}) == ["api", "local", "api2"]
    p = rig.router._targets["chat"]
    assert rig.router.expected_cost(p[1], 1000, 100) == pytest.approx(0.0011)
    assert rig.router.expected_cost(p[2], 1000, 100) == pytest.approx(0.00021)


def test_weighted_draws_in_proportion_to_weight() -> None:
    chat = {
        "strategy": "weighted",
        "targets": [
            {"backend": "api", "model": "mini", "weight": 3},
            {"backend": "api2", "model": "big", "weight": 1},
        ],
    }
    rig = Rig(config({"chat": chat}))
    random.seed(7)
    firsts = [rig.plan()[0] for _ in range(4000)]
    share = firsts.count("api") / len(firsts)
    assert 0.72 < share < 0.78
    assert all(len(set(rig.plan())) == 2 for _ in range(10))  # the other one is failover


def test_least_busy_relative_to_max_concurrency() -> None:
    rig = Rig(config({"chat": targets(("local", "llama"), ("api", "mini"), strategy="least_busy")}))
    rig.inflight.update(local=4, api=10)  # 4/8 vs 10/100
    assert rig.plan() == ["api", "local"]
    rig.inflight.update(local=0)
    assert rig.plan() == ["local", "api"]


def test_lowest_latency_follows_the_moving_average_and_retries_stale_ones() -> None:
    chat = targets(("local", "llama"), ("api", "mini"), strategy="lowest_latency")
    rig = Rig(config({"chat": chat}))
    rig.control.on_success("local", 0.9)
    rig.control.on_success("api", 0.2)
    assert rig.plan() == ["api", "local"]
    for _ in range(10):
        rig.control.on_success("api", 2.0)
    assert rig.plan() == ["local", "api"]
    ewma, _ = rig.control.ttft["api"]
    rig.control.ttft["api"] = (ewma, time.monotonic() - 3600)
    rig.control.on_success("local", 0.01)
    assert rig.plan() == ["api", "local"]  # unknown again: it gets a request to measure


def test_a_reload_carries_breakers_of_unchanged_backends_and_renews_changed_ones() -> None:
    breaker = {"failure_threshold": 1, "cooldown_s": 0.05}
    now = [1000.0]  # the breakers' clock: the cooldown passes when the test says so
    rig = Rig(config({"chat": HYBRID}, breaker=breaker), clock=lambda: now[0])
    rig.open_breaker("local")
    rig.open_breaker("api")
    new_cfg = config({"chat": HYBRID}, breaker=breaker)
    changed = new_cfg.model_copy(
        update={"backends": {**new_cfg.backends, "api": new_cfg.backends["api"].model_copy(
            update={"max_concurrency": 50})}}
    )  # fmt: skip
    control = ControlPlane(changed, rig.backends, Metrics(), previous=rig.control)
    router = Router(changed, PRICES, control, rig.inflight)
    assert control.impaired == {"local"}  # api's config changed: a fresh breaker
    assert [t.backend for t in router.plan(rig.req())] == ["api"]
    now[0] += 0.06  # past the cooldown: local half-opens
    assert control.admit("local")
    control.on_success("local")
    assert control.impaired == set()  # the carried breaker reports to the new plane
    assert [t.backend for t in router.plan(rig.req())] == ["local", "api"]
