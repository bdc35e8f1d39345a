"""The control plane: what is live about each backend, in one place.

Circuit breakers (fed by the request path), active health checks and engine metrics
(fed by background tasks) and a TTFT moving average. The router reads it to plan;
the request path reports outcomes to it through the Runtime's hooks. A reload hands
the state of unchanged backends to the new control plane, so an open breaker stays
open and a learned latency is not forgotten.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from proxy.config import Config
from proxy.metering.prometheus import Metrics
from proxy.routing.breaker import CLOSED, NOT_BACKEND_FAULTS, OPEN, CircuitBreaker
from proxy.routing.engine_metrics import EngineMetricsReader
from proxy.routing.health import DOWN, UNKNOWN, UP, BackendHealth, HealthChecker

log = logging.getLogger("hybridgate.control")

TTFT_ALPHA = 0.3  # weight of the newest sample in the moving average
TTFT_STALE_S = 60.0  # an average this old is forgotten, so a once-slow backend is retried


class ControlPlane:
    def __init__(
        self,
        config: Config,
        backends: dict[str, Any],
        metrics: Metrics,
        previous: ControlPlane | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`clock` times the breakers this plane creates (tests inject one to skip cooldowns)."""
        self.config = config
        self.metrics = metrics
        self.breakers: dict[str, CircuitBreaker] = {}
        self.ttft: dict[str, tuple[float, float]] = {}  # backend -> (ewma seconds, at)
        self.last_ok: dict[str, float] = {}
        for name, bcfg in config.backends.items():
            cfg = bcfg.breaker or config.breaker
            kept = previous is not None and previous.config.backends.get(name) == bcfg
            if kept:
                assert previous is not None
                breaker = previous.breakers[name]
                breaker.configure(cfg, self._breaker_changed)
                if name in previous.ttft:
                    self.ttft[name] = previous.ttft[name]
                if name in previous.last_ok:
                    self.last_ok[name] = previous.last_ok[name]
            else:
                breaker = CircuitBreaker(name, cfg, on_change=self._breaker_changed, clock=clock)
            self.breakers[name] = breaker
        self.health: HealthChecker = HealthChecker(
            config.health_checks,
            backends,
            dict(config.backends),
            self._refresh,
            previous.health if previous is not None else None,
        )
        self.engines: EngineMetricsReader = EngineMetricsReader(
            config.engine_metrics,
            backends,
            dict(config.backends),
            previous.engines if previous is not None else None,
        )
        # Backends whose breaker is not closed or whose health checks fail: while this is
        # empty (the usual case) the router skips its availability pass entirely.
        self.impaired: set[str] = set()
        for name in config.backends:
            self._refresh(name)
            b, h = self.breakers[name], self.health.state[name]
            metrics.breaker_open.labels(name).set_function(_open_gauge(b))
            metrics.backend_up.labels(name).set_function(_up_gauge(b, h))

    # ------------------------------------------------------------ routing questions

    def available(self, backend: str) -> bool:
        """May the router plan this backend? (No side effect.)"""
        return self.health.state[backend].status != DOWN and self.breakers[backend].available()

    def admit(self, backend: str) -> bool:
        """May an attempt go to this backend now? Takes the half-open probe slot."""
        return self.health.state[backend].status != DOWN and self.breakers[backend].allow()

    def why_unavailable(self, backend: str) -> str:
        if self.health.state[backend].status == DOWN:
            err = self.health.state[backend].last_error
            return f"{backend}: failing health checks ({err})" if err else f"{backend}: down"
        b = self.breakers[backend]
        if b.state == OPEN:
            return f"{backend}: circuit open for {b.retry_after():.0f}s more"
        return f"{backend}: circuit half-open, probing"

    def retry_after(self, backends: list[str]) -> float:
        """Seconds until the first of these backends could be tried again."""
        waits = [self.breakers[b].retry_after() for b in backends]
        if any(self.health.state[b].status == DOWN for b in backends):
            waits.append(self.config.health_checks.interval_s)
        return min(waits) if waits else 0.0

    def ttft_ewma(self, backend: str, now: float) -> float:
        """Moving average of time to first byte, or 0.0 when unknown or stale (explore)."""
        entry = self.ttft.get(backend)
        if entry is None or now - entry[1] > TTFT_STALE_S:
            return 0.0
        return entry[0]

    # ------------------------------------------------------------ reports

    def on_failure(self, backend: str, reason: str) -> None:
        if reason in NOT_BACKEND_FAULTS:
            return
        b = self.breakers.get(backend)
        if b is not None:
            b.record_failure()

    def on_success(self, backend: str, ttft_s: float | None = None) -> None:
        b = self.breakers.get(backend)
        if b is None:
            return
        b.record_success()
        now = time.monotonic()
        self.last_ok[backend] = now
        if ttft_s is not None and ttft_s >= 0:
            old = self.ttft.get(backend)
            ewma = ttft_s if old is None else old[0] + TTFT_ALPHA * (ttft_s - old[0])
            self.ttft[backend] = (ewma, now)

    # ------------------------------------------------------------ state for /health/ready

    def state(self, backend: str) -> str:
        """up | down | unknown."""
        health = self.health.state[backend].status
        if health == DOWN or self.breakers[backend].state != CLOSED:
            return DOWN
        if health == UP or backend in self.last_ok:
            return UP
        return UNKNOWN

    def details(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.config.backends:
            b = self.breakers[name]
            entry: dict[str, Any] = {
                "state": self.state(name),
                "health": self.health.state[name].to_json(),
                "breaker": {
                    "state": b.state,
                    "consecutive_failures": b.consecutive_failures,
                    "retry_after_s": round(b.retry_after(), 3),
                },
            }
            engine = self.engines.details(name)
            if engine is not None:
                entry["engine"] = engine
            out[name] = entry
        return out

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self.health.start()
        await self.engines.start()

    async def stop(self) -> None:
        await self.health.stop()
        await self.engines.stop()

    # ------------------------------------------------------------ logging of changes

    def _refresh(self, backend: str) -> None:
        if self.breakers[backend].state != CLOSED or self.health.state[backend].status == DOWN:
            self.impaired.add(backend)
        else:
            self.impaired.discard(backend)

    def _breaker_changed(self, backend: str, state: str) -> None:
        self._refresh(backend)
        b = self.breakers.get(backend)
        if state == OPEN and b is not None:
            log.warning(
                "circuit for backend %s opened (%d consecutive failures); retry in %.0fs",
                backend,
                b.consecutive_failures,
                b.cfg.cooldown_s,
            )
        elif state == CLOSED:
            log.warning("circuit for backend %s closed: the probe succeeded", backend)


# Gauge functions, one per backend (a function, not a lambda in a loop: each reads its own).
def _open_gauge(b: CircuitBreaker) -> Callable[[], float]:
    return lambda: float(b.state != CLOSED)


def _up_gauge(b: CircuitBreaker, h: BackendHealth) -> Callable[[], float]:
    return lambda: float(h.status != DOWN and b.state == CLOSED)
