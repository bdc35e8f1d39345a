"""Dialects on the request path: which wire format each route and each backend speaks, and
the glue that runs proxy/dialects' translations for one attempt (docs/dialects.md).

The decision costs one dict lookup per attempt (`Runtime.dialects[backend]`, a frozenset):
when the client's dialect is in it, nothing here runs and the body goes through as bytes.
Otherwise a `Translation` turns the request into the target's dialect and its answer
(JSON, SSE event by event, errors) back into the client's.
"""

from __future__ import annotations

from typing import Any

import orjson

from proxy.backends.base import UpstreamRefused
from proxy.config import Backend as BackendConfig
from proxy.dialects import Dialect, TokenUsage, TranslationError
from proxy.dialects.anthropic_request import anthropic_to_openai_chat, openai_chat_to_anthropic
from proxy.dialects.anthropic_response import (
    anthropic_error_body,
    anthropic_error_to_openai,
    anthropic_to_openai_response,
    openai_error_to_anthropic,
    openai_to_anthropic_response,
    openai_usage,
    usage_from_anthropic,
    usage_from_openai,
)
from proxy.dialects.anthropic_stream import (
    AnthropicToOpenAIStream,
    OpenAIToAnthropicStream,
    SSESplitter,
)
from proxy.request.errors import ProxyError
from proxy.request.sse import MAX_EVENT

# The dialect of each ingress endpoint (handler.ENDPOINTS' values).
ROUTE_DIALECT: dict[str, Dialect] = {
    "chat": Dialect.OPENAI_CHAT,
    "completions": Dialect.OPENAI_COMPLETIONS,
    "embeddings": Dialect.OPENAI_EMBEDDINGS,
    "messages": Dialect.ANTHROPIC_MESSAGES,
    "count_tokens": Dialect.ANTHROPIC_MESSAGES,
    "responses": Dialect.OPENAI_RESPONSES,
}
_FAMILY: dict[str, frozenset[Dialect]] = {
    "openai": frozenset(
        {Dialect.OPENAI_CHAT, Dialect.OPENAI_COMPLETIONS, Dialect.OPENAI_EMBEDDINGS}
    ),
    "anthropic": frozenset({Dialect.ANTHROPIC_MESSAGES}),
    "responses": frozenset({Dialect.OPENAI_RESPONSES}),
}


def backend_dialects(cfg: BackendConfig) -> frozenset[Dialect]:
    """The dialects a backend serves natively (its `speaks:`, or its type's)."""
    out: frozenset[Dialect] = frozenset()
    for family in cfg.families:
        out |= _FAMILY[family]
    return out


def anthropic_proxy_error(err: ProxyError) -> bytes:
    """One of the proxy's own errors in Anthropic's shape, for the /v1/messages routes."""
    return orjson.dumps(anthropic_error_body(err.status, err.message))


def to_anthropic_error(status: int, openai_body: bytes) -> bytes:
    """An (already normalised, redacted) OpenAI-shaped error body in Anthropic's shape."""
    return orjson.dumps(openai_error_to_anthropic(status, openai_body))


def translation_refused(exc: TranslationError, anthropic_client: bool) -> ProxyError:
    """A field the target cannot express: a 400 to the client in its own shape."""
    err = PreformattedError(
        exc.status,
        exc.message,
        orjson.dumps(exc.anthropic_error() if anthropic_client else exc.openai_error()),
    )
    err.param = exc.param
    if exc.status >= 500:
        err.outcome = "error"
    return err


class PreformattedError(ProxyError):
    """A ProxyError whose body is already in the client's shape."""

    def __init__(self, status: int, message: str, body: bytes) -> None:
        super().__init__(status, message, code="unsupported_parameter")
        self._body = body

    def body(self) -> bytes:
        return self._body


class Translation:
    """One (client dialect → target dialect) pair. Stateless: one instance per pair."""

    __slots__ = ("anthropic_client", "path")

    def __init__(self, anthropic_client: bool) -> None:
        self.anthropic_client = anthropic_client
        # The target's path: OpenAI chat for Anthropic clients, Anthropic's Messages for
        # OpenAI chat clients (AnthropicBackend prefixes /v1 as Anthropic's API has it).
        self.path = "/chat/completions" if anthropic_client else "/messages"

    def request(self, data: dict[str, Any], model: str, cfg: BackendConfig, target: Any) -> bytes:
        """The client's body in the target's dialect, with the upstream model."""
        if self.anthropic_client:
            out = anthropic_to_openai_chat(data, top_k="pass" if cfg.pool else "drop")
        else:
            default = getattr(target, "default_max_tokens", None) or cfg.default_max_tokens
            out = openai_chat_to_anthropic(data, default)
        out["model"] = model
        return orjson.dumps(out)

    def answer(self, raw: bytes, thinking: str) -> tuple[bytes, TokenUsage]:
        """A JSON answer in the client's dialect, and its usage for the meter."""
        data = orjson.loads(raw)
        if not isinstance(data, dict):
            raise TranslationError("the upstream's answer is not a JSON object", status=502)
        if self.anthropic_client:
            usage = usage_from_openai(data.get("usage"))
            return orjson.dumps(openai_to_anthropic_response(data, thinking)), usage  # type: ignore[arg-type]
        usage = usage_from_anthropic(data.get("usage"))
        return orjson.dumps(anthropic_to_openai_response(data, None, thinking)), usage  # type: ignore[arg-type]

    def error(self, status: int, raw: bytes) -> bytes:
        """An Anthropic upstream's error body in OpenAI's shape (before normalising, so
        its type survives as the `code`). OpenAI-shaped errors are normalised as they are."""
        if self.anthropic_client:
            return raw
        return orjson.dumps(anthropic_error_to_openai(status, raw))

    def stream(self, want_usage: bool, thinking: str) -> TranslatedStream:
        if self.anthropic_client:
            return TranslatedStream(OpenAIToAnthropicStream(thinking))  # type: ignore[arg-type]
        return TranslatedStream(AnthropicToOpenAIStream(want_usage, None, thinking))  # type: ignore[arg-type]


