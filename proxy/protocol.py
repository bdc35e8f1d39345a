"""uvicorn's httptools protocol with the timeouts a front door needs.

uvicorn bounds the idle time between requests (keep-alive) but not the time a client
may take to send a request's headers or body, so a slowloris client sending a byte every
few seconds holds its connection forever. Two timers close that gap: the headers must be
complete within `limits.header_timeout_s` of the request's first byte (or of the
connection opening), and the body within `limits.body_timeout_s` of the headers. On
expiry the connection is closed (with a 408 when nothing has been answered yet); the
request path sees a disconnect and meters it as one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from proxy.errors import error_body

_408_BODY = error_body("The request was not received in time.", "timeout_error", None, "timeout")
_408 = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: " + str(len(_408_BODY)).encode() + b"\r\n\r\n" + _408_BODY
)


def guarded_protocol(header_timeout_s: float, body_timeout_s: float) -> type[HttpToolsProtocol]:
    """A protocol class (uvicorn's `http=` option) with these two deadlines."""

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _guard: asyncio.TimerHandle | None = None
        _answered = False

        def _arm(self, seconds: float) -> None:
            if self._guard is not None:
                self._guard.cancel()
            self._guard = self.loop.call_later(seconds, self._expire)

        def _disarm(self) -> None:
            if self._guard is not None:
                self._guard.cancel()
                self._guard = None

        def _expire(self) -> None:
            self._guard = None
            if self.transport.is_closing():
                return
            cycle = self.cycle
            if cycle is None or not cycle.response_started:
                self.transport.write(_408)
            self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm(header_timeout_s)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._guard is None:
                self._arm(header_timeout_s)

        def on_headers_complete(self) -> None:
            self._arm(body_timeout_s)
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

    GuardedHttpToolsProtocol.__qualname__ = "GuardedHttpToolsProtocol"
    return GuardedHttpToolsProtocol


def protocol_for(limits: Any) -> type[HttpToolsProtocol]:
    """The guarded protocol for a config's `limits:` section."""
    return guarded_protocol(limits.header_timeout_s, limits.body_timeout_s)
