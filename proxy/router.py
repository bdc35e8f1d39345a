"""Plans the ordered attempts for a request: which backends, in which order, with which model.

The router knows nothing of HTTP: it sees the alias, the request's routing facts, and live
state (in-flight counts, breakers, health), and returns targets in the order to try them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proxy.config import Config, ModelAlias, Target


@dataclass(frozen=True, slots=True)
class PlannedTarget:
    backend: str
    model: str
    self_hosted: bool
    context_window: int | None
    target: Target


@dataclass(slots=True)
class RouteRequest:
    """What routing needs to know about a request (parsed once, minimally)."""

    alias: str
    tenant: str
    headers: dict[bytes, bytes]
    body: dict[str, Any]
    est_prompt_tokens: int


class Router:
    def __init__(self, config: Config) -> None:
        self.config = config
        self._targets: dict[str, list[PlannedTarget]] = {}
        for alias, spec in config.models.items():
            self._targets[alias] = [self._planned(t) for t in spec.targets]

    def _planned(self, t: Target) -> PlannedTarget:
        b = self.config.backends[t.backend]
        return PlannedTarget(
            t.backend, t.model, b.pool is not None, t.context_window or b.context_window, t
        )

    def alias(self, name: str) -> ModelAlias | None:
        return self.config.models.get(name)

    def plan(self, req: RouteRequest) -> list[PlannedTarget]:
        """Targets in the order to try them (priority: as configured)."""
        return self._targets[req.alias]
