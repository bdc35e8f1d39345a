"""OpenAI chat.completion.chunk SSE in, the Responses API's SSE out, event by event.

Events in the order OpenAI sends them, each with its `event:` line and a running
`sequence_number`: response.created, response.in_progress; per output item
response.output_item.added, then for a message response.content_part.added,
response.output_text.delta…, response.output_text.done, response.content_part.done (a
reasoning item the same with reasoning_text), for a function call
response.function_call_arguments.delta… and .done; response.output_item.done; last
response.completed (or response.incomplete when the answer was cut by max_output_tokens
or a content filter) with the whole response and its usage, or response.failed on an
upstream error event (or `fail()`, the proxy's own ending of a cut stream).

Two readers share the writer: chat chunks (`ChatToResponsesStream`) and Anthropic's
events (`AnthropicToResponsesStream`, byte-for-byte what chaining Anthropic → chat →
Responses gives, at one parse per event instead of two). Per upstream event: one orjson
parse and one small serialisation (deltas are written from a per-item prefix). The
upstream's bytes may be cut anywhere; an event over `max_event` bytes is refused
(`UpstreamRefused`), as the passthrough relay refuses one.
"""

from __future__ import annotations

from typing import Any

import orjson

from proxy.dialects import TokenUsage
from proxy.dialects.anthropic_response import (
    ANTHROPIC_STATUS,
    STOP_TO_FINISH,
    anthropic_error_to_openai,
    update_anthropic_usage,
)
from proxy.dialects.anthropic_stream import SSESplitter
from proxy.dialects.responses_response import (
    FINISH_STATUS,
    call_item,
    message_item,
    reasoning_item,
    response_ids,
    response_object,
    responses_usage,
    stream_error_code,
    text_part,
    usage_from_chat,
)
from proxy.request.sse import MAX_EVENT

_MESSAGE = "message"
_REASONING = "reasoning"
_CALL = "function_call"


