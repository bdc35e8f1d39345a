"""Backends move a request to one upstream and hand back its response; nothing else.

They know nothing of routing, metering or budgets (docs/architecture.md, "Modules").
"""

from __future__ import annotations

from proxy.backends.base import Backend, UpstreamFailure, UpstreamResponse
from proxy.config import Backend as BackendConfig
from proxy.config import Limits


def build_backend(name: str, cfg: BackendConfig, limits: Limits | None = None) -> Backend:
    """The Backend for a config entry; litellm is imported only if such a backend exists.
    `limits` caps what an upstream answer may hold (its upstream_max_* keys)."""
    if cfg.type == "openai":
        from proxy.backends.h1client import Caps
        from proxy.backends.openai import OpenAIBackend

        caps = Caps() if limits is None else upstream_caps(limits)
        return OpenAIBackend(name, cfg, caps)
    if cfg.type == "anthropic":
        from proxy.backends.anthropic import AnthropicBackend
        from proxy.backends.h1client import Caps

        return AnthropicBackend(name, cfg, Caps() if limits is None else upstream_caps(limits))
    from proxy.backends.litellm import LiteLLMBackend

    return LiteLLMBackend(name, cfg)


def upstream_caps(limits: Limits) -> tuple[int, int, int]:
    """The `limits:` keys an upstream connection pool is built with (a reload that changes
    them rebuilds the pools)."""
    return (
        limits.upstream_max_head_bytes,
        limits.upstream_max_headers,
        limits.upstream_max_body_bytes,
    )


__all__ = ["Backend", "UpstreamFailure", "UpstreamResponse", "build_backend"]
