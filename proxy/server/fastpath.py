"""The OpenAI routes served straight from our uvicorn protocol, without ASGI.

Through ASGI, each proxied request paid for uvicorn's request cycle (an Event, a scope, a
message dict per send, a regex over every response header), a second task to watch for
the client leaving, and a timer per request: about a fifth of the proxy's CPU. Here the
protocol (proxy/server/protocol.py) feeds the body in, the disconnect arrives as a callback, and
the answer goes out as one write. Everything else on the connection (operator routes and
other methods) stays on uvicorn's ASGI cycle; pipelined requests of both kinds
are answered in order.

A `FastExchange` stands where uvicorn's protocol keeps its current cycle, so it carries
the attributes that protocol reads: response_started/complete, disconnected, keep_alive,
message_event (whose `set()` is the disconnect callback).
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import Any

from proxy.request.errors import error_body
from proxy.server.exchange import ClientGone, Headers, too_large

log = logging.getLogger("hybridgate")

_STATUS_LINES: dict[int, bytes] = {}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_500_BODY = error_body("Internal proxy error.", "server_error", None, None)
_500 = (
    b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(_500_BODY), _500_BODY)
)


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {phrase}\r\n".encode()
    return line


def head(status: int, headers: Headers, tail: bytes) -> bytes:
    """A response head. Header values come from our code and from upstream answers our
    HTTP clients parsed (no CR or LF can survive that); the counts make sure of it in one
    pass over the bytes rather than a regex per header."""
    out = b"".join([status_line(status), *[k + b": " + v + b"\r\n" for k, v in headers], tail])
    lines = len(headers) + 1 + tail.count(b"\n")
    if out.count(b"\n") != lines or out.count(b"\r") != lines:
        raise ValueError("a response header contains CR or LF")
    return out


class FastExchange:
    """One request on the fast path (an `Exchange`, proxy/server/exchange.py)."""

    __slots__ = (
        "_body",
        "_head",
        "_waiter",
        "_watching",
        "chunked",
        "disconnected",
        "expect_100",
        "gone",
        "headers",
        "keep_alive",
        "message_event",
        "more_body",
        "path",
        "protocol",
        "response_complete",
        "response_started",
        "task",
    )
    task: asyncio.Task[None]
    """The task serving this request: set by the protocol when it starts it."""

    def __init__(
        self,
        protocol: Any,
        path: str,
        headers: Headers,
        keep_alive: bool,
        expect_100: bool,
        http10: bool = False,
    ) -> None:
        self.protocol = protocol  # uvicorn's HttpToolsProtocol, ours (proxy/server/protocol.py)
        self.path = path
        self.headers = headers
        self.keep_alive = keep_alive and not http10
        self.expect_100 = expect_100
        # HTTP/1.0 has no chunked encoding (RFC 9112 6.1): a stream to such a client is
        # delimited by closing the connection (which HTTP/1.0 does after each answer).
        self.chunked = not http10
        self._body = bytearray()
        self.more_body = True
        self._waiter: asyncio.Future[None] | None = None
        self._watching = False
        self._head = b""
        self.gone = False
        self.disconnected = False
        self.response_started = False
        self.response_complete = False
        self.message_event = self  # uvicorn's protocol calls message_event.set() on disconnect

    # ---- fed by the protocol

    def feed(self, data: bytes) -> None:
        self._body += data
        self._wake()

    def finish_body(self) -> None:
        self.more_body = False
        self._wake()

    def set(self) -> None:
        """The connection was lost (uvicorn set `disconnected` first, unless answered)."""
        self._wake()
        if self.disconnected and self._watching:
            self._watching = False
            self.gone = True
            self.task.cancel()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def run(self, handler: Any) -> None:
        """The task of this request: the handler, and what uvicorn's run_asgi guarantees
        after it (a 500 if nothing was answered, a closed connection if half was)."""
        try:
            await handler.serve(self, self.path)
        except asyncio.CancelledError:
            self.protocol.transport.close()
            raise
        except Exception:
            log.exception("internal error on the fast path")
            if not self.response_started and not self.disconnected:
                self.response_started = True
                self.protocol.transport.write(_500)
            self.protocol.transport.close()
        else:
            if not self.response_complete and not self.disconnected:
                self.protocol.transport.close()

    # ---- the Exchange surface, used by the handler

    async def body(self, limit: int) -> bytes:
        if self.more_body and self.expect_100 and not self.protocol.transport.is_closing():
            self.expect_100 = False
            self.protocol.transport.write(_CONTINUE)
        while self.more_body:
            if len(self._body) > limit:
                raise too_large(limit)
            if self.disconnected:
                raise ClientGone()
            self._waiter = self.protocol.loop.create_future()
            await self._waiter
        if self.disconnected:
            raise ClientGone()
        if len(self._body) > limit:
            raise too_large(limit)
        body = bytes(self._body)
        self._body = bytearray()
        return body

    def watch(self) -> FastExchange:
        self._watching = not self.disconnected
        if self.disconnected:  # gone before the watch began: the same as after
            self.gone = True
            self.task.cancel()
        return self

    def stop(self) -> None:
        self._watching = False

    async def respond(self, status: int, headers: Headers, body: bytes) -> None:
        self._start()
        if self.disconnected:
            return
        length = b"content-length: " + str(len(body)).encode() + b"\r\n"
        close = b"" if self.keep_alive else b"connection: close\r\n"
        self.protocol.transport.write(head(status, headers, length + close + b"\r\n") + body)
        self._complete()

    async def start_stream(self, status: int, headers: Headers) -> None:
        self._start()
        close = b"" if self.keep_alive else b"connection: close\r\n"
        framing = b"transfer-encoding: chunked\r\n" if self.chunked else b""
        # Held until the first piece of the body: one write, not two.
        self._head = head(status, headers, framing + close + b"\r\n")

    async def send_chunk(self, data: bytes) -> None:
        if not data:
            return
        await self._write(b"%x\r\n" % len(data) + data + b"\r\n" if self.chunked else data)

    async def end_stream(self, data: bytes) -> None:
        if not self.chunked:
            tail = data
        elif data:
            tail = b"%x\r\n" % len(data) + data + b"\r\n0\r\n\r\n"
        else:
            tail = b"0\r\n\r\n"
        await self._write(tail)
        self._complete()

    # ---- internals

    def _start(self) -> None:
        if self.response_started:
            raise RuntimeError("the response has already started")
        self.response_started = True
        self.expect_100 = False

    async def _write(self, data: bytes) -> None:
        flow = self.protocol.flow
        if flow.write_paused and not self.disconnected:
            await flow.drain()
        if self.disconnected:
            return
        if self._head:
            data, self._head = self._head + data, b""
        self.protocol.transport.write(data)

    def _complete(self) -> None:
        if self.response_complete:
            return
        self.response_complete = True
        self._watching = False
        if self.disconnected:
            return
        if not self.keep_alive:
            self.protocol.transport.close()
        self.protocol.on_response_complete()
