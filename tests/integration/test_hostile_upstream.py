"""Hostile upstreams behind the real proxy: no answer may cross to another request or tenant,
and no answer may be bigger, stranger or more compressed than the proxy can take safely.

The upstream (tests/support/hostile_upstream.py) breaks HTTP/1.1 framing on purpose; two
tenants alternate; every answer names the request it belongs to, and each client must get
exactly its own (docs/security.md, "Hostile upstreams").
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.hostile_upstream import HostileUpstream, running
from tests.support.proxy import ProxyHandle, run_proxy

pytestmark = pytest.mark.timeout(60)

KEYS = {"a": "sk-hostile-upstream-tenant-a", "b": "sk-hostile-upstream-tenant-b"}
CAP = 256 * 1024  # small caps: the hostile answers are 2 MiB


def cfg(up: HostileUpstream, health: bool = False) -> dict[str, Any]:
    return {
        "auth": {"keys": [{"key": k, "tenant": t} for t, k in KEYS.items()]},
        "tenants": {"a": {}, "b": {}},
        "limits": {
            "upstream_max_head_bytes": 16 * 1024,
            "upstream_max_headers": 64,
            "upstream_max_body_bytes": CAP,
            "upstream_max_event_bytes": 64 * 1024,
        },
        "health_checks": {"enabled": health, "interval_s": 0.1, "timeout_s": 2.0},
        "engine_metrics": {"enabled": False},
        "gpu_pools": {"p": {"gpus": 1, "billing": "rental", "usd_per_gpu_hour": 1.0}},
        "backends": {
            "hostile": {
                "type": "openai",
                "base_url": up.url,
                "pool": "p",
                "engine": "none",
                "health_path": "/health",
            }
        },
        "models": {"chat": {"targets": [{"backend": "hostile", "model": "m"}]}},
    }


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[HostileUpstream, ProxyHandle]]:
    with running() as up, run_proxy(tmp_path_factory.mktemp("hostile-up"), cfg(up)) as p:
        yield up, p


def ask(
    p: ProxyHandle, tenant: str, mode: str, marker: str, stream: bool = False
) -> httpx.Response:
    body = {"model": "chat", "messages": [{"role": "user", "content": f"{mode} {marker}"}]}
    if stream:
        body["stream"] = True
    return httpx.post(
        f"{p.base_url}/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {KEYS[tenant]}"},
        timeout=20,
    )


def content(r: httpx.Response) -> str:
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


def wait_closed(up: HostileUpstream, count: int, timeout: float = 5.0) -> bool:
    """Until the proxy has closed `count` connections (bounded polling)."""
    deadline = time.monotonic() + timeout
    while up.closed_by_peer < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return up.closed_by_peer >= count


@pytest.mark.parametrize("mode", ["inject", "surplus_same", "surplus_later", "stream_tail"])
def test_no_answer_crosses_requests_or_tenants(
    stack: tuple[HostileUpstream, ProxyHandle], mode: str
) -> None:
    """A stray answer on an idle pooled connection, bytes past Content-Length (in the same
    write or a later one), bytes after a chunked stream's end: each poisons the connection,
    which is closed, and the next request (the other tenant's) gets its own answer."""
    up, p = stack
    stream = mode == "stream_tail"
    for i in range(3):
        first, second = ("a", "b") if i % 2 == 0 else ("b", "a")
        closed = up.closed_by_peer
        marker = f"{mode}-{first}{i}"
        r = ask(p, first, mode, marker, stream=stream)
        if stream:
            assert r.status_code == 200
            assert marker in r.text and "SMUGGLED" not in r.text
        else:
            assert content(r) == marker
        seen = wait_closed(up, closed + 1)  # the proxy dropped the poisoned connection
        for j in range(2):  # the other tenant, twice: whichever connection it is given
            mine = f"plain-{second}{i}{j}"
            assert content(ask(p, second, "plain", mine)) == mine
        assert seen, "the poisoned connection was kept open"


def test_health_probes_share_the_pool_and_cannot_feed_a_tenant(tmp_path: Path) -> None:
    """Health probes use the request pool: a probe answer with a forged completion behind
    it poisons its connection, and tenants alternating meanwhile get only their own."""
    with running(health_surplus=True) as up, run_proxy(tmp_path, cfg(up, health=True)) as p:
        deadline = time.monotonic() + 10
        while up.health_probes < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert up.health_probes >= 3
        for i in range(20):
            tenant = "ab"[i % 2]
            marker = f"h-{tenant}{i}"
            assert content(ask(p, tenant, "plain", marker)) == marker
        assert up.closed_by_peer >= 3  # every probe's connection was dropped


@pytest.mark.parametrize("mode", ["gzip", "deflate"])
def test_compressed_answers_are_decoded(
    stack: tuple[HostileUpstream, ProxyHandle], mode: str
) -> None:
    """An upstream that compresses despite `Accept-Encoding: identity`: the client gets plain
    JSON (no Content-Encoding) and the usage in it is metered, not estimated."""
    _, p = stack
    before = p.metric("hybridgate_tokens_total", backend="hostile", kind="prompt")
    r = ask(p, "a", mode, f"{mode}-ok")
    assert "content-encoding" not in r.headers
    assert content(r) == f"{mode}-ok"
    assert p.metric("hybridgate_tokens_total", backend="hostile", kind="prompt") - before == 3


def test_compressed_stream_is_decoded(stack: tuple[HostileUpstream, ProxyHandle]) -> None:
    _, p = stack
    r = ask(p, "b", "gzip_stream", "gz-stream", stream=True)
    assert r.status_code == 200
    assert "content-encoding" not in r.headers
    assert '"content":"gz-stream"' in r.text and r.text.endswith("data: [DONE]\n\n")


@pytest.mark.parametrize(
    ("mode", "says"),
    [
        ("bomb", "bytes decoded"),
        ("big_body", f"upstream answer over {CAP} bytes"),
        ("big_head", "head over 16384 bytes"),
        ("many_headers", "over 64 headers"),
        ("switch", "switched protocols (HTTP 101)"),
        ("br", "Content-Encoding 'br'"),
    ],
)
def test_unacceptable_answers_fail_the_attempt_with_a_clear_502(
    stack: tuple[HostileUpstream, ProxyHandle], mode: str, says: str
) -> None:
    """Over a cap, a protocol switch, an encoding the proxy cannot decode: a 502 in OpenAI's
    shape that says which, metered once as an error; the proxy serves the next request."""
    _, p = stack
    errors = p.metric("hybridgate_requests_total", backend="hostile", outcome="error")
    r = ask(p, "a", mode, f"{mode}-x")
    assert r.status_code == 502, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert says in err["message"] and "hostile" in err["message"], err
    assert err["code"] == "backend_unavailable"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the metrics are written a moment after the answer
        if p.metric("hybridgate_requests_total", backend="hostile", outcome="error") > errors:
            break
        time.sleep(0.02)
    assert p.metric("hybridgate_requests_total", backend="hostile", outcome="error") - errors == 1
    assert content(ask(p, "b", "plain", f"after-{mode}")) == f"after-{mode}"


def test_an_endless_stream_event_ends_the_stream(
    stack: tuple[HostileUpstream, ProxyHandle],
) -> None:
    """One SSE event bigger than `upstream_max_event_bytes` is not held without bound: before
    the first event it is a 502, as any failed attempt."""
    _, p = stack
    r = ask(p, "a", "big_event", "ev", stream=True)
    assert r.status_code == 502, r.text
    assert "stream event over 65536 bytes" in r.json()["error"]["message"]


def test_an_endless_event_after_the_first_ends_the_stream_with_an_error_event(
    stack: tuple[HostileUpstream, ProxyHandle],
) -> None:
    """After the first event the answer has begun: the stream ends with the error event
    (`stream_interrupted`), the events before it relayed, the endless one never."""
    _, p = stack
    r = ask(p, "b", "big_event_late", "late", stream=True)
    assert r.status_code == 200
    assert '"content":"late"' in r.text
    assert r.text.rstrip().endswith('"code":"stream_interrupted"}}')
    assert "xxxx" not in r.text


def test_a_client_that_leaves_at_done_is_booked_as_served(
    stack: tuple[HostileUpstream, ProxyHandle],
) -> None:
    """openai-python closes the connection as soon as it reads [DONE], before the chunked
    body's end. An upstream slow to end its body after [DONE] (0.5 s here) must not turn a
    whole answer into a client disconnect in the books (before the fix: outcome
    client_disconnect, status 499, for an answer the client had in full)."""
    up, p = stack
    served = p.metric("hybridgate_requests_total", outcome="success")
    gone = p.metric("hybridgate_requests_total", outcome="client_disconnect")
    client = openai.OpenAI(base_url=p.base_url, api_key=KEYS["a"], max_retries=0, timeout=20)
    chunks = list(
        client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "slow_end m-done"}], stream=True
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "m-done"
    deadline = time.monotonic() + 5
    while p.metric("hybridgate_requests_total", outcome="success") == served:
        assert p.metric("hybridgate_requests_total", outcome="client_disconnect") == gone
        assert time.monotonic() < deadline, "the request was never booked"
        time.sleep(0.05)
    assert p.metric("hybridgate_requests_total", outcome="success") == served + 1
    assert p.metric("hybridgate_requests_total", outcome="client_disconnect") == gone
    # The upstream's end was read: its connection was not dropped for it.
    assert not wait_closed(up, up.closed_by_peer + 1, timeout=0.5)
