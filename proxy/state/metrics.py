"""Prometheus series of the state store, computed at scrape time from its local view."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from proxy.state.budgets import NANO
from proxy.state.store import StateStore


class StateCollector(Collector):
    def __init__(self, store: StateStore) -> None:
        self._store = store

    def collect(self) -> Iterable[Any]:
        store = self._store
        budget = GaugeMetricFamily(
            "hybridgate_tenant_budget_usd",
            "Monthly API budget of the tenant (tenants.<name>.monthly_api_budget_usd).",
            labels=["tenant"],
        )
        remaining = GaugeMetricFamily(
            "hybridgate_tenant_budget_remaining_usd",
            "Budget minus month-to-date API spend (UTC month) as this replica sees it; "
            "negative by the overshoot when the budget was overrun.",
            labels=["tenant"],
        )
        for b in store.budgets.by_tenant.values():
            budget.add_metric([b.tenant], b.limit_nano / NANO)
            remaining.add_metric([b.tenant], (b.limit_nano - store.api_spend_nano(b.tenant)) / NANO)
        failures = CounterMetricFamily(
            "hybridgate_state_flush_failures",
            "Sync round trips to the state backend (flush or refresh) that failed; the "
            "batch is kept and retried, so a failure delays sharing, it loses nothing.",
            value=store.flush_failures,
        )
        degraded = GaugeMetricFamily(
            "hybridgate_state_degraded",
            "1 while the state backend is unreachable and the replica runs on local state.",
            value=1 if store.degraded else 0,
        )
        unsynced = GaugeMetricFamily(
            "hybridgate_state_unsynced_events",
            "UsageEvents recorded locally whose spend the state backend has not acknowledged.",
            value=store.ledger.unsynced,
        )
        yield from (budget, remaining, failures, degraded, unsynced)
