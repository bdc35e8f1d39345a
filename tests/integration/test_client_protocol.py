"""The client side of HTTP/1.1, as a hostile or unusual client would try it: raw sockets
against a real proxy in front of the simulator.

Request smuggling through an `Upgrade` the proxy does not perform, unbounded request
heads, a 408 written into another answer's stream, streaming to an HTTP/1.0 client, and
compressed request bodies (docs/security.md, "The client side of HTTP/1.1").
"""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import zlib
from collections.abc import Iterator

import httpx
import pytest

from tests.support.proxy import ProxyHandle, run_proxy
from tests.support.rawhttp import Answer, parse, read_answers
from tests.support.sim import run_simulator

KEY = "sk-client-protocol-test-key"
LIMIT = 64 * 1024  # limits.max_body_bytes here
CHAT = json.dumps(
    {"model": "chat", "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]}
).encode()
STREAM = json.dumps(
    {
        "model": "chat",
        "stream": True,
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}],
    }
).encode()
METRICS = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyHandle]:
    tmp = tmp_path_factory.mktemp("client-protocol")
    with run_simulator(tmp, "vllm") as vllm:
        config = {
            "auth": {"keys": [{"key": KEY, "tenant": "t"}]},
            "limits": {
                "max_body_bytes": LIMIT,
                "header_timeout_s": 5.0,
                "body_timeout_s": 1.0,
            },
            "backends": {"local": {"type": "openai", "base_url": vllm.base_url}},
            "models": {"chat": {"targets": [{"backend": "local", "model": "sim-model"}]}},
        }
        with run_proxy(tmp, config) as p:
            yield p


def read_all(s: socket.socket, timeout: float = 10.0) -> tuple[bytes, bool]:
    """Everything the server sends until it closes the connection: (bytes, closed)."""
    s.settimeout(timeout)
    got = b""
    try:
        while chunk := s.recv(65536):
            got += chunk
    except TimeoutError:
        return got, False
    except OSError:  # reset: the server closed with our bytes unread
        pass
    return got, True


def connect(proxy: ProxyHandle) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=10)


def post(path: str, body: bytes = CHAT, extra: str = "", version: str = "1.1") -> bytes:
    return (
        f"POST {path} HTTP/{version}\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def send_quietly(s: socket.socket, data: bytes) -> None:
    """Send, ignoring a connection the server has already closed."""
    with contextlib.suppress(OSError):
        s.sendall(data)


# ----------------------------------------------------------------- smuggling via Upgrade


@pytest.mark.parametrize("upgrade", ["h2c", "websocket", "foo"])
def test_an_upgrade_with_a_body_is_refused_and_what_follows_is_never_answered(
    proxy: ProxyHandle, upgrade: str
) -> None:
    """A front end frames the body by Content-Length; httptools skips the body of an
    upgrade request. What the front end sees as body must never be parsed as a request."""
    smuggled = METRICS
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
        f"Connection: Upgrade\r\nUpgrade: {upgrade}\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Content-Length: {len(smuggled)}\r\n\r\n"
    ).encode()
    with connect(proxy) as s:
        s.sendall(head)
        first = read_answers(s, 1)
        send_quietly(s, smuggled)  # the "body", in a read of its own
        rest, closed = read_all(s, timeout=5)
    assert [a.status for a in first] == [400]
    assert first[0].headers.get(b"connection") == b"close"
    err = json.loads(first[0].body)["error"]
    assert err["code"] == "unsupported_upgrade" and upgrade in err["message"]
    assert rest == b"" and closed  # nothing more was answered: the connection is gone


def test_an_upgrade_with_a_chunked_body_in_one_read_is_refused(proxy: ProxyHandle) -> None:
    smuggled = post("/v1/chat/completions")
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(smuggled), smuggled)
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
        "Connection: keep-alive, Upgrade\r\nUpgrade: h2c\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode() + chunked
    with connect(proxy) as s:
        s.sendall(request)
        got, closed = read_all(s)
    answers = parse(got).answers
    assert [a.status for a in answers] == [400] and closed


