"""A client connection's deadlines (proxy/server/protocol.py): the head's, the body's and the
keep-alive timeout's are one re-armable Timer in the loop's Timeouts, kept to the second
and released with the connection. Served on loopback by the guarded protocol itself, on a
loop whose clock the test moves (tests/support/clock.py): the deadlines
are checked exactly, without waiting for them. The same deadlines behind a real
`hybridgate serve`: tests/integration/test_hostile_clients.py, test_client_protocol.py."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from proxy.request.timeouts import timeouts_for
from proxy.server.protocol import guarded_protocol
from tests.support.clock import ClockLoop, advance, on_clock

pytestmark = pytest.mark.timeout(30)

HEAD_S, BODY_S, KEEP_ALIVE_S = 10.0, 60.0, 30.0
REQUEST = b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\n\r\nhi"


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


Served = tuple[list[Any], asyncio.StreamReader, asyncio.StreamWriter]


def serve(test: Callable[[ClockLoop, Served], Awaitable[None]]) -> None:
    """The guarded protocol on a loopback port of a ClockLoop; `test` gets the server-side
    protocols and a client connection to it."""
    protocol = guarded_protocol(HEAD_S, BODY_S, KEEP_ALIVE_S)
    config = uvicorn.Config(app, lifespan="off", http=protocol, log_level="warning")
    config.load()
    state = ServerState()
    conns: list[Any] = []

    async def main(loop: ClockLoop) -> None:
        def accept() -> Any:
            conn = protocol(config=config, server_state=state, app_state={}, _loop=loop)
            conns.append(conn)
            return conn

        server = await loop.create_server(accept, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                await test(loop, (conns, reader, writer))
            finally:
                writer.close()
        finally:
            server.close()
            for conn in conns:
                conn.transport.close()
            await advance(loop, 0)

    on_clock(main)


async def answered(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    return head + await reader.readexactly(2)


async def wait_conn(loop: ClockLoop, conns: list[Any]) -> Any:
    while not conns:
        await advance(loop, 0)
    return conns[0]


def test_a_slow_head_is_a_408_at_the_header_timeout_and_not_before() -> None:
    async def test(loop: ClockLoop, served: Served) -> None:
        conns, reader, writer = served
        conn = await wait_conn(loop, conns)
        writer.write(b"POST /echo HTTP/1.1\r\nhost: t\r\n")
        await advance(loop, HEAD_S - 0.5)
        assert not conn.transport.is_closing()
        await advance(loop, 0.5)
        answer = await reader.read()  # to the close
        assert answer.startswith(b"HTTP/1.1 408 ") and b'"code":"timeout"' in answer

    serve(test)


def test_a_slow_body_is_a_408_at_the_body_timeout_of_its_head() -> None:
    async def test(loop: ClockLoop, served: Served) -> None:
        conns, reader, writer = served
        conn = await wait_conn(loop, conns)
        writer.write(b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 10\r\n\r\nhalf")
        while conn._timer.when != loop.now + BODY_S:  # the head is in: the body's deadline
            await advance(loop, 0)
        await advance(loop, BODY_S - 0.5)  # past the header timeout: not that one
        assert not conn.transport.is_closing()
        await advance(loop, 0.5)
        answer = await reader.read()
        assert answer.startswith(b"HTTP/1.1 408 ")

    serve(test)


def test_keep_alive_requests_move_one_entry_and_the_idle_close_is_on_time() -> None:
    """1,000 requests on one connection arm its deadline 3,000 times: the loop's Timeouts
    hold one entry for it throughout (no entry per request), and the connection is closed
    exactly the keep-alive timeout after its last answer, not before."""

    async def test(loop: ClockLoop, served: Served) -> None:
        conns, reader, writer = served
        timeouts = timeouts_for(loop)
        for i in range(1000):
            writer.write(REQUEST)
            assert (await answered(reader)).endswith(b"\r\n\r\nok")
            if i % 100 == 0:
                await advance(loop, 1)  # time passes between requests too
            assert len(timeouts) == 1 and len(timeouts._heap) <= 2
        conn = conns[0]
        idle_since = loop.now
        await advance(loop, KEEP_ALIVE_S - 0.5)
        assert not conn.transport.is_closing() and loop.now < idle_since + KEEP_ALIVE_S
        await advance(loop, 0.5)
        assert await reader.read() == b""  # closed, with nothing written
        await advance(loop, 0)
        assert len(timeouts) == 0  # the closed connection's timer is gone with it

    serve(test)


def test_a_closed_connection_releases_its_timer() -> None:
    async def test(loop: ClockLoop, served: Served) -> None:
        conns, reader, writer = served
        conn = await wait_conn(loop, conns)
        writer.write(REQUEST)
        await answered(reader)
        timer = conn._timer
        assert timer.when == loop.now + KEEP_ALIVE_S
        writer.close()
        while timer.arg is not None:  # connection_lost: cancelled, the protocol let go
            await advance(loop, 0)
        assert len(timeouts_for(loop)) == 0
        await advance(loop, KEEP_ALIVE_S * 2)
        assert timeouts_for(loop)._heap == []

    serve(test)


def test_a_blank_line_on_an_idle_connection_starts_the_header_timeout() -> None:
    """Bytes on an idle keep-alive connection end its keep-alive timeout, and the header
    timeout runs from them even when they begin no request yet (the empty lines a client
    may send before a request line, RFC 9112 2.2): else one CRLF held the connection
    open with no deadline at all."""

    async def test(loop: ClockLoop, served: Served) -> None:
        conns, reader, writer = served
        writer.write(REQUEST)
        await answered(reader)
        conn = conns[0]
        writer.write(b"\r\n")
        while conn._idle:  # read: the keep-alive timeout is over
            await advance(loop, 0)
        await advance(loop, HEAD_S - 0.5)
        assert not conn.transport.is_closing()
        await advance(loop, 0.5)
        assert conn.transport.is_closing()
        assert await reader.read() == b""  # (a kept-alive connection: closed without a 408)

    serve(test)
