"""Shared state: tenant API budgets, per-key rate limits and durable spend (docs/state.md).

`build_state(config)` picks the backend from `state.url`: `memory://` (one process) or
`redis://` / `rediss://` / `unix://` (several replicas, durable across restarts).
"""

from __future__ import annotations

from proxy.config import Config
from proxy.state.store import StateStore


def build_state(config: Config) -> StateStore:
    url = config.state.url
    if url.startswith("memory://"):
        from proxy.state.memory import MemoryRemote

        return StateStore(config, MemoryRemote())
    from proxy.state.redis import RedisRemote

    return StateStore(config, RedisRemote(url, config.state.prefix, config.state.timeout_s))


__all__ = ["StateStore", "build_state"]