def test_an_upgrade_without_a_body_is_served_and_the_connection_goes_on(
    proxy: ProxyHandle,
) -> None:
    """curl --http2 on http:// asks for h2c on a bodiless GET: served as HTTP/1.1 (the
    upgrade ignored, RFC 9110 7.8), and the request after it on the same read answered."""
    with connect(proxy) as s:
        s.sendall(
            b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
            + post("/v1/chat/completions")
        )
        answers = read_answers(s, 2)
    assert [a.status for a in answers] == [200, 200]
    assert json.loads(answers[0].body) == {"status": "ok"}
    assert json.loads(answers[1].body)["object"] == "chat.completion"


# ----------------------------------------------------------------- request head limits


def _refused_with(s: socket.socket) -> Answer:
    got, closed = read_all(s)
    answers = parse(got).answers
    assert closed, got[:200]
    assert len(answers) == 1, got[:300]
    assert answers[0].headers.get(b"connection") == b"close"
    return answers[0]


def test_an_oversized_header_line_is_a_431(proxy: ProxyHandle) -> None:
    with connect(proxy) as s:
        send_quietly(s, post("/v1/chat/completions", extra=f"X-Pad: {'a' * 100_000}\r\n"))
        answer = _refused_with(s)
    assert answer.status == 431
    assert json.loads(answer.body)["error"]["code"] == "request_header_fields_too_large"


def test_too_many_headers_is_a_431(proxy: ProxyHandle) -> None:
    many = "".join(f"X-H{i}: v\r\n" for i in range(101))
    with connect(proxy) as s:
        send_quietly(s, post("/v1/chat/completions", extra=many))
        answer = _refused_with(s)
    assert answer.status == 431
    assert "100" in json.loads(answer.body)["error"]["message"]


