"""`type: litellm` backends: providers that do not speak OpenAI's API (Anthropic, Gemini, ...).

litellm is used as a translator only: retries off (failover is ours), imported lazily
(it costs seconds and ~190 MB, so a config without such a backend never pays for it),
with its local price map so it never reaches for the network. Its answers are turned back
into OpenAI-shaped bytes so the request path treats every backend alike.
"""

from __future__ import annotations

import asyncio
import importlib
import os
from collections.abc import AsyncIterator
from typing import Any

import orjson

from proxy.backends.base import UpstreamFailure, UpstreamResponse
from proxy.config import Backend as BackendConfig

_litellm: Any = None
_closing: set[asyncio.Task[Any]] = set()


def _import_litellm() -> Any:
    global _litellm
    if _litellm is None:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        os.environ.setdefault("LITELLM_LOG", "ERROR")
        _litellm = importlib.import_module("litellm")
        _litellm.telemetry = False
        _litellm.suppress_debug_info = True
    return _litellm


def _to_bytes(obj: Any) -> bytes:
    data = obj.model_dump() if hasattr(obj, "model_dump") else obj
    return orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)


class StaticUpstream:
    """A complete answer already in memory (litellm returns whole objects)."""

    __slots__ = ("_body", "headers", "status")
    complete = False  # the relay does not peek; it reads to the end

    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self._body = body
        self.headers: list[tuple[bytes, bytes]] = []

    async def read(self) -> bytes:
        return self._body

    async def chunks(self) -> AsyncIterator[bytes]:
        yield self._body

    def close(self) -> None:
        pass


class LiteLLMStream:
    """litellm's stream of chunk objects, as OpenAI SSE bytes."""

    __slots__ = ("_stream", "headers", "status")
    complete = False  # the relay does not peek; it reads to the end

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.status = 200
        self.headers: list[tuple[bytes, bytes]] = []

    async def read(self) -> bytes:
        return b"".join([c async for c in self.chunks()])

    async def chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield b"data: " + _to_bytes(chunk) + b"\n\n"
        yield b"data: [DONE]\n\n"

    def close(self) -> None:
        aclose = getattr(self._stream, "aclose", None)
        if aclose is not None:
            task = asyncio.ensure_future(aclose())
            _closing.add(task)
            task.add_done_callback(_closing.discard)


def _error(status: int, message: str, type_: str | None = None) -> StaticUpstream:
    body = orjson.dumps(
        {
            "error": {
                "message": message,
                "type": type_ or "upstream_error",
                "param": None,
                "code": None,
            }
        }
    )
    return StaticUpstream(status, body)


class LiteLLMBackend:
    def __init__(self, name: str, cfg: BackendConfig) -> None:
        self.name = name
        self.cfg = cfg
        self.provider = cfg.provider or "openai"

    async def start(self) -> None:
        # Import off the event loop, before the first request needs it.
        await asyncio.to_thread(_import_litellm)

    async def send(
        self, path: str, body: bytes, stream: bool, extra: bytes = b""
    ) -> UpstreamResponse:
        """`extra` is never given: litellm backends speak the OpenAI dialect only."""
        litellm = _import_litellm()
        data = orjson.loads(body)
        kwargs = dict(data)
        kwargs["model"] = f"{self.provider}/{data['model']}"
        kwargs["num_retries"] = 0
        kwargs["max_retries"] = 0
        kwargs["timeout"] = self.cfg.timeouts.read_s
        if self.cfg.api_key is not None:
            kwargs["api_key"] = self.cfg.api_key.get_secret_value()
        if self.cfg.base_url:
            kwargs["api_base"] = self.cfg.base_url
        if self.cfg.headers:
            kwargs["extra_headers"] = dict(self.cfg.headers)
        try:
            if path == "/chat/completions":
                result = await litellm.acompletion(**kwargs)
            elif path == "/embeddings":
                kwargs.pop("stream", None)
                result = await litellm.aembedding(**kwargs)
            elif path == "/completions":
                result = await litellm.atext_completion(**kwargs)
            else:
                return _error(404, f"backend '{self.name}' does not serve {path}")
        except Exception as exc:  # litellm maps every provider error to its own classes
            return self._map_error(exc)
        if stream and path != "/embeddings":
            return LiteLLMStream(result)
        return StaticUpstream(200, _to_bytes(result))

    def _map_error(self, exc: Exception) -> StaticUpstream:
        litellm = _import_litellm()
        if isinstance(exc, litellm.Timeout):
            raise UpstreamFailure(self.name, "timeout", "provider timeout") from exc
        if isinstance(exc, litellm.APIConnectionError):
            raise UpstreamFailure(self.name, "connect_error", "provider unreachable") from exc
        status = getattr(exc, "status_code", None) or 500
        message = str(getattr(exc, "message", "") or exc)
        # Anthropic's 529 "overloaded" surfaces as a 500 whose text says so: keep it retryable.
        if status == 500 and "overloaded" in message.lower():
            status = 529
        # Never echo a key back: provider messages can quote the credential they rejected.
        if self.cfg.api_key is not None:
            message = message.replace(self.cfg.api_key.get_secret_value(), "***")
        return _error(int(status), f"{self.name}: {message[:500]}")

    async def close(self) -> None:
        pass
