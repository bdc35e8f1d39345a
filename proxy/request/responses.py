"""OpenAI's Responses API on the request path: the conversation a turn continues, what is
kept of it, and the usage of its answers (docs/dialects.md, "The /v1/responses route").

`POST /v1/responses` goes through the same handler as chat (auth, rules, budgets,
failover, metering); this module adds what only that route needs:

- `Turn`: the request's input as items, the stored response its `previous_response_id`
  names (one state lookup, inherent to the feature), and per attempt the body to send:
  as it is to the backend that owns the previous response's upstream id, else with the
  stored conversation spelled out as input (a translated target, or failover to another
  native one), so a conversation survives a change of backend.
- `ResponsesTap`: a Responses SSE stream (native, or a translation's) relayed event by
  event; `response.completed` (or incomplete/failed) read for usage and the final
  response, and held back until the response is stored, so a client that sees the end
  can continue the conversation at once.
- `responses_usage`: a Responses `usage` in the meter's (chat) terms.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from proxy.backends.base import UpstreamRefused
from proxy.dialects import TranslationError
from proxy.request.errors import ProxyError
from proxy.request.sse import MAX_EVENT

if TYPE_CHECKING:
    from proxy.runtime import Runtime

_TERMINAL = (b'"response.completed"', b'"response.incomplete"', b'"response.failed"')
_DELTA = b'"response.output_text.delta"'
_ERROR_EVENT = b'"type":"error"'


def _invalid(message: str, param: str | None, code: str = "invalid_value") -> ProxyError:
    return ProxyError(400, message, param=param, code=code)


def input_items(value: Any) -> list[dict[str, Any]]:
    """`input` as a list of items (a string is one user message), checked for shape."""
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if not isinstance(value, list):
        raise _invalid(
            "'input' must be a string or an array of input items.", "input", "invalid_type"
        )
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise _invalid(
                f"Invalid 'input[{i}]': expected an object.", f"input[{i}]", "invalid_type"
            )
    return value


def _replayable(items: list[Any]) -> list[dict[str, Any]]:
    """Stored items as input for a backend that did not produce them: without their ids
    (another backend knows none of them) and without reasoning items that carry no
    encrypted content (only the store that made them could expand them)."""
    out = []
    for item in items:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "reasoning" and not item.get("encrypted_content"):
            continue
        out.append({k: v for k, v in item.items() if k != "id"})
    return out


class Turn:
    """One POST /v1/responses: its input items, the response it continues, and whether
    its own answer is kept."""

    __slots__ = ("data", "items", "prev", "prev_id", "store", "tenant")

    def __init__(self, data: dict[str, Any], tenant: str) -> None:
        self.data = data
        self.tenant = tenant
        self.items = input_items(data["input"])
        store = data.get("store", True)
        if store is not None and not isinstance(store, bool):
            raise _invalid("'store' must be a boolean.", "store", "invalid_type")
        self.store = store is not False  # OpenAI's default is true
        background = data.get("background")
        if background is not None and not isinstance(background, bool):
            raise _invalid("'background' must be a boolean.", "background", "invalid_type")
        prev_id = data.get("previous_response_id")
        if prev_id is not None and (not isinstance(prev_id, str) or not prev_id):
            raise _invalid(
                "'previous_response_id' must be a string.", "previous_response_id", "invalid_type"
            )
        self.prev_id: str | None = prev_id
        self.prev: dict[str, Any] | None = None

    async def load(self, rt: Runtime) -> None:
        """The stored response `previous_response_id` names, this tenant's only."""
        if self.prev_id is None:
            return
        self.prev = await rt.responses.get(self.tenant, self.prev_id)
        if self.prev is None:
            raise ProxyError(
                400,
                f"Previous response with id '{self.prev_id[:200]}' not found.",
                param="previous_response_id",
                code="previous_response_not_found",
            )

    def conversation(self) -> list[dict[str, Any]]:
        """The items before this turn: the previous response's input and output."""
        prev = self.prev
        if prev is None:
            return []
        return [*prev.get("input", ()), *prev.get("output", ())]

    def data_for(self, backend: str, native: bool) -> dict[str, Any]:
        """The request for one attempt: as the client sent it when `backend` holds the
        previous response itself, else with the stored conversation as its input."""
        data = self.data
        if not native and data.get("background"):
            raise TranslationError(
                f"Background responses need a backend that serves /v1/responses itself; "
                f"'{backend}' is reached through a translation.",
                "background",
            )
        prev = self.prev
        if prev is None or (native and prev.get("native") and prev.get("backend") == backend):
            return data
        out = dict(data)
        del out["previous_response_id"]
        out["input"] = [*_replayable(self.conversation()), *self.items]
        return out

    async def keep(self, rt: Runtime, response: dict[str, Any], backend: str, native: bool) -> None:
        """Store the finished response (when `store`), so later turns and the item routes
        find it; a native one is kept too: its owner for GET/DELETE/cancel, and its
        conversation for a failover to another backend."""
        rid = response.get("id")
        if not self.store or not isinstance(rid, str) or not rid:
            return
        output = response.get("output")
        history = self.conversation()
        doc = {
            "backend": backend,
            "native": native,
            "input": [*history, *self.items],
            "turn": len(history),
            "output": output if isinstance(output, list) else [],
            "response": None if native else response,
        }
        await rt.responses.put(self.tenant, rid, doc, rt.config.responses.retention_s)