def test_an_oversized_url_is_a_414(proxy: ProxyHandle) -> None:
    with connect(proxy) as s:
        send_quietly(s, f"GET /health/live?{'a' * 9000} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        answer = _refused_with(s)
    assert answer.status == 414
    assert json.loads(answer.body)["error"]["code"] == "uri_too_long"


def test_a_head_just_within_the_limits_is_served(proxy: ProxyHandle) -> None:
    extra = "".join(f"X-H{i}: {'v' * 500}\r\n" for i in range(90))  # ~46 KiB, 94 headers
    with connect(proxy) as s:
        s.sendall(post(f"/v1/chat/completions?{'a' * 8000}", extra=extra))
        answers = read_answers(s, 1)
    assert [a.status for a in answers] == [200]


def test_pipelined_requests_are_each_held_to_the_limits(proxy: ProxyHandle) -> None:
    """A head that begins in the same read as the request before it is measured too. The
    oversized one is never served: a 431 if the first was answered by then, else the
    connection closes with the first unanswered (an answer cannot be cut into)."""
    with connect(proxy) as s:
        send_quietly(
            s,
            post("/v1/chat/completions")
            + post("/v1/chat/completions", extra=f"X-Pad: {'a' * 60_000}\r\n" * 2),
        )
        got, closed = read_all(s)
    assert [a.status for a in parse(got).answers] in ([], [200, 431]) and closed


@pytest.mark.timeout(60)
def test_an_endless_header_is_cut_off_as_it_arrives_and_others_are_served(
    proxy: ProxyHandle,
) -> None:
    with connect(proxy) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        s.sendall(b"a" * 32 * 1024)  # within the limit: the head is still open
        live = httpx.get(f"{proxy.url}/health/live", timeout=10)
        assert live.status_code == 200
        sent = 0
        while sent < 64 * 1024 * 1024:  # far past the limit; it must stop us first
            try:
                s.sendall(b"a" * 65536)
            except OSError:
                break
            sent += 65536
        answer = _refused_with(s)
    assert answer.status == 431
    assert sent < 16 * 1024 * 1024  # refused while arriving, not after 64 MiB
    assert httpx.get(f"{proxy.url}/health/live", timeout=10).status_code == 200


# ----------------------------------------------------------------- 408 and pipelining


@pytest.mark.timeout(60)
def test_a_pipelined_body_timeout_never_writes_a_408_into_a_stream(proxy: ProxyHandle) -> None:
    """The second request's body times out (body_timeout_s 1) while the first request's
    answer is still streaming: the connection closes, and nothing but that stream was
    written on it."""
    long_stream = json.dumps(
        {
            "model": "chat",
            "stream": True,
            "max_tokens": 1000,
            "messages": [{"role": "user", "content": "hi"}],
        }
    ).encode()
    with connect(proxy) as s:
        s.sendall(post("/v1/chat/completions", long_stream))
        head = read_answers_head(s)
        assert head.startswith(b"HTTP/1.1 200")
        second = post("/v1/chat/completions")
        s.sendall(second[:-5])  # the head, and a body that never completes
        got, closed = read_all(s, timeout=30)
    data = head + got
    assert closed
    assert b"HTTP/1.1 408" not in data
    reader = parse(data)
    assert reader.error is None, data[-300:]
    assert [a.status for a in reader.answers] == [200]


def read_answers_head(s: socket.socket) -> bytes:
    """The bytes up to and including the first answer's head."""
    got = b""
    s.settimeout(10)
    while b"\r\n\r\n" not in got:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


# ----------------------------------------------------------------- HTTP/1.0 streaming


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/chat/completions?via=query"])
def test_a_stream_to_an_http10_client_is_delimited_by_close(proxy: ProxyHandle, path: str) -> None:
    with connect(proxy) as s:
        s.sendall(post(path, STREAM, version="1.0"))
        got, closed = read_all(s)
    assert closed
    head, _, body = got.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0].startswith(b"HTTP/1.1 200")
    fields = {k.lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:])}
    assert b"transfer-encoding" not in fields and b"content-length" not in fields
    assert fields[b"connection"] == b"close"
    events = [e for e in body.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    chunks = [json.loads(e.removeprefix(b"data: ")) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}


# ----------------------------------------------------------------- compressed bodies


def _post_encoded(
    proxy: ProxyHandle, body: bytes, encoding: str, path: str = "/v1/chat/completions"
) -> httpx.Response:
    return httpx.post(
        f"{proxy.url}{path}",
        content=body,
        headers={
            **proxy.headers(),
            "content-type": "application/json",
            "content-encoding": encoding,
        },
        timeout=10,
    )


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/chat/completions?via=query"])
@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda b: zlib.compress(b, wbits=-15)),  # raw deflate, as some send it
        ("GZIP", gzip.compress),
        ("identity", lambda b: b),
    ],
    ids=["gzip", "x-gzip", "deflate", "raw-deflate", "GZIP", "identity"],
)
def test_compressed_request_bodies_are_decoded(
    proxy: ProxyHandle, path: str, encoding: str, encode: object
) -> None:
    r = _post_encoded(proxy, encode(CHAT), encoding, path)  # type: ignore[operator]
    assert r.status_code == 200, r.text
    plain = httpx.post(f"{proxy.base_url}/chat/completions", content=CHAT, headers=proxy.headers())
    # The upstream saw the same JSON: it counted the same prompt.
    assert r.json()["usage"]["prompt_tokens"] == plain.json()["usage"]["prompt_tokens"]


def test_a_body_over_the_limit_once_decoded_is_a_413(proxy: ProxyHandle) -> None:
    bomb = json.dumps(
        {"model": "chat", "messages": [{"role": "user", "content": "a" * 50 * 1024 * 1024}]}
    ).encode()
    compressed = gzip.compress(bomb, compresslevel=9)
    assert len(compressed) < LIMIT  # small on the wire, 50 MiB inflated
    r = _post_encoded(proxy, compressed, "gzip")
    assert r.status_code == 413
    err = r.json()["error"]
    assert err["code"] == "request_too_large" and "decod" in err["message"]


@pytest.mark.parametrize("encoding", ["br", "zstd", "compress", "gzip, br"])
def test_an_unsupported_content_encoding_is_a_415_naming_it(
    proxy: ProxyHandle, encoding: str
) -> None:
    r = _post_encoded(proxy, CHAT, encoding)
    assert r.status_code == 415
    err = r.json()["error"]
    assert "Content-Encoding" in err["message"] and err["code"] == "unsupported_content_encoding"
    assert set(err) == {"message", "type", "param", "code"}
    assert "gzip" in r.headers["accept-encoding"]


def test_a_corrupt_compressed_body_is_a_400_naming_the_encoding(proxy: ProxyHandle) -> None:
    for body in (b"not gzip at all", gzip.compress(CHAT)[:-12]):
        r = _post_encoded(proxy, body, "gzip")
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert "gzip" in err["message"] and err["code"] == "invalid_body"
