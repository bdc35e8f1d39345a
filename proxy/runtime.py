"""Everything a request needs, built from one config: auth, router, backends, meter.

The app holds one Runtime at a time; a reload builds a new one and swaps the reference,
so in-flight requests finish on the runtime they started with. Metrics and GPU pool
accounts outlive a reload (counters must not restart, provisioned time keeps accruing).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from costing.prices import PriceTable
from proxy.backends import Backend, build_backend, upstream_caps
from proxy.config import Config
from proxy.metering.meter import Meter, PoolFactory
from proxy.metering.pricing import load_prices
from proxy.metering.prometheus import Metrics
from proxy.request.auth import Authenticator
from proxy.request.concurrency import Slots, TenantCaps, key_counter, tenant_counter
from proxy.request.dialect import backend_dialects
from proxy.request.redact import Redactor
from proxy.routing.control import ControlPlane
from proxy.routing.router import Router
from proxy.state import StateStore, build_state
from proxy.state.responses import ResponseStore

log = logging.getLogger("hybridgate")


class Runtime:
    def __init__(
        self,
        config: Config,
        metrics: Metrics,
        prices: PriceTable | None = None,
        meter: Meter | None = None,
        previous: Runtime | None = None,
        state: StateStore | None = None,
        pool_factory: PoolFactory | None = None,
        records_spend: bool = True,
    ) -> None:
        """`meter` and `previous` carry the books over a reload; `pool_factory` puts a new
        meter's pools on books shared by several processes; a worker of `serve --workers N`
        does not record spend (`records_spend=False`): its hub does, from the events."""
        self.config = config
        self.metrics = metrics
        self.started_at = time.time()
        self.prices = prices if prices is not None else load_prices(config)
        self.auth = Authenticator(config)
        self.redact = Redactor.from_config(config)  # masks our secrets in upstream errors
        # A reload (previous is set) takes over unchanged backends as they are: warm
        # connection pools, the same concurrency limit, one in-flight count across both.
        self.backends: dict[str, Backend] = {}
        self.slots: dict[str, Slots] = {}
        caps = upstream_caps(config.limits)  # changed caps rebuild the pools
        for name, b in config.backends.items():
            if (
                previous is not None
                and previous.config.backends.get(name) == b
                and upstream_caps(previous.config.limits) == caps
            ):
                self.backends[name] = previous.backends[name]
                self.slots[name] = previous.slots[name]
            else:
                self.backends[name] = build_backend(name, b, config.limits)
                self.slots[name] = Slots(b.max_concurrency)
        # Requests in flight per capped key and tenant: one count across a reload.
        self.caps: TenantCaps = TenantCaps(previous.caps.counts if previous is not None else None)
        self.inflight: dict[str, int] = previous.inflight if previous is not None else {}
        for name in config.backends:
            self.inflight.setdefault(name, 0)
        # Batch lines in flight (proxy/batch/): apart, so routing (spillover headroom,
        # least_busy) sees live requests only and batch work never pushes them to an API.
        self.batch_inflight: dict[str, int] = (
            previous.batch_inflight if previous is not None else {}
        )
        for name in config.backends:
            self.batch_inflight.setdefault(name, 0)
        self.requests_inflight = 0
        # With --workers: requests queued for each backend's slots in the workers, summed
        # by the hub (proxy/multiproc/hub.py) for its gauge; empty in a single process.
        self.worker_queued: dict[str, int] = {}
        self.meter = (
            meter if meter is not None else Meter(config, self.prices, pool_factory=pool_factory)
        )
        # Budgets, rate limits and durable spend: the app passes a store that outlives
        # runtimes (reload reconfigures it); a meter gets the store's sink when created.
        if state is None and previous is not None:
            state = previous.state
        self._owns_state: bool = state is None if previous is None else previous._owns_state
        self.state: StateStore = state if state is not None else build_state(config)
        self.state.configure(config)
        # Stored /v1/responses (proxy/state/responses.py), in the same store as the counters.
        self.responses = ResponseStore(self.state.remote, self.state.prefix)
        if meter is None and records_spend:
            self.meter.add_slow_sink(self.state.record)
        self.control: ControlPlane = ControlPlane(
            config, self.backends, metrics, previous.control if previous is not None else None
        )
        self.router = Router(
            config, self.prices, self.control, self.inflight, self.meter.marginal_selfhosted_cost
        )
        self._tenants = set(config.tenants) | {k.tenant for k in config.auth.keys} | {"default"}
        self.budgeted_tenants = frozenset(
            name for name, t in config.tenants.items() if t.monthly_api_budget_usd is not None
        )
        self._engine = {name: b.engine_kind for name, b in config.backends.items()}
        # Per backend: the dialects it speaks natively (one lookup per attempt decides
        # passthrough or translation).
        self.dialects = {name: backend_dialects(b) for name, b in config.backends.items()}
        # Backends whose native /v1/responses answers stay upstream (`previous_response_id`
        # and the item routes go there); the others' are kept and replayed by the proxy.
        self.response_keepers = frozenset(
            name for name, b in config.backends.items() if b.keeps_responses
        )
        for name in config.backends:
            metrics.inflight.labels(name).set_function(self._inflight_gauge(name))
            metrics.queued.labels(name).set_function(self._queued_gauge(name, self.slots[name]))
        counts = self.caps.counts
        for i, k in enumerate(config.auth.keys):
            if k.max_concurrency is not None:
                key = k.name or f"key{i}"
                metrics.key_inflight.labels(key).set_function(
                    _count_gauge(counts, key_counter(key))
                )
        for tenant, spec in config.tenants.items():
            if spec.max_concurrency is not None:
                metrics.tenant_inflight.labels(tenant).set_function(
                    _count_gauge(counts, tenant_counter(tenant))
                )
        for name, b in config.backends.items():
            kind = "self_hosted" if b.self_hosted else "api"
            metrics.backend_info.labels(name, kind, b.pool or "").set(1)

    def _inflight_gauge(self, name: str) -> Callable[[], float]:
        return lambda: self.inflight[name] + self.batch_inflight[name]

    def _queued_gauge(self, name: str, slots: Slots) -> Callable[[], float]:
        return lambda: slots.waiting + self.worker_queued.get(name, 0)

    def gauges(self) -> dict[str, int]:
        """What a worker reports for the hub to sum: requests in flight per backend, queued
        per backend (`queued|<backend>`) and per capped key and tenant (their counters)."""
        out = dict(self.inflight)
        for name, slots in self.slots.items():
            if slots.waiting:
                out["queued|" + name] = slots.waiting
        out.update(self.caps.counts)
        return out

    def tenant_label(self, tenant: str) -> str:
        return tenant if tenant in self._tenants else "other"

    def engine_kind(self, backend: str) -> str:
        return self._engine[backend]

    # Hooks for health and breakers: the request path reports, the control plane decides.
    def on_failure(self, backend: str, reason: str) -> None:
        self.control.on_failure(backend, reason)

    def on_success(self, backend: str, ttft_s: float | None = None) -> None:
        self.control.on_success(backend, ttft_s)

    def admit(self, backend: str) -> bool:
        """May an attempt go to this backend now? (Breaker and health; takes a probe slot.)"""
        return self.control.admit(backend)

    def backend_state(self, backend: str) -> str:
        """up | down | unknown: what /health/ready reports."""
        return self.control.state(backend)

    async def start(self) -> None:
        for b in self.backends.values():
            await b.start()
        await self.meter.start()
        await self.control.start()
        if self._owns_state:
            await self.state.start()

    async def retire(self, successor: Runtime) -> None:
        """After a reload, once this runtime's requests are done: stop what it owns alone.

        The meter, metrics and the backends the successor took over carry on.
        """
        await self.control.stop()
        for name, b in self.backends.items():
            if successor.backends.get(name) is not b:
                try:
                    await b.close()
                except Exception:
                    log.exception("closing backend %s", name)

    async def stop(self) -> None:
        await self.control.stop()
        await self.meter.stop()
        if self._owns_state:
            await self.state.stop()
        for b in self.backends.values():
            try:
                await b.close()
            except Exception:  # closing must not stop the others from closing
                log.exception("closing backend %s", b.name)

    def readiness(self) -> dict[str, Any]:
        backends = {name: self.backend_state(name) for name in self.config.backends}
        aliases = {}
        for alias, spec in self.config.models.items():
            aliases[alias] = any(backends[t.backend] != "down" for t in spec.targets)
        return {
            "ready": all(aliases.values()),
            "backends": backends,
            "aliases": aliases,
            "details": self.control.details(),
            "state": self.state.health(),
        }


def _count_gauge(counts: dict[str, int], counter: str) -> Callable[[], float]:
    """A gauge function reading one in-flight counter (a function per counter, not a
    lambda in a loop: each reads its own)."""
    return lambda: counts.get(counter, 0)
