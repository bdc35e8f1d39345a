"""OpenAI's Responses API on the request path: the conversation a turn continues, what is
kept of it, and the usage of its answers (docs/dialects.md, "The /v1/responses route").

`POST /v1/responses` goes through the same handler as chat (auth, rules, budgets,
failover, metering); this module adds what only that route needs:

- `Turn`: the request's input as items, the stored response its `previous_response_id`
  names (one state lookup, inherent to the feature), and per attempt the body to send:
  as it is to the backend that owns the previous response's upstream id, else with the
  stored conversation spelled out as input (a translated target, or failover to another
  native one), so a conversation survives a change of backend.
- `HoldEnd`: a Responses stream's tap (native bytes or a translation's events, both
  from proxy/request/dialect.py) whose terminal event is held back until the response
  is stored, so a client that sees the end can continue the conversation at once.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, Any

from proxy.dialects.responses_request import input_items
from proxy.request.errors import ProxyError

if TYPE_CHECKING:
    from proxy.runtime import Runtime

log = logging.getLogger("hybridgate.responses")

_TERMINAL = (b'"response.completed"', b'"response.incomplete"', b'"response.failed"')


def _invalid(message: str, param: str | None, code: str = "invalid_value") -> ProxyError:
    return ProxyError(400, message, param=param, code=code)


def checked_input(data: dict[str, Any]) -> list[Any]:
    """`input` as items (proxy/dialects' `input_items`), after checking its shape."""
    value = data["input"]
    if not isinstance(value, str | list):
        raise _invalid(
            "'input' must be a string or an array of input items.", "input", "invalid_type"
        )
    if isinstance(value, list):
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise _invalid(
                    f"Invalid 'input[{i}]': expected an object.", f"input[{i}]", "invalid_type"
                )
    return input_items(data)


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

    __slots__ = ("data", "items", "prev", "prev_id", "response_id", "store", "tenant")

    def __init__(self, data: dict[str, Any], tenant: str) -> None:
        self.data = data
        self.tenant = tenant
        self.items: list[Any] = checked_input(data)
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
        self.response_id: str | None = None  # a translated response's, made here

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

    def bind(self, xl: Any) -> Any:
        """A translation for this request: the response id the proxy gives it (the same
        on every attempt) and the stored conversation as its history."""
        if self.response_id is None:
            self.response_id = f"resp_{secrets.token_hex(24)}"
        history = self.conversation() if self.prev is not None else None
        return xl.bind(self.data, self.response_id, history)

    def data_for(self, backend: str) -> dict[str, Any]:
        """The request for a native attempt: as the client sent it when `backend` holds
        the previous response itself, else with the stored conversation as its input."""
        data = self.data
        prev = self.prev
        if prev is None or (prev.get("native") and prev.get("backend") == backend):
            return data
        out = dict(data)
        del out["previous_response_id"]
        out["input"] = [*_replayable(self.conversation()), *self.items]
        return out

    async def keep(self, rt: Runtime, response: dict[str, Any], backend: str, native: bool) -> None:
        """Store the finished response (when `store`), so later turns and the item routes
        find it; a native one is kept too: its owner for GET/DELETE/cancel, and its
        conversation for a failover to another backend (or for every later turn, when
        its backend keeps no responses itself)."""
        rid = response.get("id")
        if not self.store or not isinstance(rid, str) or not rid:
            return
        # A native answer from a backend that keeps none (vLLM by default): held here like
        # a translated one, so the next turn replays it and GET is answered from the store.
        native = native and backend in rt.response_keepers
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
        try:
            await rt.responses.put(self.tenant, rid, doc, rt.config.responses.retention_s)
        except ProxyError as err:  # the answer was paid for: it goes out, not kept
            log.warning("response %s not stored: %s", rid[:64], err.message)
        except TypeError as exc:  # not serialisable (an upstream's integer over 64 bits...)
            log.warning("response %s not stored: %s", rid[:64], exc)


def reasoning_tokens(response: Any) -> int:
    """The reasoning tokens a response object reports (among its output tokens)."""
    usage = response.get("usage") if isinstance(response, dict) else None
    details = usage.get("output_tokens_details") if isinstance(usage, dict) else None
    n = details.get("reasoning_tokens") if isinstance(details, dict) else None
    return n if type(n) is int and n > 0 else 0


class HoldEnd:
    """A Responses stream's tap (the native `ResponsesTap`, or a translation's
    `ResponsesStream`: complete events out) with its terminal event held back until
    `flush`, so the response is stored before the client sees it end."""

    __slots__ = ("_held", "_inner")

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._held = b""

    def feed(self, data: bytes) -> bytes:
        out: bytes = self._inner.feed(data)
        if self._held:
            self._held += out
            return b""
        for mark in _TERMINAL:
            at = out.find(mark)
            if at >= 0:
                gap = out.rfind(b"\n\n", 0, at)  # the end of the event before it
                start = gap + 2 if gap >= 0 else 0  # (CRLF framing: the piece whole)
                self._held = out[start:]
                return out[:start]
        return out

    def flush(self) -> bytes:
        rest: bytes = self._inner.flush()
        held, self._held = self._held, b""
        return held + rest

    def fail(self, message: str, code: str) -> bytes:
        """A translation's own ending of a cut stream (response.failed), else nothing."""
        fail = getattr(self._inner, "fail", None)
        return fail(message, code) if fail is not None else b""

    @property
    def saw_done(self) -> bool:
        return bool(self._inner.saw_done)

    @property
    def saw_error(self) -> bool:
        return bool(self._inner.saw_error)

    @property
    def content_events(self) -> int:
        return int(self._inner.content_events)

    @property
    def response(self) -> dict[str, Any] | None:
        response: dict[str, Any] | None = self._inner.response
        return response

    def usage(self) -> dict[str, Any] | None:
        usage: dict[str, Any] | None = self._inner.usage()
        return usage
