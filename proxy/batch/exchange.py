"""A batch line served by the proxy's own request path, in process: an `Exchange`
(proxy/server/exchange.py) whose body is the line's and whose answer is kept, not sent."""

from __future__ import annotations

import asyncio
from typing import Any

from proxy.server.exchange import Headers

_JSON = [(b"content-type", b"application/json")]


class _NoWatch:
    gone = False

    def stop(self) -> None:
        return None


class LineExchange:
    """One line's request and its answer (status, headers, whole body)."""

    def __init__(self, body: bytes) -> None:
        self.headers: Headers = list(_JSON)
        self.task: asyncio.Task[Any] = asyncio.current_task()  # type: ignore[assignment]
        self._body = body
        self.status = 0
        self.answer_headers: Headers = []
        self.parts: list[bytes] = []

    async def body(self, limit: int) -> bytes:
        return self._body

    def watch(self) -> _NoWatch:
        return _NoWatch()

    async def respond(self, status: int, headers: Headers, body: bytes) -> None:
        self.status, self.answer_headers = status, headers
        self.parts = [body]

    async def start_stream(self, status: int, headers: Headers) -> None:
        self.status, self.answer_headers = status, headers

    async def send_chunk(self, data: bytes) -> None:
        self.parts.append(data)

    async def end_stream(self, data: bytes) -> None:
        self.parts.append(data)

    @property
    def answer(self) -> bytes:
        return b"".join(self.parts)

    def header(self, name: bytes) -> str | None:
        for k, v in self.answer_headers:
            if k == name:
                return v.decode("latin-1")
        return None
