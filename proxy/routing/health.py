"""Active health checks: a background probe per backend marks it up or down.

A self-hosted engine (vLLM, llama.cpp) is probed at `GET /health` on its server root;
vLLM answers 503 there when its engine is dead even though the HTTP server still
accepts requests. A pay-per-token API is probed at `GET {base_url}/models` (Anthropic's
at `{base_url}/v1/models`). Any answer below 500 counts as up (an API that answers 401
to a key without the models scope is still reachable); 5xx, connection errors and
timeouts count as failures.

`failure_threshold` consecutive failures mark a backend down, `success_threshold`
successes mark it up again. Down backends are left out of routing plans. Nothing
here runs on the request path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from proxy.config import Backend as BackendConfig
from proxy.config import HealthChecks
from proxy.routing.periodic import PerBackendLoops

log = logging.getLogger("hybridgate.health")

UP = "up"
DOWN = "down"
UNKNOWN = "unknown"


def health_url(backend: Any, cfg: BackendConfig) -> str | None:
    """The URL to probe, or None when the backend cannot be probed (no HTTP base URL)."""
    if cfg.base_url is None or not hasattr(backend, "get"):
        return None
    if cfg.health_path:
        if cfg.health_path.startswith(("http://", "https://")):
            return cfg.health_path
        return backend.root_url + "/" + cfg.health_path.lstrip("/")
    if cfg.self_hosted and cfg.engine_kind in ("vllm", "llamacpp"):
        return backend.root_url + "/health"
    base = cfg.base_url.rstrip("/")
    if cfg.type == "anthropic" and not base.endswith("/v1"):
        base += "/v1"  # Anthropic's API root is the host; its models list is /v1/models
    return base + "/models"


class BackendHealth:
    """The health of one backend as the probes have seen it."""

    __slots__ = ("checks", "failures", "last_checked", "last_error", "status", "successes", "url")

    def __init__(self, url: str | None) -> None:
        self.url = url
        self.status = UNKNOWN
        self.failures = 0
        self.successes = 0
        self.checks = 0
        self.last_checked: float | None = None  # unix seconds
        self.last_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "checked": self.url is not None,
            "last_checked": self.last_checked,
            "last_error": self.last_error,
        }


class HealthChecker:
    def __init__(
        self,
        cfg: HealthChecks,
        backends: dict[str, Any],
        configs: dict[str, BackendConfig],
        on_change: Callable[[str], None],
        previous: HealthChecker | None = None,
    ) -> None:
        self.cfg = cfg
        self._backends = backends
        self._on_change = on_change
        self.state: dict[str, BackendHealth] = {}
        for name, bcfg in configs.items():
            url = health_url(backends[name], bcfg) if cfg.enabled else None
            old = previous.state.get(name) if previous is not None else None
            if old is not None and old.url == url:
                self.state[name] = old  # the same probe: what it knew still holds
            else:
                self.state[name] = BackendHealth(url)
        self._loops = PerBackendLoops("health check", cfg.interval_s, self.check)

    async def start(self) -> None:
        self._loops.start(name for name, h in self.state.items() if h.url is not None)

    async def stop(self) -> None:
        await self._loops.stop()

    async def check(self, name: str) -> bool:
        """Probe once and update the state; True if the probe succeeded."""
        h = self.state[name]
        assert h.url is not None
        error: str | None = None
        try:
            status, _ = await self._backends[name].get(h.url, self.cfg.timeout_s)
            if status >= 500:
                error = f"HTTP {status}"
        except TimeoutError:
            error = "timeout"
        except Exception as exc:
            error = type(exc).__name__
        h.checks += 1
        h.last_checked = time.time()
        h.last_error = error
        if error is None:
            h.failures = 0
            h.successes += 1
            if h.status != UP and h.successes >= self.cfg.success_threshold:
                self._set(name, h, UP)
        else:
            h.successes = 0
            h.failures += 1
            if h.status != DOWN and h.failures >= self.cfg.failure_threshold:
                self._set(name, h, DOWN)
        return error is None

    def _set(self, name: str, h: BackendHealth, status: str) -> None:
        previous = h.status
        h.status = status
        if previous != UNKNOWN or status == DOWN:
            log.warning("backend %s is %s (health check: %s)", name, status, h.last_error or "ok")
        self._on_change(name)
