"""Prometheus metrics (names are a contract: DESIGN.md, "Metrics").

Label values only ever come from config (aliases, backends, models, pools, tenants) or
fixed vocabularies (outcome, kind, reason); anything else becomes "other", so a client
naming a million models cannot make a million series.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from proxy.metering.events import UsageEvent

# `_created` series double the scrape size and no panel uses them.
disable_created_metrics()

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)


class PoolCollector(Collector):
    """GPU pool counters computed at scrape time from the live accounts.

    Provisioned GPU-seconds and fixed cost accrue by wall clock, with or without traffic;
    reading them at scrape time keeps that exact without a ticking task.
    """

    def __init__(self, snapshot: Callable[[], Iterable[dict[str, Any]]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterable[Any]:
        prov = CounterMetricFamily(
            "hybridgate_gpu_provisioned_seconds",
            "GPU-seconds provisioned: gpus x wall-clock seconds the pool has been declared up.",
            labels=["pool"],
        )
        busy = CounterMetricFamily(
            "hybridgate_gpu_busy_seconds",
            "GPU-seconds with at least one request in flight on the pool's backends "
            "(gpus x busy wall-clock seconds).",
            labels=["pool"],
        )
        fixed = CounterMetricFamily(
            "hybridgate_selfhosted_fixed_cost_usd",
            "USD accrued by wall clock and not attributed to requests: the pool's idle "
            "GPU-seconds at its price, plus its share of engineering cost.",
            labels=["pool"],
        )
        util = GaugeMetricFamily(
            "hybridgate_gpu_utilization_ratio",
            "Busy / provisioned GPU-seconds of the pool over the trailing 5 minutes "
            "(since start until the first sample).",
            labels=["pool"],
        )
        for row in self._snapshot():
            prov.add_metric([row["pool"]], row["provisioned_gpu_seconds"])
            busy.add_metric([row["pool"]], row["busy_gpu_seconds"])
            fixed.add_metric([row["pool"]], row["fixed_cost_usd"])
            util.add_metric([row["pool"]], row["utilization"])
        yield from (prov, busy, fixed, util)


class Metrics:
    """All of hybridgate's Prometheus series, plus the sink that feeds them from UsageEvents."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry or CollectorRegistry(auto_describe=True)
        self.registry = r
        self.requests = Counter(
            "hybridgate_requests",
            "Requests finished, by alias, serving backend and outcome "
            "(success | error | rejected | client_disconnect | cut).",
            ["alias", "backend", "outcome"],
            registry=r,
        )
        self.tokens = Counter(
            "hybridgate_tokens",
            "Tokens by serving backend, upstream model and kind "
            "(prompt | completion | cached_prompt).",
            ["backend", "model", "kind"],
            registry=r,
        )
        self.cost = Counter(
            "hybridgate_cost_usd",
            "Actual USD: API token cost, or attributed GPU-seconds x "
            "the pool's USD per GPU-second.",
            ["backend", "model", "tenant"],
            registry=r,
        )
        self.counterfactual = Counter(
            "hybridgate_counterfactual_cost_usd",
            "USD the other path would have cost: "
            "self-hosted traffic at the alias's compare_to API price, API traffic at the "
            "self-hosted marginal cost.",
            ["backend", "model", "tenant"],
            registry=r,
        )
        self.failovers = Counter(
            "hybridgate_failovers",
            "Attempts abandoned for the next target, by reason.",
            ["alias", "from_backend", "to_backend", "reason"],
            registry=r,
        )
        self.duration = Histogram(
            "hybridgate_request_duration_seconds",
            "Wall time from request received to last byte sent.",
            ["alias", "backend"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "hybridgate_ttft_seconds",
            "Time from request received to first byte of the upstream's answer relayed.",
            ["alias", "backend"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.overhead = Histogram(
            "hybridgate_overhead_seconds",
            "Time the proxy itself adds: total time minus time waiting on upstreams.",
            buckets=_OVERHEAD_BUCKETS,
            registry=r,
        )
        self.inflight = Gauge(
            "hybridgate_inflight_requests",
            "Requests in flight per backend.",
            ["backend"],
            registry=r,
        )
        self.backend_up = Gauge(
            "hybridgate_backend_up",
            "1 if the backend is considered healthy.",
            ["backend"],
            registry=r,
        )
        self.breaker_open = Gauge(
            "hybridgate_breaker_open",
            "1 while the backend's circuit breaker is open.",
            ["backend"],
            registry=r,
        )
        self.backend_info = Gauge(
            "hybridgate_backend_info",
            "Always 1: what each backend is (kind = self_hosted | api; pool empty for APIs), "
            "so queries can split spend and traffic between GPUs and APIs.",
            ["backend", "kind", "pool"],
            registry=r,
        )
        self.tco = Gauge(
            "hybridgate_tco_monthly_usd",
            "Monthly TCO per scenario from the live traffic of the last 24 h (or since "
            "start), refreshed every 5 s "
            "(api_only | selfhosted_only | hybrid_current | hybrid_optimal).",
            ["scenario"],
            registry=r,
        )
        self.breakeven = Gauge(
            "hybridgate_breakeven_requests_per_month",
            "Monthly requests where self-hosted only stops costing more than API only "
            "(same token mix and load shape as the last 24 h; +Inf: never).",
            registry=r,
        )
        self.projected = Gauge(
            "hybridgate_projected_requests_per_month",
            "Requests of the last 24 h (or since start) that the breakeven compares (the "
            "primary pool's aliases), projected: requests x seconds per month / window seconds.",
            registry=r,
        )
        self._req_children: dict[tuple[str, str, str], Any] = {}
        self._tok_children: dict[tuple[str, str], tuple[Any, Any, Any]] = {}
        self._cost_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self._lat_children: dict[tuple[str, str], tuple[Any, Any]] = {}

    def add_pool_collector(self, snapshot: Callable[[], Iterable[dict[str, Any]]]) -> None:
        self.registry.register(PoolCollector(snapshot))

    def observe(self, ev: UsageEvent) -> None:
        """The Prometheus sink: O(1), cached label children, no allocation beyond lookups."""
        backend = ev.backend or "none"
        key = (ev.alias, backend, ev.outcome)
        child = self._req_children.get(key)
        if child is None:
            child = self._req_children[key] = self.requests.labels(*key)
        child.inc()
        lat = self._lat_children.get((ev.alias, backend))
        if lat is None:
            lat = self._lat_children[(ev.alias, backend)] = (
                self.duration.labels(ev.alias, backend),
                self.ttft.labels(ev.alias, backend),
            )
        lat[0].observe(ev.duration_s)
        if ev.ttft_s is not None:
            lat[1].observe(ev.ttft_s)
        self.overhead.observe(ev.overhead_s)
        if ev.backend is None or ev.model is None:
            return
        model = ev.model
        tok = self._tok_children.get((backend, model))
        if tok is None:
            tok = self._tok_children[(backend, model)] = (
                self.tokens.labels(backend, model, "prompt"),
                self.tokens.labels(backend, model, "completion"),
                self.tokens.labels(backend, model, "cached_prompt"),
            )
        if ev.prompt_tokens:
            tok[0].inc(ev.prompt_tokens)
        if ev.completion_tokens:
            tok[1].inc(ev.completion_tokens)
        if ev.cached_tokens:
            tok[2].inc(ev.cached_tokens)
        ckey = (backend, model, ev.tenant)
        cost = self._cost_children.get(ckey)
        if cost is None:
            cost = self._cost_children[ckey] = (
                self.cost.labels(*ckey),
                self.counterfactual.labels(*ckey),
            )
        if len(ev.attempts) <= 1:
            if ev.cost_usd:
                cost[0].inc(ev.cost_usd)
        else:  # failed attempts on our GPUs cost their backend's time too
            for a in ev.attempts:
                if a.cost_usd:
                    self.cost.labels(a.backend, a.model, ev.tenant).inc(a.cost_usd)
        if ev.counterfactual_usd:
            cost[1].inc(ev.counterfactual_usd)

    def failover(self, alias: str, from_backend: str, to_backend: str, reason: str) -> None:
        self.failovers.labels(alias, from_backend, to_backend, reason).inc()
