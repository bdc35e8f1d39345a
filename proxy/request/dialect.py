"""Dialects on the request path: which wire format each route and each backend speaks, and
the glue that runs proxy/dialects' translations for one attempt (docs/dialects.md).

The decision costs one dict lookup per attempt (`Runtime.dialects[backend]`, a frozenset):
when the client's dialect is in it, nothing here runs and the body goes through as bytes.
Otherwise a `Translation` turns the request into the target's dialect and its answer
(JSON, SSE event by event, errors) back into the client's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

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
    update_anthropic_usage,
    usage_from_anthropic,
    usage_from_openai,
)
from proxy.dialects.anthropic_stream import (
    AnthropicToOpenAIStream,
    OpenAIToAnthropicStream,
    SSESplitter,
)
from proxy.dialects.responses_request import (
    MaxTokensField,
    responses_param,
    responses_to_chat_placed,
)
from proxy.dialects.responses_response import (
    chat_to_response,
    response_echo,
    usage_from_chat,
    usage_from_responses,
)
from proxy.dialects.responses_stream import AnthropicToResponsesStream, ChatToResponsesStream
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


class ResponsesTranslation(Translation):
    """A Responses API client (`/v1/responses`) served by a chat-speaking target, or by an
    Anthropic one through chat (Responses → chat → Messages and back, streams included:
    docs/dialects.md). `translation_for` gives an unbound one per target kind; the route
    binds it once per request (`bind`: the client's body, the response id, the stored
    conversation of `previous_response_id`), and after the answer, `response` is the
    response object (its `output` the items to store for the next turn)."""

    __slots__ = ("anthropic_target", "created_at", "echo", "history", "response", "response_id")

    def __init__(
        self,
        anthropic_target: bool,
        response_id: str = "",
        created_at: int = 0,
        history: list[Any] | None = None,
        echo: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(anthropic_client=False)  # errors in OpenAI's shape, as the API has
        self.anthropic_target = anthropic_target
        self.path = "/messages" if anthropic_target else "/chat/completions"
        self.response_id = response_id
        self.created_at = created_at
        self.history = history
        self.echo = echo
        self.response: dict[str, Any] | None = None

    def bind(
        self,
        data: dict[str, Any],
        response_id: str,
        history: list[Any] | None = None,
        created_at: int | None = None,
    ) -> ResponsesTranslation:
        """This request's translation: `response_id` (`resp_…`, the route's), `history`
        the items `previous_response_id` stands for, in order (None when it has none)."""
        return ResponsesTranslation(
            self.anthropic_target,
            response_id,
            int(time.time()) if created_at is None else created_at,
            history,
            response_echo(data),
        )

    def _bound(self) -> dict[str, Any]:
        if self.echo is None:
            raise RuntimeError("ResponsesTranslation used before bind()")
        return self.echo

    def request(self, data: dict[str, Any], model: str, cfg: BackendConfig, target: Any) -> bytes:
        self._bound()
        # OpenAI's own API refuses max_tokens for its reasoning models; engines take it.
        field: MaxTokensField = (
            "max_completion_tokens" if "api.openai.com" in (cfg.base_url or "") else "max_tokens"
        )
        placed = responses_to_chat_placed(
            data,
            self.history,
            max_tokens_field=field,
            reasoning="drop" if self.anthropic_target else "pass",
        )
        out = placed.messages_body
        if self.anthropic_target:
            default = getattr(target, "default_max_tokens", None) or cfg.default_max_tokens
            try:
                out = openai_chat_to_anthropic(out, default)
            except TranslationError as exc:  # named as the Responses client knows it
                param = responses_param(exc.param, placed.places)
                if exc.param and param and param != exc.param:
                    exc.message = exc.message.replace(exc.param, param)
                exc.param = param
                raise
        out["model"] = model
        return orjson.dumps(out)

    def answer(self, raw: bytes, thinking: str) -> tuple[bytes, TokenUsage]:
        echo = self._bound()
        data = orjson.loads(raw)
        if not isinstance(data, dict):
            raise TranslationError("the upstream's answer is not a JSON object", status=502)
        if self.anthropic_target:
            usage = usage_from_anthropic(data.get("usage"))
            chat = anthropic_to_openai_response(data, None, thinking)  # type: ignore[arg-type]
        else:
            usage = usage_from_chat(data.get("usage"))
            chat = data
        resp = chat_to_response(chat, self.response_id, self.created_at, echo, thinking)
        self.response = resp
        return orjson.dumps(resp), usage

    def error(self, status: int, raw: bytes) -> bytes:
        """The Responses API's errors are OpenAI's shape: an Anthropic target's is turned
        into it; a chat target's is normalised as it is."""
        if self.anthropic_target:
            return orjson.dumps(anthropic_error_to_openai(status, raw))
        return raw

    def stream(self, want_usage: bool, thinking: str) -> ResponsesStream:
        """The stream translator (usage always comes in response.completed)."""
        echo = self._bound()
        make = AnthropicToResponsesStream if self.anthropic_target else ChatToResponsesStream
        return ResponsesStream(make(self.response_id, self.created_at, echo, thinking), self)


