"""What the request path needs from the HTTP server, and the ASGI helpers of the rest.

The OpenAI routes read a body, answer once (whole or streamed), and must hear when the
client leaves. `Exchange` is that surface, and `proxy.server.fastpath.FastExchange` its one
implementation, straight from our uvicorn protocol (no ASGI messages, no second task).
The operator routes are plain ASGI; `read_body` and `send_error` serve them.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from proxy.request.errors import ProxyError

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]


class ClientGone(Exception):
    """The client disconnected; the upstream request was dropped."""


class DisconnectWatch(Protocol):
    gone: bool

    def stop(self) -> None: ...


class Exchange(Protocol):
    """One request and its answer. Headers are lower-cased names and raw values."""

    headers: Headers
    task: asyncio.Task[Any]

    async def body(self, limit: int) -> bytes:
        """The whole body; ProxyError 413 over `limit`, ClientGone if the client left.
        (A declared Content-Length is the caller's to check first: check_declared_length.)"""
        ...

    def watch(self) -> DisconnectWatch:
        """From now on, a disconnect cancels `task` and sets `gone`."""
        ...

    async def respond(self, status: int, headers: Headers, body: bytes) -> None:
        """The whole answer at once (Content-Length is added)."""
        ...

    async def start_stream(self, status: int, headers: Headers) -> None: ...

    async def send_chunk(self, data: bytes) -> None: ...

    async def end_stream(self, data: bytes) -> None: ...


def too_large(limit: int, size: int | None = None) -> ProxyError:
    what = f"Request body of {size} bytes" if size is not None else "Request body"
    return ProxyError(
        413,
        f"{what} exceeds the limit of {limit} bytes (limits.max_body_bytes).",
        code="request_too_large",
    )


def check_declared_length(declared: bytes | None, limit: int) -> None:
    """Refuse a declared Content-Length over `limit` before reading (or inviting) the body."""
    if declared is None:
        return
    try:
        size = int(declared)
    except ValueError:
        raise ProxyError(400, "Invalid Content-Length header.") from None
    if size > limit:
        raise too_large(limit, size)


# Content codings a request body may arrive in, and zlib's window bits for each: gzip, and
# deflate as RFC 9110 means it (zlib) or as some clients send it (raw).
_CODINGS = {b"gzip": (31,), b"x-gzip": (31,), b"deflate": (15, -15)}
_ACCEPTED = (b"accept-encoding", b"gzip, deflate")


def decode_body(body: bytes, content_encoding: bytes, limit: int) -> bytes:
    """The body with its `Content-Encoding` undone (last applied, first undone), so the
    upstream gets plain JSON. Inflated at most to `limit` + 1 bytes (a compressed bomb is
    a 413, not a node's memory); an unknown coding is a 415 naming it."""
    codings = [c.strip().lower() for c in content_encoding.split(b",")]
    for coding in codings:
        if coding not in _CODINGS and coding not in (b"identity", b""):
            name = coding.decode("latin-1")[:50]
            raise ProxyError(
                415,
                f"Content-Encoding '{name}' is not supported; send the body uncompressed, "
                "or gzip or deflate encoded.",
                code="unsupported_content_encoding",
                headers=[_ACCEPTED],
            )
    for coding in reversed(codings):
        wbits = _CODINGS.get(coding)
        if wbits is not None:
            body = _inflate(body, coding.decode(), wbits, limit)
    return body


def _inflate(data: bytes, coding: str, wbits: tuple[int, ...], limit: int) -> bytes:
    for i, bits in enumerate(wbits):
        try:
            return _inflate_with(data, bits, limit)
        except zlib.error as exc:
            if i + 1 < len(wbits):
                continue  # deflate: not zlib-wrapped, try raw
            raise ProxyError(
                400,
                f"Request body is not valid {coding} data (Content-Encoding: {coding}): {exc}",
                code="invalid_body",
            ) from None
    raise AssertionError("unreachable")


def _inflate_with(data: bytes, wbits: int, limit: int) -> bytes:
    out = bytearray()
    d = zlib.decompressobj(wbits)
    while True:
        out += d.decompress(data, limit + 1 - len(out))  # never 0 (unbounded) here
        if len(out) > limit:
            raise ProxyError(
                413,
                f"Request body exceeds the limit of {limit} bytes once decoded "
                "(limits.max_body_bytes).",
                code="request_too_large",
            )
        if d.eof:
            data = d.unused_data
            if not data:
                return bytes(out)
            if wbits != 31:  # gzip may hold several members, one after another; zlib not
                raise zlib.error("data after the end of the compressed stream")
            d = zlib.decompressobj(wbits)
        elif d.unconsumed_tail:
            data = d.unconsumed_tail
        else:
            raise zlib.error("the data ends before the end of the compressed stream")


async def read_body(receive: Receive, headers: dict[bytes, bytes], limit: int) -> bytes:
    """The whole body from ASGI messages, refusing anything over `limit` without reading
    the rest."""
    check_declared_length(headers.get(b"content-length"), limit)
    return await _receive_body(receive, limit)


async def _receive_body(receive: Receive, limit: int) -> bytes:
    msg = await receive()
    if msg["type"] == "http.disconnect":
        raise ClientGone()
    body: bytes = msg.get("body", b"")
    if not msg.get("more_body") and len(body) <= limit:
        return body
    parts = [body]
    total = len(body)
    while True:
        # Checked before each read: without Content-Length (chunked), the server may hand
        # over the whole body, however large, in one message.
        if total > limit:
            raise too_large(limit)
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise ClientGone()
        chunk = msg.get("body", b"")
        total += len(chunk)
        parts.append(chunk)
        if not msg.get("more_body") and total <= limit:
            return b"".join(parts)


_JSON = (b"content-type", b"application/json")


async def send_error(send: Send, err: ProxyError) -> None:
    body = err.body()
    headers = [_JSON, (b"content-length", str(len(body)).encode()), *err.headers]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
