"""Streams between Anthropic's SSE and OpenAI's chat.completion.chunk SSE, event by event.

Each translator is fed the upstream's bytes as they arrive, cut anywhere, and returns
the client's bytes for the events completed so far (`feed`), then whatever the end of
the stream implies (`finish`). Per event: one orjson parse, one small serialisation, no
regexes and no models. Both expose the usage they saw (`usage`), for the meter.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from proxy.backends.base import UpstreamRefused
from proxy.dialects import TokenUsage
from proxy.dialects.anthropic_response import (
    ANTHROPIC_STATUS,
    FINISH_TO_STOP,
    STOP_TO_FINISH,
    ThinkingOut,
    anthropic_error_to_openai,
    anthropic_usage,
    openai_error_to_anthropic,
    openai_usage,
    usage_from_openai,
)
from proxy.request.sse import MAX_EVENT

DONE = b"data: [DONE]\n\n"


def _str(v: Any) -> str:
    """A string the upstream sent where one belongs (an id, a model), else ""."""
    return v if isinstance(v, str) else ""


class SSESplitter:
    """Complete SSE events' data payloads out of bytes cut anywhere (LF or CRLF framing).

    An event still incomplete past `max_event` bytes (limits.upstream_max_event_bytes) is
    refused with `UpstreamRefused`, as the passthrough relay refuses one: an upstream that
    never ends its event must not grow the proxy's memory without bound.
    """

    __slots__ = ("_buf", "max_event")

    def __init__(self, max_event: int = MAX_EVENT) -> None:
        self._buf = b""
        self.max_event = max_event

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf + data if self._buf else data
        if b"\r" in buf:
            # A CR at the very end may be the first half of a CRLF: keep it for later.
            tail = b"\r" if buf.endswith(b"\r") else b""
            buf = buf[: len(buf) - len(tail)].replace(b"\r\n", b"\n") + tail
        end = buf.rfind(b"\n\n")
        if end < 0:
            if len(buf) > self.max_event:
                self._too_large()
            self._buf = buf
            return []
        self._buf = buf[end + 2 :] if end + 2 < len(buf) else b""
        if len(self._buf) > self.max_event:
            self._too_large()
        if buf.find(b"\n\n") == end:  # one event: the usual piece of a streamed answer
            p = _payload(buf[:end])
            return [] if p is None else [p]
        return [p for p in map(_payload, buf[:end].split(b"\n\n")) if p is not None]

    def _too_large(self) -> None:
        self._buf = b""
        raise UpstreamRefused(f"upstream stream event over {self.max_event} bytes")

    def flush(self) -> list[bytes]:
        rest, self._buf = self._buf.replace(b"\r\n", b"\n").strip(), b""
        if not rest:
            return []
        payload = _payload(rest)
        return [] if payload is None else [payload]


def _payload(event: bytes) -> bytes | None:
    """The data of one event (its `data:` lines joined); `event:` and comments ignored."""
    if event.startswith(b"data: "):
        if event.find(b"\n") < 0:
            return event[6:]
    elif event.startswith(b"event: "):  # Anthropic's `event: name` line, then one data line
        i = event.find(b"\ndata: ")
        if i >= 0 and event.find(b"\n", i + 1) < 0:
            return event[i + 7 :]
    # The general case, as SSE has it: every data line, less one space after the colon.
    data = [
        ln[6:] if ln[5:6] == b" " else ln[5:]
        for ln in event.split(b"\n")
        if ln.startswith(b"data:")
    ]
    return b"\n".join(data) if data else None


# -- Anthropic → OpenAI ---------------------------------------------------------------------
class AnthropicToOpenAIStream:
    """Anthropic Messages SSE in, OpenAI chat.completion.chunk SSE out.

    include_usage: the client asked `stream_options.include_usage`: the usage-only chunk
    is sent before `[DONE]` (otherwise usage is only kept for the meter).
    """

    __slots__ = (
        "_blocks",
        "_finish",
        "_head",
        "_split",
        "_tools",
        "created",
        "done",
        "error",
        "id",
        "include_usage",
        "model",
        "thinking",
        "usage",
    )

    def __init__(
        self,
        include_usage: bool = False,
        created: int | None = None,
        thinking: ThinkingOut = "drop",
        max_event: int = MAX_EVENT,
    ) -> None:
        self.include_usage = include_usage
        self.created = int(time.time()) if created is None else created
        self.thinking = thinking
        self.id = ""
        self.model = ""
        self.usage = TokenUsage()
        self.done = False
        self.error: dict[str, Any] | None = None
        self._split = SSESplitter(max_event)
        self._head = self._head_for("", "")  # the chunk's bytes up to `"choices":`
        self._blocks: dict[int, int] = {}  # Anthropic block index → OpenAI tool call index
        self._tools = 0
        self._finish: str | None = None

    def _head_for(self, id_: str, model: str) -> bytes:
        return (
            b'data: {"id":'
            + orjson.dumps(id_)
            + b',"object":"chat.completion.chunk","created":'
            + str(self.created).encode()
            + b',"model":'
            + orjson.dumps(model)
            + b',"choices":'
        )

    def _chunk(self, delta: bytes, finish: bytes = b"null") -> bytes:
        return (
            self._head
            + b'[{"index":0,"delta":'
            + delta
            + b',"logprobs":null,"finish_reason":'
            + finish
            + b"}]}\n\n"
        )

    def feed(self, data: bytes) -> bytes:
        out = [self._event(p) for p in self._split.feed(data)]
        return b"".join(out)

    def tail(self) -> bytes:
        """An unterminated last event, translated; the stream is not closed (the proxy
        ends a cut stream with its own error event)."""
        return b"".join(self._event(p) for p in self._split.flush())

    def finish(self) -> bytes:
        """The end of the upstream: any unterminated last event, and `[DONE]` if the
        stream ended without `message_stop` (a cut upstream still ends the client's)."""
        out = self.tail()
        if not self.done:
            self.done = True
            out += DONE
        return out

    def _event(self, payload: bytes) -> bytes:
        try:
            ev = orjson.loads(payload)
            if not isinstance(ev, dict) or self.done:  # nothing after [DONE]
                return b""
            return self._translate(ev)
        except (orjson.JSONDecodeError, KeyError, AttributeError, TypeError, ValueError):
            return b""  # a malformed upstream event is dropped, never the proxy's exception

    def _translate(self, ev: dict[str, Any]) -> bytes:
        kind = ev.get("type")
        if kind == "content_block_delta":
            d = ev["delta"]
            dk = d.get("type")
            if dk == "text_delta":
                return self._chunk(orjson.dumps({"content": _str(d.get("text"))}))
            if dk == "input_json_delta":
                i = self._blocks.get(ev.get("index", 0), 0)
                return self._chunk(
                    orjson.dumps(
                        {
                            "tool_calls": [
                                {"index": i, "function": {"arguments": _str(d.get("partial_json"))}}
                            ]
                        }
                    )
                )
            if dk == "thinking_delta" and self.thinking == "pass":
                return self._chunk(orjson.dumps({"reasoning_content": _str(d.get("thinking"))}))
            return b""
        if kind == "content_block_start":
            b = ev.get("content_block") or {}
            bk = b.get("type")
            if bk == "tool_use":
                i = self._tools
                self._tools += 1
                self._blocks[ev.get("index", 0)] = i
                call = {
                    "index": i,
                    "id": _str(b.get("id")),
                    "type": "function",
                    "function": {"name": _str(b.get("name")), "arguments": ""},
                }
                return self._chunk(orjson.dumps({"tool_calls": [call]}))
            if bk == "text" and _str(b.get("text")):
                return self._chunk(orjson.dumps({"content": b["text"]}))
            return b""
        if kind in ("ping", "content_block_stop"):
            return b""
        if kind == "message_delta":
            self._update(ev.get("usage"))
            stop = (ev.get("delta") or {}).get("stop_reason")
            self._finish = STOP_TO_FINISH.get(stop, stop)
            return self._chunk(b"{}", orjson.dumps(self._finish))
        if kind == "message_start":
            m = ev.get("message") or {}
            self.id = _str(m.get("id"))
            self.model = _str(m.get("model"))
            self._update(m.get("usage"))
            self._head = self._head_for(self.id, self.model)
            return self._chunk(b'{"role":"assistant","content":""}')
        if kind == "message_stop":
            self.done = True
            if not self.include_usage:
                return DONE
            usage = orjson.dumps(openai_usage(self.usage))
            return self._head + b'[],"usage":' + usage + b"}\n\n" + DONE
        if kind == "error":
            error_type = (ev.get("error") or {}).get("type")
            self.error = anthropic_error_to_openai(ANTHROPIC_STATUS.get(error_type, 500), ev)
            self.done = True
            return b"data: " + orjson.dumps(self.error) + b"\n\n" + DONE
        return b""

    def _update(self, u: dict[str, Any] | None) -> None:
        """Anthropic's counts are cumulative: a later event's value replaces the earlier."""
        if not u:
            return
        t = self.usage
        v = u.get("input_tokens")
        if type(v) is int:
            t.input_tokens = v
        v = u.get("output_tokens")
        if type(v) is int:
            t.output_tokens = v
        v = u.get("cache_read_input_tokens")
        if type(v) is int:
            t.cache_read_tokens = v
        v = u.get("cache_creation_input_tokens")
        if type(v) is int:
            t.cache_creation_tokens = v


# -- OpenAI → Anthropic ---------------------------------------------------------------------
def _event(name: bytes, body: dict[str, Any]) -> bytes:
    return b"event: " + name + b"\ndata: " + orjson.dumps(body) + b"\n\n"


_PING = b'event: ping\ndata: {"type":"ping"}\n\n'
_TEXT_START = b'{"type":"text","text":""}'


class OpenAIToAnthropicStream:
    """OpenAI chat.completion.chunk SSE in (ask the upstream for include_usage), Anthropic
    Messages SSE out: message_start, ping, content_block_start/delta/stop per text or tool
    call, message_delta (stop reason and the usage, known only at the end of an OpenAI
    stream), message_stop.

    message_start carries the usage known then (none, unless the upstream sends running
    usage); message_delta carries the final counts, input and cache ones included, which
    the Anthropic SDK takes over the start's.
    """

    __slots__ = (
        "_block",
        "_block_kind",
        "_finish",
        "_matched",
        "_next_block",
        "_split",
        "_started",
        "_tool_blocks",
        "done",
        "error",
        "id",
        "model",
        "thinking",
        "usage",
    )

    def __init__(self, thinking: ThinkingOut = "drop") -> None:
        self.thinking = thinking
        self.id = ""
        self.model = ""
        self.usage = TokenUsage()
        self.done = False
        self.error: dict[str, Any] | None = None
        self._split = SSESplitter()
        self._started = False
        self._block = -1  # index of the open block, -1 when none
        self._block_kind = ""
        self._next_block = 0
        self._tool_blocks: dict[int, int] = {}  # OpenAI tool call index → block index
        self._finish: str | None = None
        self._matched: str | None = None

    def feed(self, data: bytes) -> bytes:
        return b"".join(self._event(p) for p in self._split.feed(data))

    def tail(self) -> bytes:
        """An unterminated last event, translated; the stream is not closed (the proxy
        ends a cut stream with its own error event)."""
        return b"".join(self._event(p) for p in self._split.flush())

    def finish(self) -> bytes:
        """The end of the upstream: the closing events if `[DONE]` never came."""
        out = self.tail()
        if not self.done:
            out += self._close()
        return out

    def _start(self, chunk: dict[str, Any]) -> bytes:
        self._started = True
        self.id = _str(chunk.get("id"))
        self.model = _str(chunk.get("model"))
        msg: dict[str, Any] = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": anthropic_usage(self.usage),
        }
        return _event(b"message_start", {"type": "message_start", "message": msg}) + _PING

    def _open(self, kind: str, block: bytes) -> bytes:
        out = self._stop_block()
        self._block = self._next_block
        self._next_block += 1
        self._block_kind = kind
        return out + (
            b'event: content_block_start\ndata: {"type":"content_block_start","index":'
            + str(self._block).encode()
            + b',"content_block":'
            + block
            + b"}\n\n"
        )

    def _stop_block(self) -> bytes:
        if self._block < 0:
            return b""
        i, self._block = self._block, -1
        return (
            b'event: content_block_stop\ndata: {"type":"content_block_stop","index":'
            + str(i).encode()
            + b"}\n\n"
        )

    def _delta(self, index: int, delta: bytes) -> bytes:
        return (
            b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
            + str(index).encode()
            + b',"delta":'
            + delta
            + b"}\n\n"
        )

    def _event(self, payload: bytes) -> bytes:
        if payload == b"[DONE]":
            return b"" if self.done else self._close()
        try:
            chunk = orjson.loads(payload)
            if not isinstance(chunk, dict) or self.done:
                return b""
            return self._translate(chunk)
        except (orjson.JSONDecodeError, KeyError, AttributeError, TypeError, ValueError):
            return b""  # a malformed upstream event is dropped, never the proxy's exception

    def _translate(self, chunk: dict[str, Any]) -> bytes:
        if "error" in chunk and "choices" not in chunk:
            self.error = openai_error_to_anthropic(500, chunk)
            self.done = True
            self.error["error"]["type"] = "api_error"
            return _event(b"error", self.error)
        out = b"" if self._started else self._start(chunk)
        try:  # a chunk that breaks halfway: what it made so far (message_start too) stands
            if isinstance(chunk.get("usage"), dict):
                self.usage = usage_from_openai(chunk["usage"])
            for choice in chunk.get("choices") or ():
                if choice.get("index", 0) != 0:
                    continue
                delta = choice.get("delta") or {}
                reasoning = _str(delta.get("reasoning_content")) or _str(delta.get("reasoning"))
                if reasoning and self.thinking == "pass":
                    if self._block_kind != "thinking" or self._block < 0:
                        out += self._open(
                            "thinking", b'{"type":"thinking","thinking":"","signature":""}'
                        )
                    out += self._delta(
                        self._block, orjson.dumps({"type": "thinking_delta", "thinking": reasoning})
                    )
                text = _str(delta.get("content"))
                if text:
                    if self._block_kind != "text" or self._block < 0:
                        out += self._open("text", _TEXT_START)
                    out += self._delta(
                        self._block, orjson.dumps({"type": "text_delta", "text": text})
                    )
                for call in delta.get("tool_calls") or ():
                    out += self._tool_delta(call)
                finish = choice.get("finish_reason")
                if finish and isinstance(finish, str):
                    self._finish = finish
                    matched = choice.get("stop_reason")
                    self._matched = matched if isinstance(matched, str) else None
        except (KeyError, AttributeError, TypeError, ValueError):
            pass  # the rest of a malformed chunk is dropped
        return out

    def _tool_delta(self, call: dict[str, Any]) -> bytes:
        out = b""
        i = call.get("index", 0)
        fn = call.get("function") or {}
        block = self._tool_blocks.get(i)
        if block is None:
            start = {
                "type": "tool_use",
                "id": _str(call.get("id")),
                "name": _str(fn.get("name")),
                "input": {},
            }
            out += self._open("tool_use", orjson.dumps(start))
            block = self._tool_blocks[i] = self._block
        args = _str(fn.get("arguments"))
        if args:
            out += self._delta(
                block, orjson.dumps({"type": "input_json_delta", "partial_json": args})
            )
        return out

    def _close(self) -> bytes:
        self.done = True
        out = b"" if self._started else self._start({})
        out += self._stop_block()
        stop = (
            "stop_sequence"
            if self._matched is not None
            else FINISH_TO_STOP.get(self._finish or "stop", self._finish)
        )
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": self._matched},
            "usage": anthropic_usage(self.usage),
        }
        return (
            out
            + _event(b"message_delta", delta)
            + _event(b"message_stop", {"type": "message_stop"})
        )