RESPONSES_TO_CHAT = ResponsesTranslation(anthropic_target=False)
RESPONSES_TO_ANTHROPIC = ResponsesTranslation(anthropic_target=True)


def translation_for(client: Dialect, target: frozenset[Dialect]) -> Translation | None:
    """How a `client` request reaches a target speaking `target` (not including it), or
    None when no translation exists (embeddings to an Anthropic-only backend, ...).
    A Responses client's (an unbound ResponsesTranslation) goes to chat when the target
    speaks it, else to Anthropic's Messages."""
    if client is Dialect.ANTHROPIC_MESSAGES and Dialect.OPENAI_CHAT in target:
        return TO_OPENAI_CHAT
    if client is Dialect.OPENAI_CHAT and Dialect.ANTHROPIC_MESSAGES in target:
        return TO_ANTHROPIC
    if client is Dialect.OPENAI_RESPONSES:
        if Dialect.OPENAI_CHAT in target:
            return RESPONSES_TO_CHAT
        if Dialect.ANTHROPIC_MESSAGES in target:
            return RESPONSES_TO_ANTHROPIC
    return None


def _openai_usage_or_none(t: TokenUsage) -> dict[str, Any] | None:
    if not (t.input_tokens or t.output_tokens or t.cache_read_tokens or t.cache_creation_tokens):
        return None
    return openai_usage(t)


class StreamTranslator(Protocol):
    """What TranslatedStream needs of a stream translator (proxy/dialects)."""

    def feed(self, data: bytes) -> bytes: ...
    def tail(self) -> bytes: ...
    @property
    def done(self) -> bool: ...
    @property
    def error(self) -> dict[str, Any] | None: ...
    @property
    def usage(self) -> TokenUsage: ...


class TranslatedStream:
    """A stream translator behind UsageTap's face (feed/flush/saw_done/saw_error/usage/
    content_events), so the relay loop is the same whatever the dialects."""

    __slots__ = ("_t", "content_events")

    def __init__(self, translator: StreamTranslator) -> None:
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


class ResponsesStream(TranslatedStream):
    """A Responses stream translation: also `fail(message, code)`, the bytes that end a
    cut or timed-out stream in the Responses sequence (response.failed, its
    sequence_number continuing), and `response`, the final response object (kept on the
    ResponsesTranslation too, for the state store)."""

    __slots__ = ("_owner", "_r")

    def __init__(
        self,
        translator: ChatToResponsesStream | AnthropicToResponsesStream,
        owner: ResponsesTranslation,
    ) -> None:
        super().__init__(translator)
        self._r = translator
        self._owner = owner

    def feed(self, data: bytes) -> bytes:
        out = super().feed(data)
        if self._r.done:
            self._owner.response = self._r.response
        return out

    def fail(self, message: str, code: str = "server_error") -> bytes:
        out = self._r.fail(message, code)
        self._owner.response = self._r.response
        return out

    @property
    def response(self) -> dict[str, Any] | None:
        return self._r.response


