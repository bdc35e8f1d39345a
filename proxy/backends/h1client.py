"""A lean HTTP/1.1 client for the request path: one pool of keep-alive connections per backend.

The proxy only ever POSTs a ready body to a known host and relays the answer as bytes, so a
general client's machinery (URL objects, header multidicts, payload registries, cookie jars,
per-request timeout objects) was a third of its CPU per request (py-spy, bench/RESULTS.md).
Here a request is one `transport.write` of prebuilt bytes, and the answer is parsed by
httptools (llhttp, the parser uvicorn uses) inside an asyncio Protocol.

What it keeps from a full client: keep-alive reuse (LIFO, idle connections expire), chunked
and read-until-close bodies, a connect timeout and a read timeout (time without new bytes),
backpressure on streams (it stops reading the socket while `HIGH_WATER` bytes wait to be
relayed), TLS, and one retry on a fresh connection when a reused one turns out to be closed
before any byte of the answer came back (the keep-alive race every pooled client meets).
"""

from __future__ import annotations

import asyncio
import itertools
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httptools

from proxy.timeouts import timeouts_for

# A stream stops being read from the upstream socket once this much waits to be relayed
# (tests/integration/test_backpressure.py holds the proxy to it).
HIGH_WATER = 32 * 1024
# A stream is handed to the relay in pieces of at most this size, so the client's socket
# buffer, not the proxy, holds what a slow reader has not taken yet.
STREAM_PIECE = 16 * 1024


class UpstreamClosed(ConnectionError):
    """The connection ended before the answer was complete."""


# Every read lands in this one buffer: a read is parsed (httptools copies what it hands on)
# before the event loop makes the next, so one buffer serves every connection. A read is at
# most this big: with one read in hand and HIGH_WATER waiting, a stalled stream
# holds at most ~96 KiB of proxy memory.
_READ_SIZE = 64 * 1024
_read_buffer = memoryview(bytearray(_READ_SIZE))


