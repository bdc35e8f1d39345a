"""A hostile OpenAI-like upstream: a raw asyncio server that breaks HTTP/1.1 framing on demand.

Each request says what to do in its first message's content, `"<mode> <marker>"`; every
answer carries the request's marker (a chat completion whose content is the marker), and
every forged answer carries `SMUGGLED-<marker>`, so a test can tell whose answer a client
got. It runs on its own event loop in a thread, so a sync test can use it behind a real
`hybridgate serve`, and records which connections the proxy closed.

Modes: plain, inject (a second, unsolicited answer once the connection is idle),
surplus_same / surplus_later (bytes past Content-Length, in the same write or later),
stream_tail (bytes after a chunked SSE stream's end), slow_end (the end of a chunked
stream 0.5 s after its [DONE]), gzip, gzip_stream, bomb (a gzip body
that inflates past any sane cap), big_body, big_head, many_headers, switch (101), br
(an encoding nobody decodes here), big_event (an SSE event that never ends),
big_event_late (the same after a first event).
`health_surplus` makes GET /health answer with a forged chat completion behind its body.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import threading
import zlib
from collections.abc import Iterator
from typing import Any

import orjson

# What the cap cases send: far over the small caps the tests configure, small on loopback.
BIG = 2 * 1024 * 1024


def completion(marker: str) -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-" + marker,
            "object": "chat.completion",
            "created": 1,
            "model": "hostile",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": marker},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        }
    )


def answer(body: bytes, extra: bytes = b"") -> bytes:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
    return head % len(body) + extra + b"\r\n" + body


def sse(marker: str) -> bytes:
    """A chat stream's events: the marker as content, a usage chunk, [DONE]."""
    chunk = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "hostile",
        "choices": [{"index": 0, "delta": {"content": marker}, "finish_reason": None}],
    }
    usage = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "hostile",
        "choices": [],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }
    return (
        b"data: " + orjson.dumps(chunk) + b"\n\ndata: " + orjson.dumps(usage) + b"\n\n"
        b"data: [DONE]\n\n"
    )


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p) + b"0\r\n\r\n"


_SSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"


class HostileUpstream:
    """Start with `running()`; `url` is its base URL (…/v1)."""

    def __init__(self, health_surplus: bool = False) -> None:
        self.health_surplus = health_surplus
        self.loop = asyncio.new_event_loop()
        self.server: asyncio.Server | None = None
        self.port = 0
        self.requests: list[str] = []  # "<mode> <marker>" of each request, in order
        self.opened = 0
        self.closed_by_peer = 0  # connections the proxy closed (EOF or reset seen here)
        self.health_probes = 0
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(self._start(), self.loop)
        fut.result(10)

    async def _start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        async def _stop() -> None:
            if self.server is not None:
                self.server.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.server.wait_closed(), 2)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(_stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.opened += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                if head.startswith(b"GET "):
                    self.health_probes += 1
                    ok = b'{"status":"ok"}'
                    tail = answer(completion("SMUGGLED-health")) if self.health_surplus else b""
                    writer.write(answer(ok) + tail)
                    await writer.drain()
                    continue
                mode, marker = self._mode(body)
                self.requests.append(f"{mode} {marker}")
                if not await self._answer(mode, marker, writer):
                    break
            # The proxy closed its side: read until EOF (a poisoned connection is closed).
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed_by_peer += 1
        finally:
            writer.close()

    @staticmethod
    def _mode(body: bytes) -> tuple[str, str]:
        data: Any = orjson.loads(body)
        mode, _, marker = str(data["messages"][0]["content"]).partition(" ")
        return mode, marker

    async def _answer(self, mode: str, marker: str, writer: asyncio.StreamWriter) -> bool:
        """Write the answer `mode` asks for; False to close the connection."""
        mine = answer(completion(marker))
        forged = answer(completion("SMUGGLED-" + marker))
        if mode == "plain":
            writer.write(mine)
        elif mode == "inject":
            writer.write(mine)
            await writer.drain()
            await asyncio.sleep(0.1)  # the connection is idle in the proxy's pool by now
            writer.write(forged)
        elif mode == "surplus_same":
            writer.write(mine + forged)
        elif mode == "surplus_later":
            writer.write(mine)
            await writer.drain()
            await asyncio.sleep(0.1)
            writer.write(forged)
        elif mode == "stream_tail":
            writer.write(_SSE_HEAD + b"\r\n" + chunked(sse(marker)) + forged)
        elif mode == "slow_end":  # [DONE], then the chunked body's end 0.5 s later
            body = chunked(sse(marker))
            writer.write(_SSE_HEAD + b"\r\n" + body[:-5])
            await writer.drain()
            await asyncio.sleep(0.5)
            writer.write(body[-5:])
        elif mode == "gzip":
            writer.write(answer(gzip.compress(completion(marker)), b"content-encoding: gzip\r\n"))
        elif mode == "deflate":
            body = zlib.compress(completion(marker))
            writer.write(answer(body, b"content-encoding: deflate\r\n"))
        elif mode == "gzip_stream":
            z = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
            events = sse(marker)
            half = len(events) // 2
            pieces = [z.compress(events[:half]) + z.flush(zlib.Z_SYNC_FLUSH)]
            pieces.append(z.compress(events[half:]) + z.flush())
            writer.write(_SSE_HEAD + b"content-encoding: gzip\r\n\r\n" + chunked(*pieces))
        elif mode == "bomb":
            writer.write(answer(gzip.compress(b"0" * (BIG * 8)), b"content-encoding: gzip\r\n"))
        elif mode == "big_body":
            writer.write(answer(b" " * BIG + completion(marker)))
        elif mode == "big_head":
            writer.write(answer(completion(marker), b"x-big: " + b"a" * BIG + b"\r\n"))
        elif mode == "many_headers":
            extra = b"".join(b"x-h%d: v\r\n" % i for i in range(5000))
            writer.write(answer(completion(marker), extra))
        elif mode == "switch":
            writer.write(
                b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\nconnection: upgrade\r\n\r\n"
            )
            writer.write(b"\x00" * 64)
        elif mode == "br":
            writer.write(answer(b"\x0b\x02\x80{}\x03", b"content-encoding: br\r\n"))
        elif mode == "big_event_late":  # a first event relayed, then one that never ends
            event = b"data: " + b"x" * BIG
            writer.write(
                _SSE_HEAD + b"\r\n" + chunked(sse(marker).split(b"data: [DONE]")[0], event)
            )
        elif mode == "big_event":
            event = b"data: " + b"x" * BIG  # never ends with a blank line
            writer.write(_SSE_HEAD + b"\r\n" + chunked(event, b"\n\n"))
        else:
            raise AssertionError(f"unknown mode {mode!r}")
        await writer.drain()
        return True


@contextlib.contextmanager
def running(health_surplus: bool = False) -> Iterator[HostileUpstream]:
    up = HostileUpstream(health_surplus)
    up.start()
    try:
        yield up
    finally:
        up.stop()
