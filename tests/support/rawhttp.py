"""HTTP/1.1 answers read off a raw socket, as a strict client would parse them (httptools),
for the tests that speak to the proxy byte by byte (pipelining, smuggling, limits)."""

from __future__ import annotations

import socket
import time

import httptools


class Answer:
    def __init__(self) -> None:
        self.status = 0
        self.version = ""
        self.headers: dict[bytes, bytes] = {}
        self.body = b""
        self.done = False


class Reader:
    """Parses the answers in the bytes fed to it; with a socket, `read` pulls them."""

    def __init__(self, sock: socket.socket | None = None) -> None:
        self.sock = sock
        self.answers: list[Answer] = []
        self.parser = httptools.HttpResponseParser(self)
        self.error: Exception | None = None
        self.eof = False

    def on_message_begin(self) -> None:
        self.answers.append(Answer())

    def on_header(self, name: bytes, value: bytes) -> None:
        self.answers[-1].headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        self.answers[-1].status = self.parser.get_status_code()
        self.answers[-1].version = self.parser.get_http_version()

    def on_body(self, body: bytes) -> None:
        self.answers[-1].body += body

    def on_message_complete(self) -> None:
        self.answers[-1].done = True

    def feed(self, data: bytes) -> None:
        if self.error is None:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError as exc:
                self.error = exc

    def read(self, n: int, timeout: float = 10.0) -> list[Answer]:
        """Until `n` complete answers, the connection closes, or `timeout`."""
        assert self.sock is not None
        deadline = time.monotonic() + timeout
        self.sock.settimeout(timeout)
        while sum(a.done for a in self.answers) < n and time.monotonic() < deadline:
            try:
                data = self.sock.recv(65536)
            except OSError:
                break
            if not data:
                self.eof = True
                break
            self.feed(data)
        return [a for a in self.answers if a.done]


def read_answers(s: socket.socket, n: int, timeout: float = 10.0) -> list[Answer]:
    """`n` complete answers, or fewer if the connection closes first."""
    return Reader(s).read(n, timeout)


def parse(data: bytes) -> Reader:
    reader = Reader()
    reader.feed(data)
    return reader
