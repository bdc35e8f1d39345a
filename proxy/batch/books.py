"""What batch work did and what it saved: a Meter sink over `kind=batch` events, and the
Prometheus counters of batch lines.

Every line is one UsageEvent (proxy/batch/runner.py): self-hosted lines carry their
GPU-seconds (busy time that would otherwise have been idle: its cost, GPU-seconds × the
pool's USD per GPU-second, was being paid anyway), provider lines their cost at the batch
tier. Each line is also priced at the API's batch and regular prices (the alias's
`compare_to`, else the provider target's model), so the live report can say what the same
lines would have cost.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from costing.api import api_cost
from costing.prices import ModelPrice
from proxy.metering.events import UsageEvent

PriceOf = Callable[[UsageEvent], ModelPrice | None]


class BatchMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.lines = Counter(
            "hybridgate_batch_lines",
            "Batch lines finished, by outcome and where they ran.",
            ["alias", "outcome", "ran"],
            registry=registry,
        )
        self.gpu_seconds = Counter(
            "hybridgate_batch_gpu_seconds",
            "Busy GPU-seconds batch lines filled, per pool.",
            ["pool"],
            registry=registry,
        )

    def line(self, alias: str, outcome: str, ran: str) -> None:
        self.lines.labels(alias, outcome, ran).inc()


class BatchBooks:
    """Totals of batch lines since the process started (the live report's `batch`)."""

    def __init__(self, price_of: PriceOf, metrics: BatchMetrics) -> None:
        self._price_of = price_of
        self._metrics = metrics
        self.lines: dict[str, int] = {}  # by where they ran
        self.gpu_seconds: dict[str, float] = {}  # by pool
        self.cost_usd: dict[str, float] = {}  # by where they ran
        self.api_batch_usd = 0.0
        self.api_regular_usd = 0.0
        self.unpriced_lines = 0
        self.tokens = 0

    def observe(self, ev: UsageEvent) -> None:
        if ev.kind != "batch":
            return
        ran = "self_hosted" if ev.self_hosted else ("provider" if ev.batch_tier else "api")
        self.lines[ran] = self.lines.get(ran, 0) + 1
        self.cost_usd[ran] = self.cost_usd.get(ran, 0.0) + ev.cost_usd
        if ev.pool is not None and ev.gpu_seconds:
            self.gpu_seconds[ev.pool] = self.gpu_seconds.get(ev.pool, 0.0) + ev.gpu_seconds
            self._metrics.gpu_seconds.labels(ev.pool).inc(ev.gpu_seconds)
        self.tokens += ev.prompt_tokens + ev.completion_tokens
        price = self._price_of(ev)
        if price is None:
            self.unpriced_lines += 1
            return
        args = (price, ev.prompt_tokens, ev.completion_tokens, ev.cached_tokens)
        self.api_batch_usd += api_cost(*args, True)
        self.api_regular_usd += api_cost(*args, False)

    def report(self, pool_busy: dict[str, float]) -> dict[str, Any]:
        """The `batch` section of the live report; `pool_busy`: each pool's busy GPU-s."""
        actual = sum(self.cost_usd.values())
        marginal = actual - self.cost_usd.get("self_hosted", 0.0)  # idle GPU time: paid anyway
        gpu = sum(self.gpu_seconds.values())
        return {
            "lines": dict(self.lines),
            "tokens": self.tokens,
            "busy_gpu_seconds_filled": gpu,
            "busy_gpu_seconds_filled_by_pool": dict(self.gpu_seconds),
            "share_of_busy_gpu_seconds": {
                pool: (s / pool_busy[pool]) if pool_busy.get(pool) else None
                for pool, s in self.gpu_seconds.items()
            },
            "idle_cost_absorbed_usd": self.cost_usd.get("self_hosted", 0.0),
            "provider_batch_cost_usd": self.cost_usd.get("provider", 0.0),
            "api_cost_usd": self.cost_usd.get("api", 0.0),
            "actual_cost_usd": actual,
            "marginal_cost_usd": marginal,
            "same_lines_at_api_batch_usd": self.api_batch_usd,
            "same_lines_at_api_regular_usd": self.api_regular_usd,
            "saved_vs_api_batch_usd": self.api_batch_usd - marginal,
            "saved_vs_api_regular_usd": self.api_regular_usd - marginal,
            "unpriced_lines": self.unpriced_lines,
            "note": "idle_cost_absorbed_usd: GPU time already paid for (the pool's fixed "
            "cost) that batch lines put to work, so marginal_cost_usd leaves it out; saved_* "
            "compare the marginal cost with what the API would have charged for the same "
            "tokens",
        }
