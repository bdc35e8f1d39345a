"""uvicorn's httptools protocol with the timeouts a front door needs.

uvicorn bounds the idle time between requests (keep-alive) but not the time a client
may take to send a request's headers or body, so a slowloris client sending a byte every
few seconds holds its connection forever. Two timers close that gap: the headers must be
complete within `limits.header_timeout_s` of the request's first byte (or of the
connection opening), and the body within `limits.body_timeout_s` of the headers. On
expiry the connection is closed (with a 408 when nothing has been answered yet); the
request path sees a disconnect and meters it as one. The keep-alive timeout is kept the
same way instead of uvicorn's timer per answered request. The three are one re-armable
`Timer` per connection in the loop's Timeouts (proxy/request/timeouts.py): moving a
connection's deadline is an attribute write, not a timer armed and cancelled per request.

POSTs to the OpenAI routes are served by one code path: the protocol hands them to the
app's `Handler` as a `FastExchange` (proxy/server/fastpath.py), matched on the URL's path as ASGI
would see it (query string dropped, percent-escapes decoded), without an ASGI cycle.
Everything else (operator routes, other methods) goes through uvicorn's ASGI cycle.

What uvicorn's protocol leaves open on a front door, closed here (docs/security.md, "The
client side of HTTP/1.1"):
- the request head is unbounded (httptools buffers a header line however long): its size
  is counted as it arrives, only while a head is open, and a URL over
  `limits.max_url_bytes` is a 414, more than `limits.max_header_count` fields or a head
  over `limits.max_head_bytes` a 431, and the connection is closed;
- httptools skips the body of a request asking for an upgrade, so what follows would be
  parsed as the next request (smuggling): the proxy performs no upgrade, so such a request
  with a body is refused and the connection closed; one without a body is served as
  HTTP/1.1 (the upgrade ignored, RFC 9110 7.8) and the connection goes on;
- uvicorn's cycle answers an HTTP/1.0 request without Content-Length in chunked
  encoding, which HTTP/1.0 lacks: such an answer is delimited by closing (`_Http10Cycle`).
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import unquote_to_bytes

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from proxy.request.errors import error_body
from proxy.request.handler import FAST_PATHS, Handler
from proxy.request.timeouts import Timer, timeouts_for
from proxy.server.fastpath import FastExchange, status_line

# GET/DELETE /v1/responses/{id}, its /cancel and /input_items (proxy/request/stored.py).
_STORED = (b"/v1/responses/", b"/responses/")
_STORED_METHODS = frozenset({b"GET", b"DELETE", b"POST", b"PUT", b"PATCH"})

_408_BODY = error_body("The request was not received in time.", "timeout_error", None, "timeout")
_408 = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: " + str(len(_408_BODY)).encode() + b"\r\n\r\n" + _408_BODY
)


def _refusal(status: int, message: str, code: str) -> bytes:
    """A whole answer that ends the connection, in OpenAI's error shape."""
    body = error_body(message, None, None, code, status)
    return status_line(
        status
    ) + b"content-type: application/json\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )


class _Refused(Exception):
    """Raised by a parser callback once the request has been answered and the connection
    closed: httptools stops parsing what follows (data_received expects it)."""


# Added to a head's count when it began in a read that was not counted for it (after
# another message in that read): it is then measured whole when complete.
_UNCOUNTED = 1 << 40
_CLOSED = -(1 << 60)  # no head open: a request's body is being read
_UNFRAMED = 1 << 62  # an HTTP/1.0 answer's length: not known, delimited by the close


def _route_path(url: bytes) -> bytes:
    """The path a URL names, as uvicorn's ASGI scope would have it (`scope["path"]`)."""
    path = httptools.parse_url(url).path or b""
    return unquote_to_bytes(path) if b"%" in path else path


class _Http10Cycle(RequestResponseCycle):
    """uvicorn's cycle for an HTTP/1.0 request. An answer without Content-Length (a
    stream) would get `transfer-encoding: chunked`, which HTTP/1.0 clients do not know
    (RFC 9112 6.1): it is sent as it comes and delimited by closing the connection."""

    _unframed = False

    async def send(self, message: Any) -> None:
        kind = message["type"]
        if not self.response_started:
            if kind == "http.response.start" and _unframed(message, self.scope):
                self._unframed = True
                self.keep_alive = False  # uvicorn says `connection: close`, and closes
                self.chunked_encoding = False  # no transfer-encoding of its own
                self.expected_content_length = _UNFRAMED
        elif self._unframed and kind == "http.response.body" and not self.chunked_encoding:
            # uvicorn checks the length on the last piece: it is that piece's.
            last = not message.get("more_body", False)
            if last:
                self.expected_content_length = len(message.get("body", b""))
        await super().send(message)


