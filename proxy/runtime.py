"""Everything a request needs, built from one config: auth, router, backends, meter.

The app holds one Runtime at a time; a reload builds a new one and swaps the reference,
so in-flight requests finish on the runtime they started with. Metrics and GPU pool
accounts outlive a reload (counters must not restart, provisioned time keeps accruing).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from costing.prices import PriceTable
from proxy.auth import Authenticator
from proxy.backends import Backend, build_backend
from proxy.config import Config
from proxy.metering.meter import Meter
from proxy.metrics import Metrics
from proxy.pricing import load_prices
from proxy.router import Router

log = logging.getLogger("hybridgate")


class Runtime:
    def __init__(
        self,
        config: Config,
        metrics: Metrics,
        prices: PriceTable | None = None,
        meter: Meter | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.started_at = time.time()
        self.prices = prices if prices is not None else load_prices(config)
        self.auth = Authenticator(config)
        self.router = Router(config)
        self.backends: dict[str, Backend] = {
            name: build_backend(name, b) for name, b in config.backends.items()
        }
        self.semaphores = {
            name: asyncio.Semaphore(b.max_concurrency) for name, b in config.backends.items()
        }
        self.inflight: dict[str, int] = dict.fromkeys(config.backends, 0)
        self.requests_inflight = 0
        self.meter = meter if meter is not None else Meter(config, self.prices)
        self._tenants = set(config.tenants) | {k.tenant for k in config.auth.keys} | {"default"}
        self._engine = {name: b.engine_kind for name, b in config.backends.items()}
        for name in config.backends:
            metrics.inflight.labels(name).set_function(lambda n=name: self.inflight[n])
            metrics.backend_up.labels(name).set(1)
            metrics.breaker_open.labels(name).set(0)
        for name, b in config.backends.items():
            kind = "self_hosted" if b.self_hosted else "api"
            metrics.backend_info.labels(name, kind, b.pool or "").set(1)

    def tenant_label(self, tenant: str) -> str:
        return tenant if tenant in self._tenants else "other"

    def engine_kind(self, backend: str) -> str:
        return self._engine[backend]

    # Hooks for health and breakers: the request path reports, the control plane decides.
    def on_failure(self, backend: str, reason: str) -> None:
        pass

    def on_success(self, backend: str) -> None:
        pass

    def backend_state(self, backend: str) -> str:
        """up | down | unknown: what /health/ready reports."""
        return "unknown"

    async def start(self) -> None:
        for b in self.backends.values():
            await b.start()
        await self.meter.start()

    async def stop(self) -> None:
        await self.meter.stop()
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
        return {"ready": all(aliases.values()), "backends": backends, "aliases": aliases}