TO_OPENAI_CHAT = Translation(anthropic_client=True)
TO_ANTHROPIC = Translation(anthropic_client=False)


def translation_for(client: Dialect, target: frozenset[Dialect]) -> Translation | None:
    """How a `client` request reaches a target speaking `target` (not including it), or
    None when no translation exists (embeddings to an Anthropic-only backend, ...)."""
    if client is Dialect.ANTHROPIC_MESSAGES and Dialect.OPENAI_CHAT in target:
        return TO_OPENAI_CHAT
    if client is Dialect.OPENAI_CHAT and Dialect.ANTHROPIC_MESSAGES in target:
        return TO_ANTHROPIC
    return None


def _openai_usage_or_none(t: TokenUsage) -> dict[str, Any] | None:
    if not (t.input_tokens or t.output_tokens or t.cache_read_tokens or t.cache_creation_tokens):
        return None
    return openai_usage(t)


class TranslatedStream:
    """A stream translator behind UsageTap's face (feed/flush/saw_done/saw_error/usage/
    content_events), so the relay loop is the same whatever the dialects."""

    __slots__ = ("_t", "content_events")

    def __init__(self, translator: AnthropicToOpenAIStream | OpenAIToAnthropicStream) -> None:
        self._t = translator
        self.content_events = 0

    def feed(self, data: bytes) -> bytes:
        out = self._t.feed(data)
        if out:
            self.content_events += 1
        return out

    def flush(self) -> bytes:
        return self._t.tail()

    @property
    def saw_done(self) -> bool:
        return self._t.done and self._t.error is None

    @property
    def saw_error(self) -> bool:
        return self._t.error is not None

    def usage(self) -> dict[str, Any] | None:
        return _openai_usage_or_none(self._t.usage)


_STOP = b"message_stop"
_USAGE = b'"usage"'
_ERROR = b'"error"'


class AnthropicTap:
    """Anthropic SSE passed through as bytes (complete events only), its usage read from
    message_start / message_delta (cumulative counts: the last wins) for the meter."""

    __slots__ = (
        "_buf",
        "_split",
        "_usage",
        "content_events",
        "max_event",
        "saw_done",
        "saw_error",
    )

    def __init__(self, max_event: int = MAX_EVENT) -> None:
        self.max_event = max_event
        self._buf = b""
        self._split = SSESplitter()
        self._usage = TokenUsage()
        self.content_events = 0
        self.saw_done = False
        self.saw_error = False

    def feed(self, data: bytes) -> bytes:
        buf = self._buf + data if self._buf else data
        end = buf.rfind(b"\n\n")
        if end >= 0:
            end += 2
        crlf = buf.rfind(b"\r\n\r\n")
        if crlf >= 0 and crlf + 4 > end:
            end = crlf + 4
        if end < 0:
            if len(buf) > self.max_event:
                raise UpstreamRefused(
                    f"an event of the stream exceeds {self.max_event} bytes "
                    "(limits.upstream_max_event_bytes)"
                )
            self._buf = buf
            return b""
        out, self._buf = buf[:end], buf[end:]
        self._look(out)
        return out

    def flush(self) -> bytes:
        out, self._buf = self._buf, b""
        if out:
            self._look(out + b"\n\n")
        return out

    def _look(self, events: bytes) -> None:
        self.content_events += events.count(b"content_block_delta") // 2 or 0
        if _USAGE in events or _STOP in events or _ERROR in events:
            for payload in self._split.feed(events):
                self._event(payload)

    def _event(self, payload: bytes) -> None:
        try:
            ev = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        if not isinstance(ev, dict):
            return
        kind = ev.get("type")
        if kind == "message_start":
            msg = ev.get("message")
            self._update(msg.get("usage") if isinstance(msg, dict) else None)
        elif kind == "message_delta":
            self._update(ev.get("usage"))
        elif kind == "message_stop":
            self.saw_done = True
        elif kind == "error":
            self.saw_error = True

    def _update(self, u: Any) -> None:
        if not isinstance(u, dict):
            return
        t = self._usage
        for key, attr in (
            ("input_tokens", "input_tokens"),
            ("output_tokens", "output_tokens"),
            ("cache_read_input_tokens", "cache_read_tokens"),
            ("cache_creation_input_tokens", "cache_creation_tokens"),
        ):
            v = u.get(key)
            if type(v) is int and v >= 0:
                setattr(t, attr, v)

    def usage(self) -> dict[str, Any] | None:
        return _openai_usage_or_none(self._usage)


def anthropic_body_usage(raw: bytes) -> dict[str, Any] | None:
    """The usage of a passed-through Anthropic JSON answer, in OpenAI's terms for the meter."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    return _openai_usage_or_none(usage_from_anthropic(data.get("usage")))
