"""Prometheus metrics (names are a contract: docs/architecture.md, "Metrics").

Label values only ever come from config (aliases, backends, models, pools, tenants) or
fixed vocabularies (outcome, kind, reason); anything else becomes "other", so a client
naming a million models cannot make a million series.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from proxy.metering.events import UsageEvent
from proxy.metering.hotmetrics import CounterFamily, Hist, HistFamily, HotCollector

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

    def collect(self) -> Iterable[Metric]:
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
        approx = GaugeMetricFamily(
            "hybridgate_gpu_books_approximate",
            "1 while the pool's books are this replica's own view (the state store shared "
            "by the replicas is unreachable, or has not integrated that time yet); 0 when "
            "they are the replicas' one set of books.",
            labels=["pool"],
        )
        for row in self._snapshot():
            # With replicas sharing Redis each exports its part of the pool's counters
            # (cluster_gpu.py): sum() across replicas is the pool's, counted once.
            pool = [row["pool"]]
            prov.add_metric(
                pool, row.get("part_provisioned_gpu_seconds", row["provisioned_gpu_seconds"])
            )
            busy.add_metric(pool, row.get("part_busy_gpu_seconds", row["busy_gpu_seconds"]))
            fixed.add_metric(pool, row.get("part_fixed_cost_usd", row["fixed_cost_usd"]))
            util.add_metric(pool, row["utilization"])
            approx.add_metric(pool, 1.0 if row.get("approximate") else 0.0)
        yield from (prov, busy, fixed, util, approx)


class Metrics:
    """All of hybridgate's Prometheus series, plus the sink that feeds them from UsageEvents."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry or CollectorRegistry(auto_describe=True)
        self.registry = r
        self.requests = CounterFamily(
            "hybridgate_requests",
            "Requests finished, by alias, serving backend and outcome "
            "(success | error | rejected | client_disconnect | cut).",
            ["alias", "backend", "outcome"],
        )
        self.tokens = CounterFamily(
            "hybridgate_tokens",
            "Tokens by serving backend, upstream model and kind "
            "(prompt | completion | cached_prompt | cache_read_prompt | cache_write_prompt).",
            ["backend", "model", "kind"],
        )
        self.cost = CounterFamily(
            "hybridgate_cost_usd",
            "Actual USD: API token cost, or attributed GPU-seconds x "
            "the pool's USD per GPU-second.",
            ["backend", "model", "tenant"],
        )
        self.counterfactual = CounterFamily(
            "hybridgate_counterfactual_cost_usd",
            "USD the other path would have cost: "
            "self-hosted traffic at the alias's compare_to API price, API traffic at the "
            "self-hosted marginal cost.",
            ["backend", "model", "tenant"],
        )
        self.duration = HistFamily(
            "hybridgate_request_duration_seconds",
            "Wall time from request received to last byte sent.",
            ["alias", "backend"],
            _LATENCY_BUCKETS,
        )
        self.ttft = HistFamily(
            "hybridgate_ttft_seconds",
            "Time from request received to first byte of the upstream's answer relayed.",
            ["alias", "backend"],
            _LATENCY_BUCKETS,
        )
        self.overhead = HistFamily(
            "hybridgate_overhead_seconds",
            "Time the proxy itself adds: total time minus time waiting on upstreams.",
            [],
            _OVERHEAD_BUCKETS,
        )
        self.unpriced = CounterFamily(
            "hybridgate_unpriced_requests",
            "Requests served by an API model with no known price: their cost is unknown "
            "(not counted as $0). Add prices.<model> to the config.",
            ["backend", "model"],
        )
        self._overhead = self.overhead.get(())
        r.register(
            HotCollector(
                [
                    self.requests,
                    self.tokens,
                    self.cost,
                    self.counterfactual,
                    self.duration,
                    self.ttft,
                    self.overhead,
                    self.unpriced,
                ]
            )
        )
        self.failovers = Counter(
            "hybridgate_failovers",
            "Attempts abandoned for the next target, by reason.",
            ["alias", "from_backend", "to_backend", "reason"],
            registry=r,
        )
        self.inflight = Gauge(
            "hybridgate_inflight_requests",
            "Requests in flight per backend.",
            ["backend"],
            registry=r,
        )
        self.queued = Gauge(
            "hybridgate_backend_queued_requests",
            "Requests waiting for a free slot of the backend (max_concurrency full), "
            "within their deadline.",
            ["backend"],
            registry=r,
        )
        self.key_inflight = Gauge(
            "hybridgate_key_inflight_requests",
            "Requests in flight per client key with a concurrency cap "
            "(auth.keys[].max_concurrency; keys without one are not counted).",
            ["key"],
            registry=r,
        )
        self.tenant_inflight = Gauge(
            "hybridgate_tenant_inflight_requests",
            "Requests in flight per tenant with a concurrency cap "
            "(tenants.<name>.max_concurrency; tenants without one are not counted).",
            ["tenant"],
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
        self._lat: dict[tuple[str, str], tuple[Hist, Hist]] = {}

    def add_pool_collector(self, snapshot: Callable[[], Iterable[dict[str, Any]]]) -> None:
        self.registry.register(PoolCollector(snapshot))

    def observe(self, ev: UsageEvent) -> None:
        """The Prometheus sink: O(1) dict adds, no locks (one event-loop thread)."""
        backend = ev.backend or "none"
        alias = ev.alias
        self.requests.inc((alias, backend, ev.outcome))
        lat = self._lat.get((alias, backend))
        if lat is None:
            lat = self._lat[(alias, backend)] = (
                self.duration.get((alias, backend)),
                self.ttft.get((alias, backend)),
            )
        lat[0].observe(ev.duration_s)
        if ev.ttft_s is not None:
            lat[1].observe(ev.ttft_s)
        self._overhead.observe(ev.overhead_s)
        if ev.backend is None or ev.model is None:
            return
        model = ev.model
        tokens = self.tokens
        if ev.prompt_tokens:
            tokens.inc((backend, model, "prompt"), ev.prompt_tokens)
        if ev.completion_tokens:
            tokens.inc((backend, model, "completion"), ev.completion_tokens)
        if ev.cached_tokens:  # cached_prompt kept (the contract); cache_read_prompt beside it
            tokens.inc((backend, model, "cached_prompt"), ev.cached_tokens)
            tokens.inc((backend, model, "cache_read_prompt"), ev.cached_tokens)
        if ev.cache_write_tokens:
            tokens.inc((backend, model, "cache_write_prompt"), ev.cache_write_tokens)
        if ev.reasoning_tokens:  # among the completion tokens (priced as such)
            tokens.inc((backend, model, "reasoning"), ev.reasoning_tokens)
        tenant = ev.tenant
        if ev.unpriced:
            self.unpriced.inc((backend, model))
        if len(ev.attempts) <= 1:
            if ev.cost_usd:
                self.cost.inc((backend, model, tenant), ev.cost_usd)
        else:  # failed attempts on our GPUs cost their backend's time too
            for a in ev.attempts:
                if a.cost_usd:
                    self.cost.inc((a.backend, a.model, tenant), a.cost_usd)
        if ev.counterfactual_usd:
            self.counterfactual.inc((backend, model, tenant), ev.counterfactual_usd)

    def metered_tokens(self, backend: str, kind: str) -> float:
        """Tokens of one kind metered so far on one backend (all models)."""
        return sum(v for k, v in self.tokens.values.items() if k[0] == backend and k[2] == kind)

    def failover(self, alias: str, from_backend: str, to_backend: str, reason: str) -> None:
        self.failovers.labels(alias, from_backend, to_backend, reason).inc()
