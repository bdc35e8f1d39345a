"""The lean upstream client (proxy/backends/h1client.py) against real HTTP servers on loopback.

Each server here is a raw asyncio server that answers with exactly the bytes a case needs
(keep-alive, chunked, read-until-close, a 100 Continue first, a broken answer, silence), so
the client's handling of each is seen on a real socket.
"""

from __future__ import annotations

import asyncio
import gzip
import itertools
import ssl
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trustme
import uvloop

from proxy.backends.base import UpstreamRefused
from proxy.backends.h1client import Caps, H1Pool, UpstreamClosed

pytestmark = pytest.mark.timeout(30)

Answer = Callable[[bytes], Awaitable[bytes | None]]


class RawServer:
    """Reads one request at a time (head + Content-Length body) and writes `answer(request)`;
    None closes the connection without a word."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[bytes] = []
        self.connections = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                out = await self.answer(request)
                if out is None:
                    break
                writer.write(out)
                await writer.drain()
                if b"connection: close" in out.lower():
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def serving(
    answer: Answer, tls: ssl.SSLContext | None = None, host: str = "127.0.0.1"
) -> AsyncIterator[tuple[RawServer, str]]:
    raw = RawServer(answer)
    server = await asyncio.start_server(raw.handle, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    try:
        yield raw, f"{'https' if tls else 'http'}://{host}:{port}/v1"
    finally:
        server.close()
        for w in raw.writers:
            w.close()
        await server.wait_closed()


def pool(url: str, read_timeout_s: float = 5.0) -> H1Pool:
    return H1Pool(
        url,
        {"Content-Type": "application/json", "Authorization": "Bearer sk-up"},
        connect_timeout_s=2.0,
        read_timeout_s=read_timeout_s,
        max_idle=8,
    )


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def test_request_bytes_and_keep_alive_reuse() -> None:
    async def answer(req: bytes) -> bytes:
        return ok(b'{"n": %d}' % len(req), b"x-request-id: r1\r\n")

    async with serving(answer) as (raw, url):
        p = pool(url)
        for _ in range(5):
            resp = await p.request("POST", "/v1/chat/completions", b'{"model":"m"}')
            assert resp.status == 200
            assert (b"x-request-id", b"r1") in resp.raw_headers
            assert (await resp.read()).startswith(b'{"n": ')
        p.close()
    assert raw.connections == 1  # one connection, reused four times
    first = raw.requests[0]
    host = url.split("//")[1].split("/")[0].encode()
    assert first.startswith(b"POST /v1/chat/completions HTTP/1.1\r\nHost: " + host + b"\r\n")
    assert b"Authorization: Bearer sk-up\r\n" in first
    assert first.endswith(b'Content-Length: 13\r\n\r\n{"model":"m"}')


async def test_chunked_and_until_close_bodies() -> None:
    async def chunked(req: bytes) -> bytes:
        return (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )

    async with serving(chunked) as (raw, url):
        p = pool(url)
        resp = await p.request("POST", "/v1/x", b"{}")
        assert b"".join([c async for c in resp.chunks()]) == b"hello world"
        resp = await p.request("POST", "/v1/x", b"{}")
        assert await resp.read() == b"hello world"
        p.close()
    assert raw.connections == 1

    async def until_close(req: bytes) -> bytes:
        return b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it"

    async with serving(until_close) as (raw, url):
        p = pool(url)
        assert await (await p.request("POST", "/v1/x", b"{}")).read() == b"all of it"
        assert await (await p.request("POST", "/v1/x", b"{}")).read() == b"all of it"
        p.close()
    assert raw.connections == 2  # not reused after connection: close


async def test_one_connection_reads_answers_of_every_kind_in_turn() -> None:
    """A kept-alive connection parses each answer from a clean state: a stream, an error
    with its own headers, then a plain answer, twice over, on one socket."""
    answers = [
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 1\r\ncontent-length: 4\r\n\r\nslow",
        ok(b"done"),
    ]
    turn = iter(answers * 2)

    async def answer(req: bytes) -> bytes:
        return next(turn)

    async with serving(answer) as (raw, url):
        p = pool(url)
        for _ in range(2):
            resp = await p.request("POST", "/v1/x", b"{}")
            assert (resp.status, b"".join([c async for c in resp.chunks()])) == (200, b"abc")
            resp = await p.request("POST", "/v1/x", b"{}")
            assert (resp.status, await resp.read()) == (429, b"slow")
            assert resp.raw_headers == [(b"retry-after", b"1"), (b"content-length", b"4")]
            resp = await p.request("POST", "/v1/x", b"{}")
            assert (resp.status, await resp.read()) == (200, b"done")
        p.close()
    assert raw.connections == 1


async def test_interim_100_continue_is_skipped() -> None:
    async def answer(req: bytes) -> bytes:
        return b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"done")

    async with serving(answer) as (_, url):
        p = pool(url)
        resp = await p.request("POST", "/v1/x", b"{}")
        assert resp.status == 200
        assert await resp.read() == b"done"
        p.close()


async def test_idle_connection_closed_by_server_is_retried_once_on_a_new_one() -> None:
    async def answer(req: bytes) -> bytes:
        return ok(b"fine")

    async with serving(answer) as (raw, url):
        p = pool(url)
        assert await (await p.request("POST", "/v1/x", b"{}")).read() == b"fine"
        for w in raw.writers:  # the server drops its idle keep-alive connection...
            w.transport.abort()
        await asyncio.sleep(0.05)
        # ...and the next request still succeeds, on a second connection.
        assert await (await p.request("POST", "/v1/x", b"{}")).read() == b"fine"
        p.close()
    assert raw.connections == 2


async def test_connection_dropped_after_reading_the_request_is_an_error() -> None:
    async def answer(req: bytes) -> None:
        return None  # read it, then hang up without answering

    async with serving(answer) as (raw, url):
        p = pool(url)
        with pytest.raises(UpstreamClosed):
            await p.request("POST", "/v1/x", b"{}")
        p.close()
    assert raw.connections == 1  # a fresh connection is not retried


async def test_body_cut_short_is_a_connection_error() -> None:
    async def short(req: bytes) -> bytes:
        return b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\nconnection: close\r\n\r\nonly this"

    async with serving(short) as (_, url):
        p = pool(url)
        resp = await p.request("POST", "/v1/x", b"{}")
        with pytest.raises(ConnectionError):
            await resp.read()
        p.close()


async def test_read_timeout_and_malformed_answer() -> None:
    async def silent(req: bytes) -> bytes:
        await asyncio.sleep(10)
        return ok(b"late")

    async with serving(silent) as (_, url):
        p = pool(url, read_timeout_s=0.2)
        with pytest.raises(TimeoutError):
            await p.request("POST", "/v1/x", b"{}")
        p.close()

    async def garbage(req: bytes) -> bytes:
        return b"NOT HTTP AT ALL\r\n\r\n"

    async with serving(garbage) as (_, url):
        p = pool(url)
        with pytest.raises(ValueError):
            await p.request("POST", "/v1/x", b"{}")
        p.close()


async def _connect_never_completes() -> None:
    async def never(req: bytes) -> bytes | None:
        return None

    # A TLS client to a plain TCP server that accepts and waits for a request head: the
    # handshake (part of the connect) never completes.
    async with serving(never) as (raw, url):
        p = H1Pool(
            url.replace("http://", "https://"),
            {},
            connect_timeout_s=0.3,
            read_timeout_s=5.0,
            max_idle=8,
        )
        with pytest.raises(TimeoutError):
            await p.request("POST", "/v1/x", b"{}")
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0  # the timeout was ours alone
        await asyncio.sleep(0)  # and the task goes on
        assert raw.connections == 1 and raw.requests == []
        p.close()


@pytest.mark.parametrize("use_uvloop", [False, True])
def test_a_connect_that_never_completes_is_a_timeout_error(use_uvloop: bool) -> None:
    """The connect timeout (a Deadline in the loop's Timeouts) ends the attempt with the
    TimeoutError the backend maps to a failover-able `timeout`."""
    (uvloop.run if use_uvloop else asyncio.run)(_connect_never_completes())


async def test_get_without_a_body_and_the_pool_takes_only_the_origin() -> None:
    async def answer(req: bytes) -> bytes:
        return ok(b"ok")

    async with serving(answer) as (raw, url):
        p = pool(url)  # url ends in /v1: the request target is given whole
        resp = await p.request("GET", "/health?full=1")
        assert (resp.status, await resp.read()) == (200, b"ok")
        p.close()
    assert raw.requests[0].startswith(b"GET /health?full=1 HTTP/1.1\r\n")
    assert b"Content-Length" not in raw.requests[0]


async def test_refused_connection_is_an_oserror() -> None:
    async with serving(lambda req: asyncio.sleep(0, ok(b""))) as (_, url):
        pass  # the server is gone: its port now refuses
    p = pool(url)
    with pytest.raises(OSError):
        await p.request("POST", "/v1/x", b"{}")


async def test_stream_pieces_are_bounded_and_complete() -> None:
    payload = bytes(range(256)) * 1024  # 256 KiB

    async def answer(req: bytes) -> bytes:
        return ok(payload)

    async with serving(answer) as (_, url):
        p = pool(url)
        resp = await p.request("POST", "/v1/x", b"{}")
        pieces = [c async for c in resp.chunks()]
        assert b"".join(pieces) == payload
        assert max(len(c) for c in pieces) <= 16 * 1024
        p.close()


async def test_a_large_answer_read_whole_does_not_stall() -> None:
    """read() takes the whole answer: only a relayed stream pauses the socket (a non-streamed
    answer over the stream high-water mark, e.g. embeddings, once waited for the read timeout)."""
    payload = b"e" * (3 * 1024 * 1024)

    async def answer(req: bytes) -> bytes:
        return ok(payload)

    async with serving(answer) as (raw, url):
        p = pool(url, read_timeout_s=2.0)
        for _ in range(2):
            resp = await p.request("POST", "/v1/embeddings", b"{}")
            assert await resp.read() == payload
        p.close()
    assert raw.connections == 1


async def _tls_exchange(tmp: Path) -> list[int]:
    """Plain answers and a stream over TLS, checked against a CA the test makes."""
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    ca_file = tmp / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    payload = bytes(range(256)) * 800  # 200 KiB: several TLS records and reads

    async def answer(req: bytes) -> bytes:
        return ok(payload)

    sizes = []
    async with serving(answer, tls=server_ctx, host="localhost") as (raw, url):
        p = pool(url)
        assert p.ssl is not None
        p.ssl.load_verify_locations(cafile=str(ca_file))
        for _ in range(2):
            resp = await p.request("POST", "/v1/chat/completions", b"{}")
            sizes.append(len(await resp.read()))
        resp = await p.request("POST", "/v1/chat/completions", b"{}")
        sizes.append(sum([len(c) async for c in resp.chunks()]))
        p.close()
        assert raw.connections == 1  # TLS connections are kept alive too
    # An upstream whose certificate the system does not trust is refused, not used.
    async with serving(answer, tls=server_ctx, host="localhost") as (_, url):
        untrusting = pool(url)
        with pytest.raises(ssl.SSLError):
            await untrusting.request("POST", "/v1/chat/completions", b"{}")
    return sizes


async def test_tls_upstream_on_asyncio(tmp_path: Path) -> None:
    assert await _tls_exchange(tmp_path) == [256 * 800] * 3


def test_tls_upstream_on_uvloop(tmp_path: Path) -> None:
    """The proxy serves on uvloop: its SSL transport with the client's BufferedProtocol."""
    assert uvloop.run(_tls_exchange(tmp_path)) == [256 * 800] * 3


# -- hostile upstreams: bytes no request asked for, answers over the caps, encodings


def capped(url: str, **caps: int) -> H1Pool:
    return H1Pool(url, {}, connect_timeout_s=2.0, read_timeout_s=5.0, max_idle=8, caps=Caps(**caps))


async def _until(cond: Callable[[], bool]) -> bool:
    """Bounded polling on the event loop: the client handles a read a turn or two later."""
    for _ in range(500):
        if cond():
            return True
        await asyncio.sleep(0.01)
    return False


def _marked() -> Answer:
    """Answers `ok(answer-<request number>)`, so each answer says which request it is for."""
    seen = itertools.count()

    async def answer(req: bytes) -> bytes:
        return ok(b"answer-%d" % next(seen))

    return answer


async def test_a_stray_answer_on_an_idle_connection_poisons_it() -> None:
    async with serving(_marked()) as (raw, url):
        p = pool(url)
        assert await (await p.request("POST", "/v1/x", b"{}")).read() == b"answer-0"
        raw.writers[0].write(ok(b"stray"))  # unsolicited, while the connection is idle
        assert await _until(lambda: p._idle[-1].lost)
        assert await (await p.request("POST", "/v1/x", b"{}")).read() == b"answer-1"
        p.close()
    assert raw.connections == 2  # the poisoned connection was not reused


@pytest.mark.parametrize("later", [False, True])
async def test_bytes_past_content_length_poison_the_connection(later: bool) -> None:
    turn = itertools.count()

    async def answer(req: bytes) -> bytes:
        n = next(turn)
        mine = ok(b"answer-%d" % n)
        return mine if later or n else mine + ok(b"smuggled")

    async with serving(answer) as (raw, url):
        p = pool(url)
        assert await (await p.request("POST", "/v1/x", b"{}")).read() == b"answer-0"
        if later:
            raw.writers[0].write(ok(b"smuggled"))
        assert await _until(lambda: not p._idle or p._idle[-1].lost)
        assert await (await p.request("POST", "/v1/x", b"{}")).read() == b"answer-1"
        p.close()
    assert raw.connections == 2


async def test_bytes_after_a_chunked_stream_end_poison_the_connection() -> None:
    turn = itertools.count()

    async def answer(req: bytes) -> bytes:
        n = next(turn)
        body = b"data: %d\n\n" % n
        stream = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
        return stream % (len(body), body) + (ok(b"smuggled") if n == 0 else b"")

    async with serving(answer) as (raw, url):
        p = pool(url)
        resp = await p.request("POST", "/v1/x", b"{}")
        assert b"".join([c async for c in resp.chunks()]) == b"data: 0\n\n"
        resp = await p.request("POST", "/v1/x", b"{}")
        assert b"".join([c async for c in resp.chunks()]) == b"data: 1\n\n"
        p.close()
    assert raw.connections == 2


async def test_head_and_header_count_caps() -> None:
    async def big_head(req: bytes) -> bytes:
        return ok(b"x", b"x-big: " + b"a" * (1024 * 1024) + b"\r\n")

    async with serving(big_head) as (_, url):
        p = capped(url, head_bytes=8192)
        with pytest.raises(UpstreamRefused, match="head over 8192 bytes"):
            await p.request("POST", "/v1/x", b"{}")
        p.close()

    async def many(req: bytes) -> bytes:
        return ok(b"x", b"".join(b"x-%d: v\r\n" % i for i in range(200)))

    async with serving(many) as (_, url):
        p = capped(url, headers=50)
        with pytest.raises(UpstreamRefused, match="over 50 headers"):
            await p.request("POST", "/v1/x", b"{}")
        p.close()

    async def trailers(req: bytes) -> bytes:
        extra = b"".join(b"t-%d: v\r\n" % i for i in range(200))
        return (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\na\r\n0\r\n"
            + extra
            + b"\r\n"
        )

    async with serving(trailers) as (_, url):
        p = capped(url, headers=50)
        resp = await p.request("POST", "/v1/x", b"{}")
        with pytest.raises(UpstreamRefused, match="over 50 headers"):
            await resp.read()
        p.close()


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
async def test_body_cap(framing: str) -> None:
    big = b"b" * (512 * 1024)

    async def answer(req: bytes) -> bytes:
        if framing == "length":
            return ok(big)
        if framing == "chunked":
            head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
            return (
                head + b"".join(b"4000\r\n%s\r\n" % big[:16384] for _ in range(32)) + b"0\r\n\r\n"
            )
        return b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n" + big

    async with serving(answer) as (_, url):
        p = capped(url, body_bytes=100_000)
        resp = await p.request("POST", "/v1/x", b"{}")
        with pytest.raises(UpstreamRefused, match="over 100000 bytes"):
            await resp.read()
        # A stream is relayed as it comes: the cap bounds what waits, not its length.
        resp = await (capped(url, body_bytes=100_000)).request("POST", "/v1/x", b"{}")
        assert sum([len(c) async for c in resp.chunks()]) == len(big)
        p.close()


@pytest.mark.parametrize("coding", [b"gzip, chunked", b"chunked, gzip", b"identity"])
async def test_transfer_codings_other_than_chunked_are_refused(coding: bytes) -> None:
    """As h11: a coding under chunked would be relayed undecoded; chunked not last would
    make the body end only with the connection."""

    async def answer(req: bytes) -> bytes:
        head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: %s\r\n\r\n" % coding
        return head + b"3\r\nabc\r\n0\r\n\r\n"

    async with serving(answer) as (_, url):
        p = pool(url)
        with pytest.raises(UpstreamRefused, match="Transfer-Encoding"):
            await p.request("POST", "/v1/x", b"{}")
        p.close()


async def test_interim_answers_are_skipped_but_a_101_is_refused() -> None:
    async def early_hints(req: bytes) -> bytes:
        return b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n" + ok(b"done")

    async with serving(early_hints) as (_, url):
        p = pool(url)
        resp = await p.request("POST", "/v1/x", b"{}")
        assert (resp.status, await resp.read()) == (200, b"done")
        p.close()

    async def switch(req: bytes) -> bytes:
        return b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\nconnection: upgrade\r\n\r\nxx"

    async with serving(switch) as (_, url):
        p = pool(url)
        with pytest.raises(UpstreamRefused, match="switched protocols"):
            await p.request("POST", "/v1/x", b"{}")
        p.close()


@pytest.mark.parametrize("encoding", ["gzip", "x-gzip", "deflate", "raw-deflate"])
async def test_compressed_answers_are_decoded(encoding: str) -> None:
    payload = b'{"usage": {"prompt_tokens": 1}}' * 1000
    if encoding in ("gzip", "x-gzip"):
        packed = gzip.compress(payload)
    elif encoding == "deflate":
        packed = zlib.compress(payload)
    else:
        z = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        packed = z.compress(payload) + z.flush()
    name = b"deflate" if encoding == "raw-deflate" else encoding.encode()

    async def answer(req: bytes) -> bytes:
        return ok(packed, b"content-encoding: " + name + b"\r\n")

    async with serving(answer) as (raw, url):
        p = pool(url)
        for _ in range(2):
            assert await (await p.request("POST", "/v1/x", b"{}")).read() == payload
        p.close()
    assert raw.connections == 1


async def test_compressed_stream_is_decoded_as_it_comes() -> None:
    events = [b'data: {"n": %d}\n\n' % i for i in range(200)]
    z = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
    chunks = [z.compress(e) + z.flush(zlib.Z_SYNC_FLUSH) for e in events] + [z.flush()]

    async def answer(req: bytes) -> bytes:
        head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-encoding: gzip\r\n\r\n"
        return head + b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks if c) + b"0\r\n\r\n"

    async with serving(answer) as (_, url):
        p = pool(url)
        resp = await p.request("POST", "/v1/x", b"{}")
        assert b"".join([c async for c in resp.chunks()]) == b"".join(events)
        p.close()


@pytest.mark.parametrize("case", ["bomb", "cut", "garbage", "two-members", "br"])
async def test_compressed_answers_that_cannot_be_taken(case: str) -> None:
    encoding, body = b"gzip", gzip.compress(b"0" * (64 * 1024 * 1024))
    if case == "cut":
        body = gzip.compress(b"x" * 1000)[:-10]
    elif case == "garbage":
        body = b"not gzip at all"
    elif case == "two-members":
        body = gzip.compress(b"first") + gzip.compress(b"second")
    elif case == "br":
        encoding = b"br"

    async def answer(req: bytes) -> bytes:
        return ok(body, b"content-encoding: " + encoding + b"\r\n")

    says = {
        "bomb": "over 1000000 bytes decoded",
        "cut": "cut short",
        "garbage": "does not decode",
        "two-members": "bytes past its end",
    }
    async with serving(answer) as (_, url):
        p = capped(url, body_bytes=1_000_000)
        if case == "br":
            with pytest.raises(UpstreamRefused, match="Content-Encoding 'br'"):
                await p.request("POST", "/v1/x", b"{}")
        else:
            resp = await p.request("POST", "/v1/x", b"{}")
            with pytest.raises(UpstreamRefused, match=says[case]):
                await resp.read()
        p.close()
