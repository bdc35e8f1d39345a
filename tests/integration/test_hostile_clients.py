"""Hostile clients: slowloris headers and bodies, idle connection floods, stalled readers."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.proxy import ProxyHandle, run_proxy
from tests.support.rawhttp import Reader
from tests.support.sim import SimHandle, run_simulator

KEY = "sk-hostile-test-key"


def cfg(vllm: SimHandle) -> dict[str, Any]:
    return {
        "auth": {"keys": [{"key": KEY, "tenant": "t"}]},
        "limits": {"header_timeout_s": 1.0, "body_timeout_s": 1.5},
        "gpu_pools": {"p": {"gpus": 1, "billing": "rental", "usd_per_gpu_hour": 1.0}},
        "backends": {"local": {"type": "openai", "base_url": vllm.base_url, "pool": "p"}},
        "models": {"chat": {"targets": [{"backend": "local", "model": "sim-model"}]}},
    }


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("hostile")
    with run_simulator(tmp, "vllm", args=["--speed", "20"]) as vllm, run_proxy(tmp, cfg(vllm)) as p:
        yield p


def ok_request(proxy: ProxyHandle) -> int:
    return httpx.post(
        f"{proxy.base_url}/chat/completions",
        headers=proxy.headers(),
        timeout=10,
        json={"model": "chat", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]},
    ).status_code


def _drip(
    proxy: ProxyHandle, payload: bytes, every_s: float, limit_s: float
) -> tuple[bytes, float]:
    """Send `payload` a byte at a time; return what the server said and when it hung up."""
    s = socket.create_connection(("127.0.0.1", proxy.port))
    s.settimeout(0.05)
    t0 = time.monotonic()
    got = b""
    try:
        for b in payload:
            try:
                s.sendall(bytes([b]))
            except OSError:
                break
            try:
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk
            except TimeoutError:
                pass
            if time.monotonic() - t0 > limit_s:
                break
            time.sleep(every_s)
        s.settimeout(2.0)
        try:
            while chunk := s.recv(4096):
                got += chunk
        except OSError:
            pass
    finally:
        s.close()
    return got, time.monotonic() - t0


def test_slow_headers_are_cut_off(proxy: ProxyHandle) -> None:
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + KEY.encode()
        + b"\r\nContent-Type: application/json\r\nX-Pad: "
        + b"a" * 200
    )
    got, took = _drip(proxy, head, 0.02, limit_s=8)
    assert got.startswith(b"HTTP/1.1 408"), got[:200]
    assert b'"timeout_error"' in got
    assert took < 4
    assert ok_request(proxy) == 200


def test_slow_body_is_cut_off_and_metered(proxy: ProxyHandle) -> None:
    before = proxy.metric("hybridgate_requests_total", outcome="client_disconnect")
    body = b'{"model": "chat", "messages": [{"role": "user", "content": "' + b"x" * 300 + b'"}]}'
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + KEY.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
    )
    s = socket.create_connection(("127.0.0.1", proxy.port))
    s.sendall(head)
    t0 = time.monotonic()
    closed = False
    for b in body:
        try:
            s.sendall(bytes([b]))
        except OSError:
            closed = True
            break
        time.sleep(0.02)
        if time.monotonic() - t0 > 6:
            break
    s.settimeout(2)
    try:
        rest = s.recv(4096)
        closed = closed or rest == b"" or rest.startswith(b"HTTP/1.1 408")
    except OSError:
        closed = True
    s.close()
    assert closed
    deadline = time.monotonic() + 5
    while (
        time.monotonic() < deadline
        and proxy.metric("hybridgate_requests_total", outcome="client_disconnect") == before
    ):
        time.sleep(0.05)
    assert proxy.metric("hybridgate_requests_total", outcome="client_disconnect") == before + 1
    assert ok_request(proxy) == 200


@pytest.mark.timeout(120)
def test_a_thousand_idle_connections_do_not_block_others(proxy: ProxyHandle) -> None:
    async def run() -> list[int]:
        writers = []
        for _ in range(1000):
            _, w = await asyncio.open_connection("127.0.0.1", proxy.port)
            writers.append(w)
        async with httpx.AsyncClient(timeout=10) as c:
            codes = []
            for _ in range(20):
                r = await c.post(
                    f"{proxy.base_url}/chat/completions",
                    headers=proxy.headers(),
                    json={
                        "model": "chat",
                        "max_tokens": 2,
                        "messages": [{"role": "user", "content": "hi"}],
                    },
                )
                codes.append(r.status_code)
        for w in writers:
            w.close()
        return codes

    assert asyncio.run(run()) == [200] * 20


def test_idle_connections_are_closed_after_the_header_timeout(
    proxy: ProxyHandle, tmp_path: Path
) -> None:
    s = socket.create_connection(("127.0.0.1", proxy.port))
    s.settimeout(5)
    t0 = time.monotonic()
    data = s.recv(4096)
    s.close()
    assert data.startswith(b"HTTP/1.1 408") or data == b""
    assert time.monotonic() - t0 < 4


def test_blank_lines_on_a_kept_alive_connection_do_not_hold_it_open(proxy: ProxyHandle) -> None:
    """A client may send empty lines before a request line (RFC 9112 2.2): on an idle
    kept-alive connection they end the keep-alive timeout, and the header timeout runs from
    them. Before, one CRLF left the connection with no deadline at all, held forever."""
    body = b'{"model": "chat", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}'
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
    ) % (KEY.encode(), len(body), body)
    with socket.create_connection(("127.0.0.1", proxy.port)) as s:
        s.sendall(request)
        reader = Reader(s)
        assert [a.status for a in reader.read(1)] == [200]
        s.sendall(b"\r\n")
        # The header timeout is 1 s, the keep-alive timeout 30 s: closed well within 10 s,
        # with nothing written (no request of its own to answer).
        reader.read(2, timeout=10)  # a second answer never comes: until the close
        assert reader.eof and len(reader.answers) == 1
