"""HTTP/1.1 on the fast path (proxy/server/fastpath.py): the OpenAI routes served by our own
protocol code instead of uvicorn's ASGI cycle, on raw sockets against a real proxy.

Pipelining across both paths, Expect: 100-continue, Connection: close and HTTP/1.0,
chunked request bodies, the keep-alive timeout, and the books after all of it.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from proxy.server.fastpath import head
from tests.support.proxy import ProxyHandle, run_proxy
from tests.support.rawhttp import Reader
from tests.support.sim import run_simulator

KEY = "sk-fastpath-test-key"
LIMIT = 4096
CHAT = json.dumps(
    {"model": "chat", "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]}
).encode()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyHandle]:
    tmp = tmp_path_factory.mktemp("fastpath")
    with run_simulator(tmp, "vllm", args=["--speed", "50"]) as vllm:
        config = {
            "auth": {"keys": [{"key": KEY, "tenant": "t"}]},
            "limits": {"max_body_bytes": LIMIT, "keep_alive_timeout_s": 1.0},
            "backends": {"local": {"type": "openai", "base_url": vllm.base_url}},
            "models": {"chat": {"targets": [{"backend": "local", "model": "sim-model"}]}},
        }
        with run_proxy(tmp, config) as p:
            yield p


def connect(proxy: ProxyHandle) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=10)


def post(path: str, body: bytes = CHAT, extra: str = "", version: str = "1.1") -> bytes:
    return (
        f"POST {path} HTTP/{version}\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def successes(proxy: ProxyHandle) -> float:
    return proxy.metric("hybridgate_requests_total", outcome="success")


@pytest.mark.timeout(60)
def test_pipelined_requests_on_both_paths_are_answered_in_order(proxy: ProxyHandle) -> None:
    before = successes(proxy)
    with connect(proxy) as s:
        s.sendall(
            post("/v1/chat/completions")
            + b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n"
            + post("/chat/completions")  # the bare path, as OpenAI's SDKs allow
            + post("/v1/chat/completions", b'{"model": "nope", "messages": [1]}')
        )
        answers = Reader(s).read(4)
    assert [a.status for a in answers] == [200, 200, 200, 404]
    assert json.loads(answers[0].body)["object"] == "chat.completion"
    assert json.loads(answers[1].body) == {"status": "ok"}
    assert json.loads(answers[2].body)["object"] == "chat.completion"
    assert json.loads(answers[3].body)["error"]["code"] == "model_not_found"
    assert answers[0].headers[b"x-hybridgate-backend"] == b"local"
    assert successes(proxy) == before + 2


@pytest.mark.timeout(60)
def test_expect_100_continue_invites_the_body(proxy: ProxyHandle) -> None:
    with connect(proxy) as s:
        request = post("/v1/chat/completions", extra="Expect: 100-continue\r\n")
        head_part, body = request[: -len(CHAT)], CHAT
        s.sendall(head_part)
        assert s.recv(64) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(body)
        answers = Reader(s).read(1)
    assert answers[0].status == 200


@pytest.mark.timeout(60)
def test_a_declared_body_over_the_limit_is_refused_before_it_is_invited(
    proxy: ProxyHandle,
) -> None:
    with connect(proxy) as s:
        s.sendall(
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
            f"Expect: 100-continue\r\nContent-Length: {LIMIT + 1}\r\n\r\n".encode()
        )
        reader = Reader(s)
        answers = reader.read(1)
    assert answers[0].status == 413  # and no 100 Continue before it: the parser saw one head
    assert json.loads(answers[0].body)["error"]["code"] == "request_too_large"


@pytest.mark.timeout(60)
def test_chunked_request_bodies_are_read_and_limited(proxy: ProxyHandle) -> None:
    def chunked(body: bytes, piece: int) -> bytes:
        parts = [body[i : i + piece] for i in range(0, len(body), piece)]
        return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"

    head_only = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    with connect(proxy) as s:
        s.sendall(head_only)
        for piece in [chunked(CHAT, 7)[i : i + 50] for i in range(0, 400, 50)]:
            s.sendall(piece)  # the body arrives in several reads
            time.sleep(0.01)
        ok = Reader(s).read(1)
    assert ok[0].status == 200
    big = json.dumps({"model": "chat", "messages": [{"role": "user", "content": "x" * LIMIT}]})
    with connect(proxy) as s:
        s.sendall(head_only + chunked(big.encode(), 1000))
        refused = Reader(s).read(1)
    assert refused[0].status == 413


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("version", "extra"), [("1.1", "Connection: close\r\n"), ("1.0", "")], ids=["close", "http10"]
)
def test_connection_close_and_http10_end_the_connection(
    proxy: ProxyHandle, version: str, extra: str
) -> None:
    with connect(proxy) as s:
        s.sendall(post("/v1/chat/completions", extra=extra, version=version))
        reader = Reader(s)
        answers = reader.read(1)
        assert answers[0].status == 200
        assert answers[0].headers.get(b"connection") == b"close"
        s.settimeout(5)
        assert s.recv(1) == b""  # the server closed it


@pytest.mark.timeout(60)
def test_streamed_answer_is_chunked_and_complete(proxy: ProxyHandle) -> None:
    body = json.dumps(
        {
            "model": "chat",
            "stream": True,
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}],
        }
    ).encode()
    with connect(proxy) as s:
        s.sendall(post("/v1/chat/completions", body) + post("/v1/chat/completions"))
        answers = Reader(s).read(2)
    assert answers[0].headers[b"transfer-encoding"] == b"chunked"
    events = [e for e in answers[0].body.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    chunks = [json.loads(e.removeprefix(b"data: ")) for e in events[:-1]]
    assert len(chunks) >= 5 and {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert answers[1].status == 200  # the connection went on after the stream


@pytest.mark.timeout(60)
def test_a_query_string_is_served_by_the_same_path_with_the_same_answer(proxy: ProxyHandle) -> None:
    with connect(proxy) as s:
        s.sendall(post("/v1/chat/completions?api-version=1") + post("/v1/chat/completions"))
        answers = Reader(s).read(2)
    slow, fast = answers
    assert slow.status == fast.status == 200
    assert slow.headers.keys() == fast.headers.keys()
    assert json.loads(slow.body).keys() == json.loads(fast.body).keys()


@pytest.mark.timeout(60)
def test_an_idle_keep_alive_connection_is_closed(proxy: ProxyHandle) -> None:
    with connect(proxy) as s:
        s.sendall(post("/v1/chat/completions"))
        reader = Reader(s)
        assert reader.read(1)[0].status == 200
        s.settimeout(10)  # keep_alive_timeout_s is 1: closed well before this
        t0 = time.monotonic()
        assert s.recv(1) == b""
        assert time.monotonic() - t0 > 0.5  # not closed at once: it was kept alive first


@pytest.mark.timeout(60)
def test_a_connection_answered_before_its_body_arrived_still_times_out_idle(
    proxy: ProxyHandle,
) -> None:
    with connect(proxy) as s:
        # The 413 goes out on the headers alone; the body sent after it is read and dropped,
        # and then the connection is idle like any other (keep_alive_timeout_s is 1).
        request = post("/v1/chat/completions", b"x" * (LIMIT + 1))
        s.sendall(request[: -(LIMIT + 1)])
        reader = Reader(s)
        assert reader.read(1)[0].status == 413
        s.sendall(request[-(LIMIT + 1) :])
        s.settimeout(10)
        assert s.recv(1) == b""


def test_a_header_value_with_cr_or_lf_is_refused() -> None:
    assert head(200, [(b"x-a", b"b")], b"\r\n") == b"HTTP/1.1 200 OK\r\nx-a: b\r\n\r\n"
    for bad in (b"b\r\nset-cookie: x", b"b\nx", b"b\rx"):
        with pytest.raises(ValueError):
            head(200, [(b"x-a", bad)], b"\r\n")
