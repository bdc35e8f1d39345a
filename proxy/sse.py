"""Server-sent events relayed as bytes, with usage sniffed on the way through.

Per chunk the work is bytes in, bytes out: find complete events, look for a usage
object with a substring search, and only parse (orjson) the few events that carry one.
Parsing of the usage itself is deferred to the end of the stream.
"""

from __future__ import annotations

from typing import Any

import orjson

_USAGE_KEYS = (b'"usage":{', b'"usage": {')
_EMPTY_CHOICES = (b'"choices":[]', b'"choices": []')
_DONE = b"data: [DONE]"


def _find_usage(event: bytes) -> int:
    """Offset of the `"usage"` key holding an object in `event`, or -1."""
    for key in _USAGE_KEYS:
        i = event.find(key)
        if i >= 0:
            return i
    return -1


def _object_end(data: bytes, start: int) -> int:
    """Index just past the JSON object starting at data[start] == '{' (strings respected)."""
    depth = 0
    i = start
    n = len(data)
    in_str = False
    while i < n:
        c = data[i]
        if in_str:
            if c == 0x5C:  # backslash
                i += 2
                continue
            if c == 0x22:
                in_str = False
        elif c == 0x22:
            in_str = True
        elif c == 0x7B:
            depth += 1
        elif c == 0x7D:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return -1


def cut_inline_usage(event: bytes, at: int) -> bytes:
    """Remove `,"usage":{...}` (or `"usage":{...},`) from one event at byte level."""
    brace = event.find(b"{", at)
    end = _object_end(event, brace)
    if end < 0:
        return event
    j = at - 1
    while j >= 0 and event[j] in b" \t":
        j -= 1
    if j >= 0 and event[j] == 0x2C:  # a preceding comma goes with it
        return event[:j] + event[end:]
    k = end
    while k < len(event) and event[k] in b" \t":
        k += 1
    if k < len(event) and event[k] == 0x2C:
        return event[:at] + event[k + 1 :]
    return event[:at] + event[end:]


class UsageTap:
    """Relays an SSE byte stream event by event and remembers the last usage seen.

    strip_usage_chunk: drop the usage-only chunk (`choices: []`) the proxy asked for
        when the client did not ask for it.
    strip_inline_usage: cut the per-chunk usage object that vLLM's continuous usage
        stats add, when the client did not ask for them.
    """

    __slots__ = (
        "_buf",
        "_last_usage_event",
        "content_events",
        "saw_done",
        "saw_error",
        "strip_inline_usage",
        "strip_usage_chunk",
    )

    def __init__(self, strip_usage_chunk: bool, strip_inline_usage: bool) -> None:
        self.strip_usage_chunk = strip_usage_chunk
        self.strip_inline_usage = strip_inline_usage
        self._buf = b""
        self._last_usage_event: bytes | None = None
        self.content_events = 0
        self.saw_done = False
        self.saw_error = False

    def feed(self, data: bytes) -> bytes:
        """Take upstream bytes; return the complete events to forward (maybe b"")."""
        buf = self._buf + data if self._buf else data
        end = buf.rfind(b"\n\n")
        if end < 0:
            # Tolerate CRLF framing too.
            end = buf.rfind(b"\r\n\r\n")
            if end < 0:
                self._buf = buf
                return b""
            end += 2
        complete = buf[: end + 2]
        self._buf = buf[end + 2 :]
        return self._process(complete)

    def flush(self) -> bytes:
        """Whatever is left when the upstream closes (an event without its blank line)."""
        rest, self._buf = self._buf, b""
        return self._process(rest) if rest.strip() else b""

    def _process(self, complete: bytes) -> bytes:
        count = complete.count(b"data:")
        if _DONE in complete:
            self.saw_done = True
            count -= 1
        if _find_usage(complete) < 0:
            self.content_events += count
            if b'"error"' in complete and complete.lstrip().startswith(b'data: {"error"'):
                self.saw_error = True
            return complete
        out = []
        for event in complete.split(b"\n\n"):
            if not event:
                continue
            at = _find_usage(event)
            if at < 0:
                if event.startswith(b"data:") and _DONE not in event:
                    self.content_events += 1
                out.append(event)
                continue
            self._last_usage_event = event
            usage_only = any(k in event for k in _EMPTY_CHOICES)
            if usage_only:
                if self.strip_usage_chunk:
                    continue
            else:
                self.content_events += 1
                if self.strip_inline_usage:
                    event = cut_inline_usage(event, at)
            out.append(event)
        if not out:
            return b""
        return b"\n\n".join(out) + b"\n\n"

    def usage(self) -> dict[str, Any] | None:
        """The last usage object the upstream sent (final totals, or the latest running ones)."""
        event = self._last_usage_event
        if event is None:
            return None
        payload = event[event.find(b"{") :]
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return None
        usage = data.get("usage") if isinstance(data, dict) else None
        return usage if isinstance(usage, dict) else None
