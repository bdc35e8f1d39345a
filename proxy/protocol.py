"""uvicorn's httptools protocol with the timeouts a front door needs.

uvicorn bounds the idle time between requests (keep-alive) but not the time a client
may take to send a request's headers or body, so a slowloris client sending a byte every
few seconds holds its connection forever. Two timers close that gap: the headers must be
complete within `limits.header_timeout_s` of the request's first byte (or of the
connection opening), and the body within `limits.body_timeout_s` of the headers. On
expiry the connection is closed (with a 408 when nothing has been answered yet); the
request path sees a disconnect and meters it as one. A deadline is met up to a tenth of the
shorter timeout late (one sweep per event loop, not timers per request); the keep-alive
timeout is kept by the same sweep instead of uvicorn's timer per answered request.

POSTs to the OpenAI routes (exact paths, no query string) skip the ASGI cycle: the protocol
hands them to the app's `Handler` as a `FastExchange` (proxy/fastpath.py). Everything else,
including those routes under an unusual spelling, goes through uvicorn's ASGI cycle.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from proxy.errors import error_body
from proxy.fastpath import FastExchange
from proxy.handler import FAST_PATHS, Handler

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


def guarded_protocol(
    header_timeout_s: float, body_timeout_s: float, keep_alive_timeout_s: float = 30.0
) -> type[HttpToolsProtocol]:
    """A protocol class (uvicorn's `http=` option) with these deadlines (the keep-alive
    timeout itself is uvicorn's `timeout_keep_alive`; here it only sets the sweep)."""
    # A deadline is met at most this late: a tenth of the shortest, within [50 ms, 1 s].
    shortest = min(header_timeout_s, body_timeout_s, keep_alive_timeout_s)
    interval_s = min(1.0, max(0.05, shortest / 10))
    sweepers: dict[asyncio.AbstractEventLoop, _Sweeper] = {}
    fast_urls = {path.encode(): endpoint for path, endpoint in FAST_PATHS.items()}

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _deadline: float | None = None
        _idle = False  # the deadline is the keep-alive timeout's
        _sweeper: _Sweeper
        _handler: Handler | None = None

        def _expire(self) -> None:
            if self.transport.is_closing():
                return
            cycle = self.cycle
            if cycle is None or not cycle.response_started:
                self.transport.write(_408)
            self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            handler = getattr(self.app, "handler", None)
            if isinstance(handler, Handler) and self.limit_concurrency is None:
                self._handler = handler
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
            # What uvicorn resets per request; its ASGI scope is built only for a request
            # that goes the ASGI way (_asgi_scope), not for the fast path.
            self.url = b""
            self.expect_100_continue = False
            self.headers = []
            if self._deadline is None:
                self._deadline = self.loop.time() + header_timeout_s

        def _asgi_scope(self) -> None:
            url, headers, expect = self.url, self.headers, self.expect_100_continue
            super().on_message_begin()  # uvicorn's own scope, which resets the three
            self.url, self.expect_100_continue = url, expect
            self.headers = self.scope["headers"] = headers

        def on_headers_complete(self) -> None:
            self._deadline = self.loop.time() + body_timeout_s
            if self._handler is not None:
                path = fast_urls.get(self.url)
                parser = self.parser
                post = parser.get_method() == b"POST"
                if path is not None and post and not parser.should_upgrade():
                    self._start_fast(path)
                    return
            self._asgi_scope()
            super().on_headers_complete()

        def _start_fast(self, path: str) -> None:
            keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
            exchange = FastExchange(self, path, self.headers, keep_alive, self.expect_100_continue)
            previous, self.cycle = self.cycle, exchange  # type: ignore[assignment]
            if previous is None or previous.response_complete:
                self._start_asgi_task(exchange, None)  # type: ignore[arg-type]
            else:  # pipelined behind an unanswered request: answered in order
                self.flow.pause_reading()
                self.pipeline.appendleft((exchange, None))  # type: ignore[arg-type]

        def on_body(self, body: bytes) -> None:
            cycle = self.cycle
            if cycle.__class__ is FastExchange:
                if not cycle.response_complete:
                    cycle.feed(body)  # type: ignore[attr-defined]
                return
            super().on_body(body)

        def on_message_complete(self) -> None:
            self._deadline = None
            cycle = self.cycle
            if cycle.__class__ is FastExchange:
                if not cycle.response_complete:
                    cycle.finish_body()  # type: ignore[attr-defined]
            else:
                super().on_message_complete()
            if cycle.response_complete and not self.pipeline:
                self._arm_idle()  # answered before its body was all in (a 413, say)

        def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
            if cycle.__class__ is FastExchange:
                task = self.loop.create_task(cycle.run(self._handler))  # type: ignore[attr-defined]
                cycle.task = task  # type: ignore[attr-defined]
                task.add_done_callback(self.tasks.discard)
                self.tasks.add(task)
                return
            super()._start_asgi_task(cycle, app)

        def on_response_complete(self) -> None:
            self.server_state.total_requests += 1
            if self.transport.is_closing():
                return
            self.flow.resume_reading()
            if self.pipeline:
                cycle, app = self.pipeline.pop()
                self._start_asgi_task(cycle, app)
            else:
                self._arm_idle()

        def _arm_idle(self) -> None:
            """The keep-alive timeout, unless a deadline (the next request's head, or this
            request's body still arriving) is already running."""
            if self._deadline is None:
                self._deadline = self.loop.time() + self.timeout_keep_alive
                self._idle = True

        def _unset_keepalive_if_required(self) -> None:
            if self._idle:
                self._idle = False
                self._deadline = None

    GuardedHttpToolsProtocol.__qualname__ = "GuardedHttpToolsProtocol"
    return GuardedHttpToolsProtocol


def protocol_for(limits: Any) -> type[HttpToolsProtocol]:
    """The guarded protocol for a config's `limits:` section."""
    return guarded_protocol(
        limits.header_timeout_s, limits.body_timeout_s, limits.keep_alive_timeout_s
    )