def responses_usage(usage: Any) -> dict[str, Any] | None:
    """A Responses `usage` (input/output tokens, cached and reasoning details) in the chat
    terms the meter reads; reasoning tokens are part of the output tokens, as OpenAI bills."""
    if not isinstance(usage, dict):
        return None
    out: dict[str, Any] = {
        "prompt_tokens": usage.get("input_tokens"),
        "completion_tokens": usage.get("output_tokens"),
    }
    details = usage.get("input_tokens_details")
    if isinstance(details, dict):
        out["prompt_tokens_details"] = {"cached_tokens": details.get("cached_tokens")}
    return out


def response_object(raw: bytes) -> dict[str, Any]:
    """A JSON answer of /v1/responses as a dict (a 502 for the caller when it is not one)."""
    data = orjson.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("the answer is not a JSON object")
    return data


def _sse_data(event: bytes) -> bytes:
    return b"\n".join(
        line[5:].lstrip(b" ")
        for line in event.replace(b"\r\n", b"\n").split(b"\n")
        if line.startswith(b"data:")
    )


class ResponsesTap:
    """A Responses SSE stream behind UsageTap's face (feed/flush/saw_done/saw_error/usage/
    content_events): complete events through, the terminal one held until `flush`."""

    __slots__ = (
        "_buf",
        "_held",
        "_inner",
        "_usage",
        "content_events",
        "max_event",
        "response",
        "saw_done",
        "saw_error",
    )

    def __init__(self, inner: Any = None, max_event: int = MAX_EVENT) -> None:
        self._inner = inner  # a translation's stream, or None for native bytes
        self.max_event = max_event
        self._buf = b""
        self._held = b""
        self._usage: dict[str, Any] | None = None
        self.response: dict[str, Any] | None = None  # the final response object
        self.content_events = 0
        self.saw_done = False
        self.saw_error = False

    def feed(self, data: bytes) -> bytes:
        inner = self._inner
        if inner is not None:
            data = inner.feed(data)
            if not data:
                return b""
        return self._events(data, False)

    def flush(self) -> bytes:
        inner = self._inner
        rest = inner.flush() if inner is not None else b""
        out = self._events(rest, True) if rest or self._buf else b""
        held, self._held = self._held, b""
        if inner is not None:
            self.saw_done = self.saw_done or inner.saw_done
            self.saw_error = self.saw_error or inner.saw_error
        return out + held

    def _events(self, data: bytes, last: bool) -> bytes:
        buf = self._buf + data if self._buf else data
        end = buf.rfind(b"\n\n")
        if end >= 0:
            end += 2
        crlf = buf.rfind(b"\r\n\r\n")
        if crlf >= 0 and crlf + 4 > end:
            end = crlf + 4
        if last:
            end = len(buf)
        if end < 0:
            if len(buf) > self.max_event:
                raise UpstreamRefused(
                    f"an event of the stream exceeds {self.max_event} bytes "
                    "(limits.upstream_max_event_bytes)"
                )
            self._buf = buf
            return b""
        out, self._buf = buf[:end], buf[end:]
        self.content_events += out.count(_DELTA)
        if self._held:
            self._held += out
            return b""
        if _ERROR_EVENT in out:
            self.saw_error = True
        if any(t in out for t in _TERMINAL):
            return self._hold_terminal(out)
        return out

    def _hold_terminal(self, out: bytes) -> bytes:
        """Pass the events before the terminal one; keep it (and what follows) for flush."""
        pos = 0
        for event in out.replace(b"\r\n", b"\n").split(b"\n\n"):
            if any(t in event for t in _TERMINAL):
                payload = _sse_data(event)
                try:
                    obj = orjson.loads(payload)
                except orjson.JSONDecodeError:
                    obj = None
                if isinstance(obj, dict) and isinstance(obj.get("response"), dict):
                    response = obj["response"]
                    self.response = response
                    self._usage = responses_usage(response.get("usage"))
                    if obj.get("type") == "response.failed":
                        self.saw_error = True
                    else:
                        self.saw_done = True
                    break
            pos += len(event) + 2
        if out.find(b"\r\n") >= 0:  # CRLF framing: pass the whole piece, the end is seen
            return out
        self._held = out[pos:]
        return out[:pos]

    def usage(self) -> dict[str, Any] | None:
        if self._usage is not None:
            return self._usage
        inner = self._inner
        return inner.usage() if inner is not None else None
