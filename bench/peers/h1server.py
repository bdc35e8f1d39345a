"""A keep-alive HTTP/1.1 server connection on httptools, for the benchmarks' own servers.

The fake upstream (peers/upstream.py) and the bare passthrough (bare_passthrough.py) both
need just this: parse requests off a connection and hand each, once its body is complete,
to `on_request`; nothing else, so that they cost as little as a server can.
"""

from __future__ import annotations

import asyncio

import httptools

BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class RequestProtocol(asyncio.Protocol):
    """One connection; subclasses answer in `on_request` with `write`."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []

    def on_request(self, method: bytes, url: bytes, body: bytes) -> None:
        raise NotImplementedError

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.write(BAD_REQUEST, close=True)

    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.on_request(self.parser.get_method(), self.url, b"".join(self.body))

    def write(self, data: bytes, close: bool = False) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            if close:
                self.transport.close()