class _Conn(asyncio.BufferedProtocol):
    """One upstream connection and the response being read from it."""

    __slots__ = (
        "_loop",
        "_parser",
        "_waiter",
        "body",
        "buffered",
        "done",
        "error",
        "got_bytes",
        "headers",
        "headers_done",
        "idle_since",
        "keep_alive",
        "lost",
        "on_body",
        "paused",
        "status",
        "streaming",
        "transport",
        "until_close",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self.body: list[bytes] = []
        # httptools calls this per body piece (per chunk of a chunked answer: one per SSE
        # event of a stream): the list's own append, not a Python method; `buffered` and
        # the high-water check follow once per read, in buffer_updated.
        self.on_body = self.body.append
        # One parser for the connection's life: llhttp reads keep-alive answers one
        # after another (a connection is reused only after an answer completed cleanly).
        self._parser = httptools.HttpResponseParser(self)
        self.reset()

    def reset(self) -> None:
        """Ready for the next answer on this connection."""
        self.body.clear()
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.buffered = 0
        self.done = False
        self.error: BaseException | None = None
        self.got_bytes = False
        self.keep_alive = False
        self.paused = False
        self.streaming = False  # only a relayed stream pauses the socket; read() takes all
        self.until_close = True

    # -- asyncio.BufferedProtocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        return _read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.got_bytes = True
        body = self.body
        held = len(body)
        try:
            self._parser.feed_data(_read_buffer[:nbytes])
        except httptools.HttpParserError as exc:
            self.error = ValueError(f"upstream sent malformed HTTP ({exc})")
            self.abort()
        if len(body) > held:
            self.buffered += sum(map(len, itertools.islice(body, held, None)))
            if (
                self.streaming
                and self.buffered >= HIGH_WATER
                and not self.paused
                and self.transport is not None
            ):
                self.paused = True
                self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.headers_done and self.until_close and not self.done and self.error is None:
            self.done = True  # a body without length ends with the connection
        elif not self.done and self.error is None:
            self.error = UpstreamClosed(str(exc) if exc else "connection closed")
        self._wake()

    # -- httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        lname = name.lower()
        if lname == b"content-length" or (
            lname == b"transfer-encoding" and b"chunked" in value.lower()
        ):
            self.until_close = False

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:  # 1xx: the real answer follows
            self.headers = []
            return
        self.status = status
        self.keep_alive = self._parser.should_keep_alive()
        self.headers_done = True

    def on_message_complete(self) -> None:
        if self.headers_done:
            self.done = True

    # -- for the response
    def _wake(self) -> None:
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    async def wait(self, timeout_s: float | None) -> None:
        """Until more arrives, the answer ends or the connection breaks; TimeoutError after
        `timeout_s` without any of these."""
        loop = self._loop
        fut = loop.create_future()
        self._waiter = fut
        if timeout_s is None:
            await fut
            return
        timeout = timeouts_for(loop).at(loop.time() + timeout_s, _expire, fut)
        try:
            await fut  # TimeoutError from _expire
        finally:
            timeout.cancel()

    def take(self, limit: int = 0) -> bytes:
        """What has arrived (at most `limit` bytes if given), and resume reading the socket
        once the rest is below the high-water mark."""
        body = self.body
        if limit and self.buffered > limit:
            first = body[0]
            if len(first) < limit:  # small pieces first: join just enough of them
                first = b"".join(body)
                body.clear()
                body.append(first)
            view = memoryview(first)
            out = bytes(view[:limit])
            body[0] = view[limit:]  # type: ignore[call-overload]
            self.buffered -= limit
        else:
            out = body[0] if len(body) == 1 else b"".join(body)
            if type(out) is not bytes:
                out = bytes(out)
            body.clear()
            self.buffered = 0
        if self.paused and self.buffered < HIGH_WATER and not self.lost:
            self.paused = False
            if self.transport is not None:
                self.transport.resume_reading()
        return out

    def abort(self) -> None:
        if self.transport is not None and not self.lost:
            self.transport.abort()
        self.lost = True


def _expire(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


class H1Response:
    """One upstream answer; `close()` drops the connection (the upstream stops the work)."""

    __slots__ = ("_conn", "_pool", "headers", "raw_headers", "status")

    def __init__(self, pool: H1Pool, conn: _Conn) -> None:
        self._pool = pool
        self._conn = conn
        self.status = conn.status
        self.raw_headers = conn.headers

    @property
    def complete(self) -> bool:
        """The whole answer has arrived and been handed on (nothing left to wait for)."""
        return self._conn.done and not self._conn.buffered

    async def read(self) -> bytes:
        conn = self._conn
        try:
            while not conn.done:
                if conn.error is not None:
                    raise conn.error
                await conn.wait(self._pool.read_timeout_s)
            return conn.take()
        except BaseException:
            self.close()
            raise
        finally:
            self.release()

    async def chunks(self) -> AsyncIterator[bytes]:
        conn = self._conn
        conn.streaming = True
        try:
            while True:
                if conn.buffered:
                    yield conn.take(STREAM_PIECE)
                    continue
                if conn.done:
                    return
                if conn.error is not None:
                    raise conn.error
                await conn.wait(self._pool.read_timeout_s)
        except BaseException:
            self.close()
            raise
        finally:
            self.release()

    def close(self) -> None:
        self._conn.abort()
        self.release()

    def release(self) -> None:
        """Back to the pool if the answer was read whole and the connection may be reused."""
        conn = self._conn
        if self._pool is None:
            return
        pool, self._pool = self._pool, None  # type: ignore[assignment]
        pool.put(conn)


class H1Pool:
    """Keep-alive connections to one upstream origin, reused most-recent first."""

    def __init__(
        self,
        origin: str,
        headers: dict[str, str],
        *,
        connect_timeout_s: float | None,
        read_timeout_s: float | None,
        max_idle: int,
        keepalive_s: float = 30.0,
    ) -> None:
        url = urlsplit(origin)  # any path in it is ignored
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) URL: {origin!r}")
        tls = url.scheme == "https"
        default_port = 443 if tls else 80
        self.host = url.hostname
        self.port = url.port or default_port
        self.ssl: ssl.SSLContext | None = ssl.create_default_context() if tls else None
        host = f"[{self.host}]" if ":" in self.host else self.host
        authority = host if self.port == default_port else f"{host}:{self.port}"
        lines = [f"Host: {authority}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self._head = ("\r\n".join(lines) + "\r\n").encode("latin-1")
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.max_idle = max_idle
        self.keepalive_s = keepalive_s
        self._idle: deque[_Conn] = deque()
        self._starts: dict[str, bytes] = {}

    def _start(self, method: str, path: str) -> bytes:
        key = method + path
        start = self._starts.get(key)
        if start is None:
            start = f"{method} {path} HTTP/1.1\r\n".encode("latin-1") + self._head
            self._starts[key] = start
        return start

    async def request(self, method: str, path: str, body: bytes = b"") -> H1Response:
        """Send and wait for the answer's head. OSError/TimeoutError/ValueError if none came.
        `path` is the whole request target (the pool knows only the origin)."""
        if body or method != "GET":
            head = self._start(method, path) + b"Content-Length: %d\r\n\r\n" % len(body)
        else:
            head = self._start(method, path) + b"\r\n"
        conn = self._reuse()
        if conn is not None:
            try:
                return await self._exchange(conn, head, body)
            except UpstreamClosed:
                if conn.got_bytes:
                    raise
                # Closed by the upstream while idle, before it read this request: once more
                # on a new connection.
        conn = await self._connect()
        return await self._exchange(conn, head, body)

    async def _exchange(self, conn: _Conn, head: bytes, body: bytes) -> H1Response:
        transport = conn.transport
        assert transport is not None
        try:
            if len(body) < 65536:
                transport.write(head + body)  # one send(2) for the usual request
            else:
                transport.write(head)  # a large body is not copied to be joined
                transport.write(body)
            while not conn.headers_done:
                if conn.error is not None:
                    raise conn.error
                await conn.wait(self.read_timeout_s)
        except BaseException:
            conn.abort()
            raise
        return H1Response(self, conn)

    def _reuse(self) -> _Conn | None:
        idle = self._idle
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.lost or now - conn.idle_since > self.keepalive_s:
                conn.abort()
                continue
            transport = conn.transport
            if transport is None or transport.is_closing():
                continue
            return conn
        return None

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        conn = _Conn(loop)
        async with asyncio.timeout(self.connect_timeout_s):
            await loop.create_connection(
                lambda: conn,
                self.host,
                self.port,
                ssl=self.ssl,
                server_hostname=self.host if self.ssl is not None else None,
            )
        return conn

    def put(self, conn: _Conn) -> None:
        if not conn.done or not conn.keep_alive or conn.lost or conn.error is not None:
            conn.abort()
            return
        if len(self._idle) >= self.max_idle:
            conn.abort()
            return
        conn.reset()
        conn.idle_since = time.monotonic()
        self._idle.append(conn)

    def close(self) -> None:
        while self._idle:
            self._idle.pop().abort()