def _unframed(message: Any, scope: Any) -> bool:
    if scope["method"] == "HEAD" or message["status"] in (204, 304):
        return False
    return not any(k.lower() == b"content-length" for k, _ in message.get("headers", ()))


def guarded_protocol(
    header_timeout_s: float,
    body_timeout_s: float,
    keep_alive_timeout_s: float = 30.0,
    max_url_bytes: int = 8 * 1024,
    max_header_count: int = 100,
    max_head_bytes: int = 64 * 1024,
) -> type[HttpToolsProtocol]:
    """A protocol class (uvicorn's `http=` option) with these deadlines (the keep-alive
    timeout kept here, not by uvicorn's `timeout_keep_alive`) and these bounds on a
    request head."""
    fast_urls = {path.encode(): endpoint for path, endpoint in FAST_PATHS.items()}
    # Past this many bytes of one head, it is measured against every bound.
    head_check = min(max_url_bytes, max_head_bytes)
    url_too_long = _refusal(
        414, f"The URL exceeds {max_url_bytes} bytes (limits.max_url_bytes).", "uri_too_long"
    )
    too_many_headers = _refusal(
        431,
        f"The request has more than {max_header_count} header fields (limits.max_header_count).",
        "request_header_fields_too_large",
    )
    head_too_large = _refusal(
        431,
        f"The request head exceeds {max_head_bytes} bytes (limits.max_head_bytes).",
        "request_header_fields_too_large",
    )

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        # The connection's deadline (the head's, the body's or the keep-alive timeout's);
        # disarmed while a request is being answered.
        _timer: Timer
        _idle = False  # the deadline is the keep-alive timeout's
        _handler: Handler | None = None
        # The request head's size, counted per read (data_received) while a head is open:
        # from the connection's start, and from each message's end to the next head's end;
        # _CLOSED (negative) from a head's end to its message's end. 0 when a head begins
        # means the read it began in was not counted for it (it began after the end of a
        # message in that read): see _UNCOUNTED. A slot: read and written on every read.
        __slots__ = ("_head_seen",)

        def _expire(self) -> None:
            if self.transport.is_closing():
                return
            # A 408 only where it answers the request that timed out: a head on a fresh
            # connection, or a body whose request is the only one in flight. Otherwise it
            # would land in, or be taken for, the answer of an earlier request.
            cycle = self.cycle
            head_open = self._head_seen >= 0
            if cycle is None or not (head_open or self.pipeline or cycle.response_started):
                self.transport.write(_408)
            self.transport.close()

        def data_received(self, data: bytes) -> None:
            # uvicorn's, with the head counted, and the upgrades we do not perform handled.
            self._unset_keepalive_if_required()
            self._head_seen += len(data)  # (no matter while _CLOSED)
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserUpgrade as exc:
                self._upgrade_not_performed(data, exc.args[0])
                return
            except httptools.HttpParserError:
                self._parse_error()
                return
            if self._head_seen > head_check:
                self._check_open_head()

        def _parse_error(self) -> None:
            if not self.transport.is_closing():  # else answered by us (_Refused)
                msg = "Invalid HTTP request received."
                self.logger.warning(msg)
                self.send_400_response(msg)

        def _upgrade_not_performed(self, data: bytes, end: int) -> None:
            """httptools stopped at the end of a head asking for an upgrade. Refused there if
            it had a body; without one the connection stays HTTP/1.1, and the rest of the
            read is the next request."""
            while not self.transport.is_closing():
                if self._should_upgrade():
                    self.handle_websocket_upgrade()
                    return
                data = data[end:]
                if not data:
                    return
                self._head_seen = len(data)
                try:
                    self.parser.feed_data(data)
                except httptools.HttpParserUpgrade as exc:
                    end = exc.args[0]
                    continue
                except httptools.HttpParserError:
                    self._parse_error()
                    return
                if self._head_seen > head_check:
                    self._check_open_head()
                return

        def _check_open_head(self) -> None:
            """A head still arriving, past `head_check` bytes."""
            if self.transport.is_closing():
                return
            if len(self.url) > max_url_bytes:
                self._refuse(url_too_long)
            elif len(self.headers) > max_header_count:
                self._refuse(too_many_headers)
            elif self._head_seen % _UNCOUNTED > max_head_bytes:
                self._refuse(head_too_large)

        def _check_head(self, upgrade: bool) -> None:
            """A complete head that may break a bound, or asks for an upgrade: raises
            _Refused once answered. O(headers), for the few heads that need it."""
            url = len(self.url)
            if url > max_url_bytes:
                self._refuse(url_too_long)
            elif len(self.headers) > max_header_count:
                self._refuse(too_many_headers)
            elif url + sum(len(n) + len(v) + 4 for n, v in self.headers) > max_head_bytes:
                self._refuse(head_too_large)
            elif upgrade and not self._should_upgrade() and _has_body(self.headers):
                self._refuse(_upgrade_refusal(self.parser.get_method(), self.headers))
            else:
                return
            raise _Refused()

        def _refuse(self, answer: bytes) -> None:
            self._timer.disarm()
            if self.cycle is None or self.cycle.response_complete:
                self.transport.write(answer)
            self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._head_seen = 0
            handler = getattr(self.app, "handler", None)
            if isinstance(handler, Handler):  # our app (always, but for uvicorn's own tests)
                self._handler = handler
            timer = timeouts_for(self.loop).timer(GuardedHttpToolsProtocol._expire, self)
            timer.arm(self.loop.time() + header_timeout_s)
            self._timer = timer

        def connection_lost(self, exc: Exception | None) -> None:
            self._timer.cancel()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            # What uvicorn resets per request; its ASGI scope is built only for a request
            # that goes the ASGI way (_asgi_scope), not for the fast path.
            self.url = b""
            self.expect_100_continue = False
            self.headers = []
            if not self._head_seen:  # begun in a read not counted for it (see above)
                self._head_seen = _UNCOUNTED
            timer = self._timer
            if timer.when is None:
                timer.arm(self.loop.time() + header_timeout_s)

        def _asgi_scope(self) -> None:
            url, headers, expect = self.url, self.headers, self.expect_100_continue
            super().on_message_begin()  # uvicorn's own scope, which resets the three
            self.url, self.expect_100_continue = url, expect
            self.headers = self.scope["headers"] = headers

        def on_headers_complete(self) -> None:
            parser = self.parser
            upgrade = parser.should_upgrade()
            if self._head_seen > head_check or upgrade or len(self.headers) > max_header_count:
                self._check_head(upgrade)
            self._head_seen = _CLOSED
            self._timer.arm(self.loop.time() + body_timeout_s)
            if self._handler is not None:
                url = self.url
                path = fast_urls.get(url)
                if path is None and (b"?" in url or b"%" in url or b"#" in url):
                    path = fast_urls.get(_route_path(url))
                if path is not None and parser.get_method() == b"POST":
                    self._start_fast(path)
                    return
                if path is None and url.startswith(_STORED):  # a stored response's routes
                    method = parser.get_method()
                    if method in _STORED_METHODS:  # (HEAD and others: ASGI's answers)
                        self._start_fast(f"{method.decode()} {url.decode('latin-1')}")
                        return
            self._asgi_scope()
            super().on_headers_complete()
            if self.cycle.scope is self.scope and self.scope["http_version"] == "1.0":
                self.cycle.__class__ = _Http10Cycle

        def _start_fast(self, path: str) -> None:
            http10 = self.parser.get_http_version() == "1.0"
            keep_alive = self.parser.should_keep_alive()
            exchange = FastExchange(
                self, path, self.headers, keep_alive, self.expect_100_continue, http10
            )
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
                    cycle.feed(body)
                return
            super().on_body(body)

        def on_message_complete(self) -> None:
            self._timer.disarm()
            self._head_seen = 0
            cycle = self.cycle
            if cycle.__class__ is FastExchange:
                if not cycle.response_complete:
                    cycle.finish_body()
            else:
                super().on_message_complete()
            if cycle.response_complete and not self.pipeline:
                self._arm_idle()  # answered before its body was all in (a 413, say)

        def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
            if cycle.__class__ is FastExchange:
                task = self.loop.create_task(cycle.run(self._handler))
                cycle.task = task
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
            timer = self._timer
            if timer.when is None:
                timer.arm(self.loop.time() + keep_alive_timeout_s)
                self._idle = True

        def _unset_keepalive_if_required(self) -> None:
            # Bytes on an idle connection: the next head's deadline runs from them, even if
            # they begin no request yet (empty lines may precede a request line, RFC 9112
            # 2.2; on_message_begin comes with its first other byte).
            if self._idle:
                self._idle = False
                self._timer.arm(self.loop.time() + header_timeout_s)

    GuardedHttpToolsProtocol.__qualname__ = "GuardedHttpToolsProtocol"
    return GuardedHttpToolsProtocol


def _upgrade_refusal(method: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    if method == b"CONNECT":
        what = "CONNECT is not supported"
    else:
        to = dict(headers).get(b"upgrade", b"").decode("latin-1")[:100]
        what = f"Upgrade to '{to}' is not supported"
    message = (
        f"{what}, and a request asking for it cannot carry a body (its body would be read "
        "as the next request); send it without the Upgrade header."
    )
    return _refusal(400, message, "unsupported_upgrade")


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip(b"0")):
            return True
    return False


def protocol_for(limits: Any) -> type[HttpToolsProtocol]:
    """The guarded protocol for a config's `limits:` section."""
    return guarded_protocol(
        limits.header_timeout_s,
        limits.body_timeout_s,
        limits.keep_alive_timeout_s,
        limits.max_url_bytes,
        limits.max_header_count,
        limits.max_head_bytes,
    )
