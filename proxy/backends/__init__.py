"""Backends move a request to one upstream and hand back its response; nothing else.

They know nothing of routing, metering or budgets (docs/architecture.md, "Modules").
"""

from __future__ import annotations

from proxy.backends.base import Backend, UpstreamFailure, UpstreamResponse
from proxy.config import Backend as BackendConfig


def build_backend(name: str, cfg: BackendConfig) -> Backend:
    """The Backend for a config entry; litellm is imported only if such a backend exists."""
    if cfg.type == "openai":
        from proxy.backends.openai import OpenAIBackend

        return OpenAIBackend(name, cfg)
    from proxy.backends.litellm import LiteLLMBackend

    return LiteLLMBackend(name, cfg)


__all__ = ["Backend", "UpstreamFailure", "UpstreamResponse", "build_backend"]
