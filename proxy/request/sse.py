"""Server-sent events relayed as bytes, with usage sniffed on the way through.

Per chunk the work is bytes in, bytes out: find complete events, look for a usage
object with a substring search, and only parse (orjson) the few events that carry one.
Parsing of the usage itself is deferred to the end of the stream, and so is counting the
events (needed only when the upstream's usage is missing or in doubt).
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from proxy.backends.base import UpstreamRefused

_USAGE = b'"usage"'
# A usage object as OpenAI and vLLM write it (numbers, null, objects of those nested once):
# matched by the regex engine instead of walking it byte by byte in Python.
USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*(\{(?:[^{}"]|"[a-z_]*"|\{[^{}]*\})*\})')
_EMPTY_CHOICES = (b'"choices":[]', b'"choices": []')
_DONE = b"data: [DONE]"
# Bytes of relayed events a stream holds (by reference) to count later, if ever; past this
# they are counted now. It bounds what every open stream keeps after relaying it; a fast
# upstream's whole answer in one piece (at most h1client's STREAM_PIECE, 16 KiB) fits.
_MAX_UNCOUNTED = 16 * 1024
# One event may hold at most this (limits.upstream_max_event_bytes): an upstream that never
# ends its event must not grow a stream's buffer without bound.
MAX_EVENT = 1024 * 1024


def _find_usage(data: bytes, start: int = 0) -> int:
    """Offset of the first `"usage":{` or `"usage": {` in `data[start:]`, or -1 (one pass
    over a stream's bytes, not one per spelling)."""
    i = data.find(_USAGE, start)
    while i >= 0:
        if data.startswith(b":{", i + 7) or data.startswith(b": {", i + 7):
            return i
        i = data.find(_USAGE, i + 7)
    return -1


def _rfind_usage(data: bytes, end: int) -> int:
    """Offset of the last `"usage":{` or `"usage": {` in `data[:end]`, or -1: searched from
    the end, where an OpenAI-style stream keeps its one usage object."""
    i = data.rfind(_USAGE, 0, end)
    while i >= 0:
        if data.startswith(b":{", i + 7) or data.startswith(b": {", i + 7):
            return i
        i = data.rfind(_USAGE, 0, i)
    return -1


def _event_start(data: bytes, lo: int, at: int) -> int:
    """Where the event holding data[at] begins: after the last blank line (LF or CRLF)
    between `lo` and `at`, else `lo`."""
    i = data.rfind(b"\n\n", lo, at)
    # A CRLF boundary matters only after the last LF one (a search back to `lo` for one
    # that LF-framed streams never have was a scan of the whole buffer per usage event).
    j = data.rfind(b"\n\r\n", max(lo, i), at)
    return max(lo, i + 2 if i >= 0 else lo, j + 3 if j >= 0 else lo)


def _event_end(data: bytes, at: int) -> int:
    """Just past the blank line that ends the event holding data[at], else len(data)."""
    i = data.find(b"\n\n", at)
    j = data.find(b"\n\r\n", at)
    if i < 0 and j < 0:
        return len(data)
    if j < 0 or (0 <= i < j):
        return i + 2
    return j + 3


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
    m = USAGE_OBJECT.match(event, at)
    # The usual shape by the regex engine; strings with braces in them or deeper nesting
    # walked byte by byte.
    end = m.end() if m is not None else _object_end(event, event.find(b"{", at))
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
    inline_expected: the upstream may send per-chunk usage objects (it was asked for
        them): every event is looked at. Otherwise a piece is searched from its end for its
        one usage object (the usage chunk), and the scan of every event is spent only if
        that turns out to be inline usage to cut after all.
    """

    __slots__ = (
        "_buf",
        "_counted",
        "_last_usage_event",
        "_uncounted",
        "_uncounted_bytes",
        "inline_expected",
        "max_event",
        "saw_done",
        "saw_error",
        "strip_inline_usage",
        "strip_usage_chunk",
    )

    def __init__(
        self,
        strip_usage_chunk: bool,
        strip_inline_usage: bool,
        inline_expected: bool = True,
        max_event: int = MAX_EVENT,
    ) -> None:
        self.max_event = max_event
        self.strip_usage_chunk = strip_usage_chunk
        self.strip_inline_usage = strip_inline_usage
        self.inline_expected = inline_expected
        self._buf = b""
        self._last_usage_event: bytes | None = None
        self._counted = 0
        self._uncounted: list[tuple[bytes, int, int]] = []
        self._uncounted_bytes = 0
        self.saw_done = False
        self.saw_error = False

    @property
    def content_events(self) -> int:
        """Content events relayed so far (usage-only chunks and [DONE] not counted)."""
        if self._uncounted:
            self._fold()
        return self._counted

    def feed(self, data: bytes) -> bytes:
        """Take upstream bytes; return the complete events to forward (maybe b"")."""
        buf = self._buf + data if self._buf else data
        end = buf.rfind(b"\n\n")
        if end < 0:
            # Tolerate CRLF framing too.
            end = buf.rfind(b"\r\n\r\n")
            if end < 0:
                if len(buf) > self.max_event:
                    self._too_large()
                self._buf = buf
                return b""
            end += 2
        complete = buf[: end + 2]
        self._buf = buf[end + 2 :]
        if len(self._buf) > self.max_event:
            self._too_large()
        return self._process(complete)

    def _too_large(self) -> None:
        self._buf = b""
        raise UpstreamRefused(f"upstream stream event over {self.max_event} bytes")

    def flush(self) -> bytes:
        """Whatever is left when the upstream closes (an event without its blank line)."""
        rest, self._buf = self._buf, b""
        return self._process(rest) if rest.strip() else b""

    def _process(self, complete: bytes) -> bytes:
        # [DONE] ends a stream: looked for at the end of the bytes first, so a stream in
        # hand whole is not scanned for it.
        n = len(complete)
        if complete.find(_DONE, n - 64) >= 0 or _DONE in complete:
            self.saw_done = True
            self._counted -= 1  # counted with the plain events; not content
        if self.inline_expected:
            return self._process_every_event(complete)
        at = _rfind_usage(complete, n)
        if at < 0:
            return self._plain(complete)
        start = _event_start(complete, 0, at)
        end = _event_end(complete, at)
        event = complete[start:end]
        if not any(k in event for k in _EMPTY_CHOICES):
            if self.strip_inline_usage:  # inline usage nobody asked for: every event, then
                return self._process_every_event(complete)
            self._last_usage_event = event
            self._count(complete, 0, n)
            return complete
        self._last_usage_event = event
        self._count(complete, 0, start)
        self._count(complete, end, n)
        if self.strip_usage_chunk:
            return complete[:start] + complete[end:]
        return complete

    def _process_every_event(self, complete: bytes) -> bytes:
        """Each event that carries a usage object looked at, the runs of plain events
        between them passed through as they are."""
        at = _find_usage(complete)
        if at < 0:
            return self._plain(complete)
        out: list[bytes] = []
        pos = 0
        n = len(complete)
        changed = False
        while at >= 0:
            start = _event_start(complete, pos, at)
            end = _event_end(complete, at)
            if start > pos:
                self._count(complete, pos, start)
                out.append(complete[pos:start])
            event = complete[start:end]  # with its blank line
            self._last_usage_event = event
            if any(k in event for k in _EMPTY_CHOICES):  # the usage-only chunk
                if self.strip_usage_chunk:
                    changed = True
                else:
                    out.append(event)
            else:
                self._counted += 1
                if self.strip_inline_usage:
                    event = cut_inline_usage(event, at - start)
                    changed = True
                out.append(event)
            pos = end
            at = _find_usage(complete, pos)
        if pos < n:
            self._count(complete, pos, n)
            out.append(complete[pos:])
        return b"".join(out) if changed else complete

    def _plain(self, complete: bytes) -> bytes:
        """Events without a usage object: counted (later), passed through as they are."""
        self._count(complete, 0, len(complete))
        if complete.lstrip().startswith(b'data: {"error"'):
            self.saw_error = True
        return complete

    def _count(self, data: bytes, start: int, end: int) -> None:
        """Events in data[start:end], a run without usage objects: kept to be counted if
        the count is asked for, up to a bound on what is held."""
        if end > start:
            self._uncounted.append((data, start, end))
            self._uncounted_bytes += end - start
            if self._uncounted_bytes > _MAX_UNCOUNTED:
                self._fold()

    def _fold(self) -> None:
        self._counted += sum(data.count(b"data:", s, e) for data, s, e in self._uncounted)
        self._uncounted.clear()
        self._uncounted_bytes = 0

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