class _EventTap:
    """A stream in the client's own dialect passed through as bytes (complete events
    only), the events that carry usage or the end parsed for the meter (subclasses say
    which: `_MARKS`, `_event`)."""

    __slots__ = (
        "_buf",
        "_split",
        "_usage",
        "content_events",
        "max_event",
        "saw_done",
        "saw_error",
    )
    _MARKS: tuple[bytes, ...] = ()

    def __init__(self, max_event: int = MAX_EVENT) -> None:
        self.max_event = max_event
        self._buf = b""
        self._split = SSESplitter(max_event)
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

    def _count(self, events: bytes) -> None:
        raise NotImplementedError

    def _look(self, events: bytes) -> None:
        self._count(events)
        for mark in self._MARKS:
            if mark in events:
                for payload in self._split.feed(events):
                    try:
                        ev = orjson.loads(payload)
                    except orjson.JSONDecodeError:
                        continue
                    if isinstance(ev, dict):
                        self._event(ev)
                return

    def _event(self, ev: dict[str, Any]) -> None:
        raise NotImplementedError

    def usage(self) -> dict[str, Any] | None:
        return _openai_usage_or_none(self._usage)


class AnthropicTap(_EventTap):
    """Anthropic SSE passed through as bytes (complete events only), its usage read from
    message_start / message_delta (cumulative counts: the last wins) for the meter."""

    __slots__ = ()
    _MARKS = (b'"usage"', b"message_stop", b'"error"')

    def _count(self, events: bytes) -> None:
        self.content_events += events.count(b"content_block_delta") // 2 or 0

    def _event(self, ev: dict[str, Any]) -> None:
        kind = ev.get("type")
        if kind == "message_start":
            msg = ev.get("message")
            update_anthropic_usage(self._usage, msg.get("usage") if isinstance(msg, dict) else None)
        elif kind == "message_delta":
            update_anthropic_usage(self._usage, ev.get("usage"))
        elif kind == "message_stop":
            self.saw_done = True
        elif kind == "error":
            self.saw_error = True


class ResponsesTap(_EventTap):
    """A native Responses stream (OpenAI's, vLLM's `/v1/responses`) passed through as
    bytes, its usage read from the final response.completed / response.incomplete /
    response.failed (input, cached, cache-write and reasoning tokens) for the meter.
    `response` is that final response object, for whoever keeps state."""

    __slots__ = ("response",)
    _MARKS = (b"response.completed", b"response.incomplete", b"response.failed", b'"error"')
    _ENDS = frozenset({"response.completed", "response.incomplete"})

    def __init__(self, max_event: int = MAX_EVENT) -> None:
        super().__init__(max_event)
        self.response: dict[str, Any] | None = None

    def _count(self, events: bytes) -> None:
        # One per delta event (output text, function arguments, reasoning): the name ends
        # in `.delta"` only in the event's type (a quote inside a JSON string is escaped).
        self.content_events += events.count(b'.delta"')

    def _event(self, ev: dict[str, Any]) -> None:
        kind = ev.get("type")
        if kind in self._ENDS or kind == "response.failed":
            resp = ev.get("response")
            if isinstance(resp, dict):
                self.response = resp
                if isinstance(resp.get("usage"), dict):
                    self._usage = usage_from_responses(resp["usage"])
            if kind == "response.failed":
                self.saw_error = True
            else:
                self.saw_done = True
        elif kind == "error":
            self.saw_error = True


def responses_body_usage(raw: bytes) -> dict[str, Any] | None:
    """The usage of a passed-through (native) Responses JSON answer, in OpenAI chat's
    terms for the meter; None when it has none."""
    return _body_usage(raw, usage_from_responses)


def anthropic_body_usage(raw: bytes) -> dict[str, Any] | None:
    """The usage of a passed-through Anthropic JSON answer, in OpenAI's terms for the meter."""
    return _body_usage(raw, usage_from_anthropic)


def _body_usage(raw: bytes, read: Callable[[Any], TokenUsage]) -> dict[str, Any] | None:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    return _openai_usage_or_none(read(data.get("usage")))