def _sse(kind: str, body: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(body) + b"\n\n"


class _Item:
    """One output item while it streams."""

    __slots__ = ("call_id", "id", "index", "kind", "name", "pieces", "prefix")

    def __init__(self, kind: str, item_id: str, index: int) -> None:
        self.kind = kind
        self.id = item_id
        self.index = index
        self.pieces: list[str] = []
        self.call_id = ""
        self.name = ""
        self.prefix = b""  # the delta events' bytes up to the delta's value


class ChatToResponsesStream:
    """Chat SSE in (ask the upstream for include_usage), Responses SSE out.

    response_id / created_at / echo: the response object's id, time and the request fields
    it repeats (`response_echo`). thinking "pass": vLLM's reasoning_content becomes a
    reasoning item (else dropped). After the end, `response` is the final response object
    (its `output` what a later `previous_response_id` replays) and `usage` its usage.
    """

    __slots__ = (
        "_base",
        "_calls",
        "_finish",
        "_open",
        "_out",
        "_said",
        "_seq",
        "_split",
        "_started",
        "created_at",
        "done",
        "echo",
        "error",
        "model",
        "output",
        "response",
        "response_id",
        "thinking",
        "usage",
    )

    def __init__(
        self,
        response_id: str,
        created_at: int,
        echo: dict[str, Any],
        thinking: str = "drop",
        max_event: int = MAX_EVENT,
    ) -> None:
        self.response_id = response_id
        self.created_at = created_at
        self.echo = echo
        self.thinking = thinking
        self.model = ""
        self.usage = TokenUsage()
        self.done = False
        self.error: dict[str, Any] | None = None
        self.output: list[dict[str, Any]] = []  # the items done so far
        self.response: dict[str, Any] | None = None
        self._split = SSESplitter(max_event)
        self._base = response_ids(response_id)
        self._seq = 0
        self._started = False
        self._open: _Item | None = None
        self._out: list[bytes] = []  # events made by the current feed
        self._calls: dict[int, _Item] = {}  # chat tool call index → its item
        self._said = False  # a message or a call was sent (else an empty message closes)
        self._finish: str | None = None

    # -- the feed -----------------------------------------------------------------------
    # Events are written to `_out` as they are made, so an upstream event that breaks
    # halfway (dropped) cannot lose the ones already numbered.
    def feed(self, data: bytes) -> bytes:
        for p in self._split.feed(data):
            self._event(p)
        return self._take()

    def tail(self) -> bytes:
        """An unterminated last event, translated; the stream is not closed (the proxy
        ends a cut stream itself: `fail()`)."""
        for p in self._split.flush():
            self._event(p)
        return self._take()

    def finish(self) -> bytes:
        """The end of the upstream: the closing events if `[DONE]` never came."""
        out = self.tail()
        if not self.done:
            self._close()
        return out + self._take()

    def fail(self, message: str, code: str = "server_error") -> bytes:
        """End the stream with response.failed (the proxy's own: a cut or timed-out
        upstream); nothing if it has ended already."""
        if self.done:
            return b""
        self.done = True
        if not self._started:
            self._start({})
        self.error = {
            "error": {"message": message, "type": "server_error", "param": None, "code": code}
        }
        self._failed({"code": "server_error", "message": message})
        return self._take()

    def _take(self) -> bytes:
        out = self._out
        if not out:
            return b""
        self._out = []
        return out[0] if len(out) == 1 else b"".join(out)

    def _event(self, payload: bytes) -> None:
        if payload == b"[DONE]":
            if not self.done:
                self._close()
            return
        try:
            chunk = orjson.loads(payload)
            if isinstance(chunk, dict) and not self.done:
                self._translate(chunk)
        except (orjson.JSONDecodeError, KeyError, AttributeError, TypeError, ValueError):
            pass  # a malformed upstream event is dropped, never the proxy's exception

    # -- events -------------------------------------------------------------------------
    def _emit(self, kind: str, body: dict[str, Any]) -> None:
        body["sequence_number"] = self._seq
        self._seq += 1
        self._out.append(_sse(kind, {"type": kind, **body}))

    def _delta(self, item: _Item, piece: str) -> None:
        item.pieces.append(piece)
        seq = self._seq
        self._seq += 1
        self._out.append(
            item.prefix
            + orjson.dumps(piece)
            + b',"sequence_number":'
            + str(seq).encode()
            + b"}\n\n"
        )

    def _start(self, chunk: dict[str, Any]) -> None:
        self._started = True
        model = chunk.get("model")
        self.model = model if isinstance(model, str) else ""
        r = self._response("in_progress", [], None)
        self._emit("response.created", {"response": r})
        self._emit("response.in_progress", {"response": r})

    def _response(
        self,
        status: str,
        output: list[dict[str, Any]],
        usage: dict[str, Any] | None,
        incomplete: str | None = None,
        error: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        return response_object(
            self.response_id,
            self.created_at,
            self.echo,
            model=self.model,
            status=status,
            output=output,
            usage=usage,
            incomplete=incomplete,
            error=error,
        )

    def _translate(self, chunk: dict[str, Any]) -> None:
        if "error" in chunk and "choices" not in chunk:
            err = chunk["error"]
            status = 500
            if isinstance(err, dict):
                message = str(err.get("message", ""))
                code = err.get("code")
                if type(code) is int:
                    status = code
                elif "rate_limit" in f"{code} {err.get('type')}":
                    status = 429
            else:
                message = str(chunk.get("message") or err)
            self.done = True
            self.error = {
                "error": {"message": message, "type": "server_error", "param": None, "code": None}
            }
            if not self._started:
                self._start(chunk)
            self._failed({"code": stream_error_code(status), "message": message})
            return
        if not self._started:
            self._start(chunk)
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = usage_from_chat(usage)
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning and self.thinking == "pass" and isinstance(reasoning, str):
                self._piece(_REASONING, reasoning)
            text = delta.get("content")
            if text and isinstance(text, str):
                self._piece(_MESSAGE, text)
            for call in delta.get("tool_calls") or ():
                self._call(call)
            finish = choice.get("finish_reason")
            if finish and isinstance(finish, str):
                self._finish = finish

    def _piece(self, kind: str, piece: str) -> None:
        item = self._open
        if item is None or item.kind != kind:
            self._close_item()
            item = self._open_item(kind)
        self._delta(item, piece)

    def _open_item(self, kind: str) -> _Item:
        index = len(self.output)
        prefix = "rs" if kind == _REASONING else "msg"
        item = self._open = _Item(kind, f"{prefix}_{self._base}_{index}", index)
        if kind == _MESSAGE:
            self._said = True
            shell: dict[str, Any] = {
                "id": item.id,
                "type": "message",
                "role": "assistant",
                "status": "in_progress",
                "content": [],
            }
            part: dict[str, Any] = text_part("")
            name = "response.output_text.delta"
        else:
            shell = {"id": item.id, "type": "reasoning", "summary": [], "status": "in_progress"}
            part = {"type": "reasoning_text", "text": ""}
            name = "response.reasoning_text.delta"
        head = orjson.dumps({"type": name, "item_id": item.id, "output_index": index})
        extra = b',"content_index":0,"logprobs":[]' if kind == _MESSAGE else b',"content_index":0'
        item.prefix = b"event: " + name.encode() + b"\ndata: " + head[:-1] + extra + b',"delta":'
        where = {"item_id": item.id, "output_index": index, "content_index": 0}
        self._emit("response.output_item.added", {"output_index": index, "item": shell})
        self._emit("response.content_part.added", {**where, "part": part})
        return item

    def _call(self, call: dict[str, Any]) -> None:
        fn = call.get("function") or {}
        self._call_piece(call.get("index", 0), call.get("id"), fn.get("name"), fn.get("arguments"))

    def _call_piece(self, i: Any, cid: Any, name: Any, args: Any) -> None:
        """A piece of the call the upstream numbers `i`: its start (id, name) the first
        time, then its arguments."""
        item = self._calls.get(i)
        if item is None:
            self._close_item()
            index = len(self.output)
            item = self._open = self._calls[i] = _Item(_CALL, f"fc_{self._base}_{index}", index)
            self._said = True
            item.call_id = cid if isinstance(cid, str) and cid else f"call_{self._base}_{index}"
            item.name = name if isinstance(name, str) else ""
            head = orjson.dumps(
                {
                    "type": "response.function_call_arguments.delta",
                    "item_id": item.id,
                    "output_index": index,
                }
            )
            item.prefix = (
                b"event: response.function_call_arguments.delta\ndata: " + head[:-1] + b',"delta":'
            )
            shell = call_item(item.id, item.call_id, item.name, "", "in_progress")
            self._emit("response.output_item.added", {"output_index": index, "item": shell})
        if args and isinstance(args, str) and item is self._open:
            # A piece for a call already closed (calls interleaved) cannot be sent: chat
            # upstreams stream calls one after another.
            self._delta(item, args)

    def _close_item(self, status: str = "completed") -> None:
        item, self._open = self._open, None
        if item is None:
            return
        text = "".join(item.pieces)
        where = {"item_id": item.id, "output_index": item.index}
        if item.kind == _CALL:
            done = call_item(item.id, item.call_id, item.name, text, status)
            self._emit(
                "response.function_call_arguments.done",
                {**where, "name": item.name, "arguments": text},
            )
        elif item.kind == _MESSAGE:
            done = message_item(item.id, text, status)
            part = done["content"][0]
            self._emit(
                "response.output_text.done",
                {**where, "content_index": 0, "text": text, "logprobs": []},
            )
            self._emit("response.content_part.done", {**where, "content_index": 0, "part": part})
        else:
            done = reasoning_item(item.id, text)
            self._emit("response.reasoning_text.done", {**where, "content_index": 0, "text": text})
            self._emit(
                "response.content_part.done",
                {**where, "content_index": 0, "part": {"type": "reasoning_text", "text": text}},
            )
        self.output.append(done)
        self._emit("response.output_item.done", {"output_index": item.index, "item": done})

    def _close(self) -> None:
        self.done = True
        if not self._started:
            self._start({})
        status, reason = FINISH_STATUS.get(self._finish, ("completed", None))
        if not self._said:  # nothing said and nothing called: an empty message, as OpenAI
            self._close_item()
            self._open_item(_MESSAGE)
        self._close_item(status)
        r = self.response = self._response(status, self.output, responses_usage(self.usage), reason)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        self._emit(kind, {"response": r})

    def _failed(self, error: dict[str, Any]) -> None:
        r = self.response = self._response(
            "failed", self.output, responses_usage(self.usage), error=error
        )
        self._emit("response.failed", {"response": r})


class AnthropicToResponsesStream(ChatToResponsesStream):
    """Anthropic Messages SSE in, Responses SSE out: the same Responses writer, reading
    Anthropic's events (a text block → a message item, a tool_use block → a function
    call, thinking with "pass" → a reasoning item; message_delta's stop reason → the
    status; message_stop → the end; an error event → response.failed). Equal to
    Anthropic → chat → Responses (the answer path chains the two), at one parse per
    event instead of two. `usage` keeps Anthropic's cumulative counts (cache writes
    included)."""

    __slots__ = ()

    def _translate(self, ev: dict[str, Any]) -> None:
        kind = ev.get("type")
        if kind == "message_start":
            m = ev.get("message") or {}
            update_anthropic_usage(self.usage, m.get("usage"))
            if not self._started:
                self._start(m)
            return
        if not self._started and kind != "ping":
            self._start({})
        if kind == "content_block_delta":
            d = ev["delta"]
            dk = d.get("type")
            if dk == "text_delta":
                text = d.get("text")
                if text and isinstance(text, str):
                    self._piece(_MESSAGE, text)
            elif dk == "input_json_delta":
                self._call_piece(ev.get("index", 0), None, None, d.get("partial_json"))
            elif dk == "thinking_delta" and self.thinking == "pass":
                text = d.get("thinking")
                if text and isinstance(text, str):
                    self._piece(_REASONING, text)
        elif kind == "content_block_start":
            b = ev.get("content_block") or {}
            bk = b.get("type")
            if bk == "tool_use":
                self._call_piece(ev.get("index", 0), b.get("id"), b.get("name"), None)
            elif bk == "text" and b.get("text") and isinstance(b["text"], str):
                self._piece(_MESSAGE, b["text"])
        elif kind == "message_delta":
            update_anthropic_usage(self.usage, ev.get("usage"))
            stop = (ev.get("delta") or {}).get("stop_reason")
            self._finish = STOP_TO_FINISH.get(stop, stop)
        elif kind == "message_stop":
            self._close()
        elif kind == "error":
            err = ev.get("error") or {}
            status = ANTHROPIC_STATUS.get(err.get("type"), 500)
            message = str(err.get("message", ""))
            self.done = True
            self.error = anthropic_error_to_openai(status, ev)
            self._failed({"code": stream_error_code(status), "message": message})
