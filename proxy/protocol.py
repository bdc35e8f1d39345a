"""uvicorn's httptools protocol with the timeouts a front door needs.

uvicorn bounds the idle time between requests (keep-alive) but not the time a client
may take to send a request's headers or body, so a slowloris client sending a byte every
few seconds holds its connection forever. Two timers close that gap: the headers must be
complete within `limits.header_timeout_s` of the request's first byte (or of the
connection opening), and the body within `limits.body_timeout_s` of the headers. On
expiry the connection is closed (with a 408 when nothing has been answered yet); the
request path sees a disconnect and meters it as one. A deadline is met up to a tenth of the
shorter timeout late (one sweep per event loop, not timers per request).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from proxy.errors import error_body

_408_BODY = error_body("The request was not received in time.", "timeout_error", None, "timeout")
_408 = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: " + str(len(_408_BODY)).encode() + b"\r\n\r\n" + _408_BODY
)


class _Sweeper:
    """One timer per event loop checks every connection's deadline, instead of each request
    arming and cancelling two timers of its own (they were ~4% of the proxy's CPU)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval_s: float) -> None:
        self.loop = loop
        self.interval_s = interval_s
        self.conns: set[Any] = set()
        self._handle: asyncio.TimerHandle | None = None

    def add(self, conn: Any) -> None:
        self.conns.add(conn)
        if self._handle is None:
            self._handle = self.loop.call_later(self.interval_s, self._sweep)

    def discard(self, conn: Any) -> None:
        self.conns.discard(conn)

    def _sweep(self) -> None:
        self._handle = None
        now = self.loop.time()
        for conn in [c for c in self.conns if c._deadline is not None and c._deadline <= now]:
            conn._deadline = None
            conn._expire()
        if self.conns:
            self._handle = self.loop.call_later(self.interval_s, self._sweep)


class _HeldHead:
    """Stands in for the transport around uvicorn's `send`. While `holding`, what uvicorn
    writes (the response head) is kept; then the next write carries it along, and a close,
    or the end of a send that wrote nothing (a HEAD answer), flushes it first."""

    __slots__ = ("head", "holding", "real")

    def __init__(self, real: asyncio.Transport) -> None:
        self.real = real
        self.head = b""
        self.holding = True

    def write(self, data: bytes) -> None:
        if self.holding:
            self.head += data
            return
        if self.head:
            data, self.head = self.head + data, b""
        self.real.write(data)

    def flush(self) -> None:
        if self.head:
            self.real.write(self.head)
            self.head = b""

    def is_closing(self) -> bool:
        return self.real.is_closing()

    def close(self) -> None:
        self.flush()
        self.real.close()


class CoalescingCycle(RequestResponseCycle):
    """uvicorn's request cycle, with the response head held back and written together with
    the first piece of the body: one send(2) per small answer instead of two (a syscall was
    ~7% of the proxy's CPU per request). Everything else is uvicorn's own `send`."""

    _held: _HeldHead | None = None

    async def send(self, message: Any) -> None:
        held = self._held
        starting = not self.response_started and message.get("type") == "http.response.start"
        if not starting and held is None:
            await super().send(message)
            return
        transport = self.transport
        if starting:
            held = _HeldHead(transport)
        else:
            assert held is not None
            held.holding = False
            self._held = None
        self.transport = held  # type: ignore[assignment]
        try:
            await super().send(message)
        finally:
            self.transport = transport
            if starting:
                self._held = held
            elif not transport.is_closing():
                held.flush()


def guarded_protocol(header_timeout_s: float, body_timeout_s: float) -> type[HttpToolsProtocol]:
    """A protocol class (uvicorn's `http=` option) with these two deadlines."""
    # A deadline is met at most this late: a tenth of the shorter one, within [50 ms, 1 s].
    interval_s = min(1.0, max(0.05, min(header_timeout_s, body_timeout_s) / 10))
    sweepers: dict[asyncio.AbstractEventLoop, _Sweeper] = {}

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _deadline: float | None = None
        _sweeper: _Sweeper

        def _expire(self) -> None:
            if self.transport.is_closing():
                return
            cycle = self.cycle
            if cycle is None or not cycle.response_started:
                self.transport.write(_408)
            self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            sweeper = sweepers.get(self.loop)
            if sweeper is None:
                sweeper = sweepers[self.loop] = _Sweeper(self.loop, interval_s)
            self._sweeper = sweeper
            self._deadline = self.loop.time() + header_timeout_s
            sweeper.add(self)

        def connection_lost(self, exc: Exception | None) -> None:
            self._deadline = None
            self._sweeper.discard(self)
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._deadline is None:
                self._deadline = self.loop.time() + header_timeout_s

        def on_headers_complete(self) -> None:
            self._deadline = self.loop.time() + body_timeout_s
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._deadline = None
            super().on_message_complete()

        def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
            cycle.__class__ = CoalescingCycle  # the same object, with the coalescing send
            super()._start_asgi_task(cycle, app)

    GuardedHttpToolsProtocol.__qualname__ = "GuardedHttpToolsProtocol"
    return GuardedHttpToolsProtocol


def protocol_for(limits: Any) -> type[HttpToolsProtocol]:
    """The guarded protocol for a config's `limits:` section."""
    return guarded_protocol(limits.header_timeout_s, limits.body_timeout_s)
