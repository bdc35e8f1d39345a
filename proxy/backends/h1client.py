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

As strict as h11 about what it accepts (docs/security.md, "Hostile upstreams"): bytes are
taken only for a request that was written and only up to the end its framing allows; a
connection that receives anything else (a stray answer while idle, a surplus after
Content-Length or after a chunked body's end) is poisoned and closed, never reused, so no
answer can reach the next request on it. An answer's head, its header count and its body
are capped (`limits.upstream_max_*`), checked once per read, not per byte; a 101 fails the
attempt; a gzip or deflate body is decoded within the body cap (no zip bombs).
"""

from __future__ import annotations

import asyncio
import itertools
import ssl
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator
from typing import NamedTuple
from urllib.parse import urlsplit

import httptools

from proxy.backends.base import UpstreamRefused
from proxy.request.timeouts import deadline_in, timeouts_for

# A stream stops being read from the upstream socket once this much waits to be relayed
# (tests/integration/test_backpressure.py holds the proxy to it).
HIGH_WATER = 32 * 1024
# A stream is handed to the relay in pieces of at most this size, so the client's socket
# buffer, not the proxy, holds what a slow reader has not taken yet.
STREAM_PIECE = 16 * 1024


class UpstreamClosed(ConnectionError):
    """The connection ended before the answer was complete."""


class Caps(NamedTuple):
    """What one answer may hold (config: `limits.upstream_max_*`)."""

    head_bytes: int = 64 * 1024
    headers: int = 100
    body_bytes: int = 64 * 1024 * 1024


# Content-Encoding values decoded, with their zlib window bits (gzip header; zlib wrapper).
_DECODERS = {
    b"gzip": 16 + zlib.MAX_WBITS,
    b"x-gzip": 16 + zlib.MAX_WBITS,
    b"deflate": zlib.MAX_WBITS,
}


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
        "caps",
        "decoder",
        "done",
        "encoding",
        "error",
        "expecting",
        "fed",
        "got_bytes",
        "headers",
        "headers_done",
        "idle_since",
        "keep_alive",
        "lost",
        "on_body",
        "paused",
        "stall",
        "status",
        "streaming",
        "transport",
        "until_close",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, caps: Caps = Caps()) -> None:
        self._loop = loop
        self.caps = caps
        # True from the moment a request is written until its answer is complete: bytes
        # at any other time belong to no request and poison the connection.
        self.expecting = False
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
        self.expecting = False
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.buffered = 0
        self.done = False
        self.error: BaseException | None = None
        self.got_bytes = False
        self.keep_alive = False
        self.paused = False
        # Bytes since the body last grew (head, chunk framing, trailers, interim answers):
        # capped at caps.head_bytes, which bounds httptools' per-header concatenation.
        self.stall = 0
        self.encoding: bytes | None = None
        self.decoder: zlib._Decompress | None = None
        self.fed = False
        self.streaming = False  # only a relayed stream pauses the socket; read() takes all
        self.until_close = True

    # -- asyncio.BufferedProtocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        return _read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        if not self.expecting:
            # Nothing was asked, or the answer is already complete: a stray answer or a
            # surplus. Never parsed, never handed on; the connection is not reused.
            self.poison("upstream sent bytes no request asked for")
            return
        self.got_bytes = True
        body = self.body
        held = len(body)
        try:
            self._parser.feed_data(_read_buffer[:nbytes])
        except httptools.HttpParserUpgrade:
            self.fail(UpstreamRefused("upstream switched protocols (HTTP 101)"))
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, _Refused):
                self.fail(UpstreamRefused(str(cause)))
            elif self.done:  # bytes after the end of a complete answer: keep it, drop the rest
                self.poison("upstream sent bytes past the end of its answer")
            else:
                self.fail(ValueError(f"upstream sent malformed HTTP ({exc})"))
        if len(body) > held:
            if self.decoder is not None:
                self._decode(held)
            grown = sum(map(len, itertools.islice(body, held, None)))
            self.buffered += grown
            if (
                self.streaming
                and self.buffered >= HIGH_WATER
                and not self.paused
                and self.transport is not None
            ):
                self.paused = True
                self.transport.pause_reading()
            if grown:
                self.stall = 0
                if self.buffered > self.caps.body_bytes:
                    cap = self.caps.body_bytes
                    self.fail(UpstreamRefused(f"upstream answer over {cap} bytes"))
            else:
                self._stalled(nbytes)
        else:
            if self.decoder is not None and self.done and self.fed:
                self._decode(held)
            self._stalled(nbytes)
        self._wake()

    def _stalled(self, nbytes: int) -> None:
        """A read that added no body: a head (or interim answers, chunk framing, trailers)
        may not grow past caps.head_bytes, nor a head past caps.headers headers."""
        self.stall += nbytes
        caps = self.caps
        if self.stall > caps.head_bytes and not self.done:
            where = "head" if not self.headers_done else "framing without body"
            self.fail(UpstreamRefused(f"upstream answer {where} over {caps.head_bytes} bytes"))
        elif len(self.headers) > caps.headers:
            self.fail(UpstreamRefused(f"upstream answer with over {caps.headers} headers"))

    def _decode(self, held: int) -> None:
        """Decode the pieces that just arrived (body[held:]) in place. What waits decoded
        (a whole answer, or a stream's unrelayed part) stays within the body cap: zlib is
        told to stop one byte past it, so a zip bomb costs no more than the cap."""
        body, decoder = self.body, self.decoder
        assert decoder is not None
        raw = b"".join(itertools.islice(body, held, None))
        del body[held:]
        first, self.fed = not self.fed, True
        cap = self.caps.body_bytes
        room = max(cap - self.buffered, 0) + 1
        try:
            try:
                out = decoder.decompress(raw, room)
            except zlib.error:
                if not (first and self.encoding == b"deflate"):
                    raise
                # "deflate" without its zlib wrapper, as some servers send it
                decoder = self.decoder = zlib.decompressobj(-zlib.MAX_WBITS)
                out = decoder.decompress(raw, room)
            if self.done and not decoder.unconsumed_tail:
                out += decoder.flush()
        except zlib.error as exc:
            self.fail(UpstreamRefused(f"upstream {self._coding()} body does not decode ({exc})"))
            return
        if self.buffered + len(out) > cap or decoder.unconsumed_tail:
            self.fail(UpstreamRefused(f"upstream answer over {cap} bytes decoded"))
            return
        if self.done and not decoder.eof:
            self.fail(UpstreamRefused(f"upstream {self._coding()} body cut short"))
            return
        if decoder.unused_data:  # a second gzip member, or bytes after the first one
            self.fail(UpstreamRefused(f"upstream {self._coding()} body has bytes past its end"))
            return
        if out:
            body.append(out)

    def _coding(self) -> str:
        return (self.encoding or b"").decode("latin-1")[:40]

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.headers_done and self.until_close and not self.done and self.error is None:
            self.done = True  # a body without length ends with the connection
            self.expecting = False
            if self.decoder is not None and self.fed:
                self._decode(len(self.body))
        elif not self.done and self.error is None:
            self.error = UpstreamClosed(str(exc) if exc else "connection closed")
        self._wake()

    # -- httptools callbacks
    def on_message_begin(self) -> None:
        if self.done:  # a second answer in the same read as the first one's end
            raise _Surplus

    def on_header(self, name: bytes, value: bytes) -> None:
        # Trailers land here too: counted with the headers (the cap is checked again at the
        # answer's end), never passed on (the client's copy is taken at the head's end).
        self.headers.append((name, value))
        lname = name.lower()
        if lname == b"content-length":
            self.until_close = False
        elif lname == b"transfer-encoding":
            # Only chunked, as h11: a transfer coding under it (gzip, chunked) would be
            # relayed undecoded, and chunked not last means read-until-close.
            if value.strip().lower() != b"chunked":
                coding = value.decode("latin-1")[:40]
                raise _Refused(f"upstream answer in Transfer-Encoding {coding!r}, not chunked")
            self.until_close = False
        elif lname == b"content-encoding":
            self.encoding = value.strip().lower()

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:  # 1xx: the real answer follows (101 is refused in buffer_updated)
            self.headers = []
            self.encoding = None
            return
        if len(self.headers) > self.caps.headers:
            raise _Refused(f"upstream answer with over {self.caps.headers} headers")
        encoding = self.encoding
        if encoding is not None and encoding != b"identity":
            wbits = _DECODERS.get(encoding)
            if wbits is None:
                name = encoding.decode("latin-1")[:40]
                raise _Refused(f"upstream answer in Content-Encoding {name!r}, not decodable")
            self.decoder = zlib.decompressobj(wbits)
        self.status = status
        self.keep_alive = self._parser.should_keep_alive()
        self.headers_done = True

    def on_message_complete(self) -> None:
        if self.headers_done:
            if len(self.headers) > self.caps.headers:  # trailers past the cap
                raise _Refused(f"upstream answer with over {self.caps.headers} headers")
            self.done = True
            self.expecting = False

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

    def fail(self, error: BaseException) -> None:
        """The answer is unusable: the waiter sees `error`, the connection is closed."""
        if self.error is None:
            self.error = error
        self.abort()

    def poison(self, why: str) -> None:
        """Bytes no request asked for: close the connection; an answer already complete
        stays good, an answer under way fails."""
        self.expecting = False
        if not self.done:
            self.fail(UpstreamRefused(why))
        else:
            self.abort()
        self._wake()

    def abort(self) -> None:
        if self.transport is not None and not self.lost:
            self.transport.abort()
        self.lost = True


class _Surplus(Exception):
    """Raised in a parser callback to stop parsing (httptools wraps it)."""


class _Refused(_Surplus):
    """A refusal decided in a parser callback: buffer_updated reports its message."""


def _expire(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


class H1Response:
    """One upstream answer; `close()` drops the connection (the upstream stops the work)."""

    __slots__ = ("_conn", "_pool", "headers", "raw_headers", "status")
    headers: list[tuple[bytes, bytes]]
    """Set by the backend: the upstream headers worth passing on (UpstreamResponse)."""

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
            if conn.error is not None:  # complete, but over a cap or undecodable
                raise conn.error
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
                if conn.error is not None:
                    raise conn.error
                if conn.done:
                    return
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
        caps: Caps = Caps(),
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
        self.caps = caps
        self._idle: deque[_Conn] = deque()
        self._starts: dict[str, bytes] = {}

    def _start(self, method: str, path: str) -> bytes:
        key = method + path
        start = self._starts.get(key)
        if start is None:
            start = f"{method} {path} HTTP/1.1\r\n".encode("latin-1") + self._head
            self._starts[key] = start
        return start

    async def request(
        self, method: str, path: str, body: bytes = b"", extra: bytes = b""
    ) -> H1Response:
        """Send and wait for the answer's head. OSError/TimeoutError/ValueError if none came.
        `path` is the whole request target (the pool knows only the origin); `extra` are
        header lines of this request only (each ending in CRLF)."""
        if body or method != "GET":
            head = self._start(method, path) + extra + b"Content-Length: %d\r\n\r\n" % len(body)
        else:
            head = self._start(method, path) + b"\r\n"
        return await self._send(head, body)

    async def request_once(self, method: str, path: str, body: bytes = b"") -> H1Response:
        """`request` for a path not worth remembering (one per stored response id): its
        request line is not kept in the pool's cache of request lines."""
        start = f"{method} {path} HTTP/1.1\r\n".encode("latin-1") + self._head
        return await self._send(start + b"Content-Length: %d\r\n\r\n" % len(body), body)

    async def _send(self, head: bytes, body: bytes) -> H1Response:
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
            if conn.lost:  # poisoned before a byte was asked for (an answer on connect)
                raise conn.error or UpstreamClosed("connection closed")
            conn.expecting = True  # from here on, an answer is for this request
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
        conn = _Conn(loop, self.caps)
        connecting = loop.create_connection(
            lambda: conn,
            self.host,
            self.port,
            ssl=self.ssl,
            server_hostname=self.host if self.ssl is not None else None,
        )
        if self.connect_timeout_s is None:
            await connecting
            return conn
        async with deadline_in(self.connect_timeout_s):  # TimeoutError
            await connecting
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
