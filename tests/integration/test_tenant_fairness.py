"""One tenant must not starve the others (issue 18, security item 4).

Real simulators on loopback behind a real `hybridgate serve`, driven by httpx and the
official openai SDK. A "held" stream is a real stream whose first event the client has
received (so the proxy holds its backend slot and the key's cap) and which it then
leaves open, until it hangs up. Nothing here asserts on time: statuses, headers, who
served, the proxy's counters and its request log.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.support.proxy import ProxyHandle, metric_value, run_proxy
from tests.support.routing import parse_sse, wait_for
from tests.support.servers import free_port
from tests.support.sim import SimHandle, run_simulator

KEY_A = "sk-fair-tenant-a-0123456789"  # the greedy tenant: at most 2 in flight
KEY_B = "sk-fair-tenant-b-0123456789"  # the other tenant: no cap
KEY_C1 = "sk-fair-tenant-c1-012345678"  # tenant c's two keys share its cap of 2
KEY_C2 = "sk-fair-tenant-c2-012345678"
KEY_D = "sk-fair-tenant-d-0123456789"  # 1 in flight and 1 request per window
MSGS = [{"role": "user", "content": "Tell me about fair sharing."}]
LONG = 2000  # max_tokens of a held stream: minutes of tokens at the slow simulator's pace


def fairness_config(slow: SimHandle, fast: SimHandle, log: Path) -> dict[str, Any]:
    def alias(*backends: str, **extra: Any) -> dict[str, Any]:
        return {"targets": [{"backend": b, "model": "gpt-4o-mini"} for b in backends], **extra}

    return {
        "auth": {
            "keys": [
                {"key": KEY_A, "tenant": "a", "name": "a-app", "max_concurrency": 2},
                {"key": KEY_B, "tenant": "b", "name": "b-app"},
                {"key": KEY_C1, "tenant": "c", "name": "c-one"},
                {"key": KEY_C2, "tenant": "c", "name": "c-two"},
                {"key": KEY_D, "tenant": "d", "name": "d-app", "max_concurrency": 1, "rpm": 1},
            ]
        },
        "tenants": {"a": {}, "b": {}, "c": {"max_concurrency": 2}, "d": {}},
        "backends": {
            "small": {"base_url": slow.base_url, "max_concurrency": 2},  # the contested one
            "roomy": {"base_url": slow.base_url},  # the same upstream, with room
            "spare": {"base_url": fast.base_url},
            "dead": {
                "base_url": f"http://127.0.0.1:{free_port()}/v1",
                "timeouts": {"connect_s": 1},
            },
        },
        "models": {
            "hold": alias("small"),
            "spill": alias("small", "spare"),
            "only-small": alias("small", timeout_s=1.0),
            "roomy": alias("roomy"),
            "fast": alias("spare"),
            "broken": alias("dead"),
            "short-stream": alias("roomy", stream_timeout_s=1.0),
        },
        "health_checks": {"enabled": False},
        "engine_metrics": {"enabled": False},
        "breaker": {"failure_threshold": 1000},
        "state": {"rate_window_s": 3600},
        "request_log": {"path": str(log)},
    }


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ProxyHandle, Path]]:
    tmp = tmp_path_factory.mktemp("fairness")
    log = tmp / "requests.jsonl"
    slow_args = ["--ttft-ms", "0", "--itl-ms", "100"]
    fast_args = ["--ttft-ms", "0", "--itl-ms", "1"]
    with (
        run_simulator(tmp, "api", args=slow_args, name="slow") as slow,
        run_simulator(tmp, "api", args=fast_args, name="fast") as fast,
        run_proxy(tmp, fairness_config(slow, fast, log)) as proxy,
    ):
        yield proxy, log


@pytest.fixture
def proxy(stack: tuple[ProxyHandle, Path]) -> Iterator[ProxyHandle]:
    p = stack[0]
    yield p
    # Every test hangs up its held streams: nothing may stay counted afterwards.
    wait_for(lambda: inflight(p) == 0, "the proxy to have nothing in flight")


@pytest.fixture
def log(stack: tuple[ProxyHandle, Path]) -> Path:
    return stack[1]


def inflight(proxy: ProxyHandle) -> float:
    text = proxy.metrics_text()
    return sum(
        metric_value(text, name)
        for name in (
            "hybridgate_inflight_requests",
            "hybridgate_key_inflight_requests",
            "hybridgate_tenant_inflight_requests",
        )
    )


def post(proxy: ProxyHandle, key: str, model: str, **body: Any) -> httpx.Response:
    payload = {"model": model, "messages": MSGS, "max_tokens": 5, **body}
    return httpx.post(
        f"{proxy.base_url}/chat/completions",
        json=payload,
        headers={"Authorization": f"Bearer {key}"},
        timeout=20,  # a bound for a broken proxy that never answers, not a measurement
    )


@contextlib.contextmanager
def held_stream(proxy: ProxyHandle, key: str, model: str) -> Iterator[httpx.Response]:
    """A stream whose first event has arrived, left open until the block ends (hang-up)."""
    with (
        httpx.Client(timeout=20) as client,
        client.stream(
            "POST",
            f"{proxy.base_url}/chat/completions",
            json={"model": model, "messages": MSGS, "max_tokens": LONG, "stream": True},
            headers={"Authorization": f"Bearer {key}"},
        ) as r,
    ):
        assert r.status_code == 200, r.read()
        chunks = r.iter_raw()  # held on to: a dropped iterator closes the response
        assert b"data:" in next(chunks)
        yield r


def events_where(log: Path, n: int, **fields: Any) -> list[dict[str, Any]]:
    """The request log's events with these `fields`, once there are `n` (the log is
    written by a background sink, a moment after the answers)."""
    deadline = time.monotonic() + 10
    while True:
        lines = log.read_text().splitlines() if log.exists() else []
        evs = [e for e in map(orjson.loads, lines) if all(e[k] == v for k, v in fields.items())]
        if len(evs) >= n or time.monotonic() > deadline:
            return evs
        time.sleep(0.05)


def grew(before: str, after: str, name: str, **labels: str) -> float:
    """How much a metric grew between two scrapes."""
    return metric_value(after, name, **labels) - metric_value(before, name, **labels)


def error_of(r: httpx.Response) -> dict[str, Any]:
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err


# ---------------------------------------------------------------- a full backend


def test_a_full_backend_fails_over_to_the_next_target(proxy: ProxyHandle) -> None:
    """Tenant a's long streams fill `small`; tenant b's request goes on to `spare` at
    once (it waited on `small` without end before the fix)."""
    before = proxy.metrics_text()
    with held_stream(proxy, KEY_A, "hold"), held_stream(proxy, KEY_A, "hold"):
        r = post(proxy, KEY_B, "spill")
        assert r.status_code == 200, r.text
        assert r.headers["x-hybridgate-backend"] == "spare"
        assert r.headers["x-hybridgate-attempts"] == "2"
        with httpx.stream(
            "POST",
            f"{proxy.base_url}/chat/completions",
            json={"model": "spill", "messages": MSGS, "max_tokens": 5, "stream": True},
            headers={"Authorization": f"Bearer {KEY_B}"},
            timeout=20,
        ) as s:
            events, done = parse_sse(s.read())
        assert s.status_code == 200 and done and not any("error" in e for e in events)
        assert s.headers["x-hybridgate-backend"] == "spare"
        assert s.headers["x-hybridgate-attempts"] == "2"
    after = proxy.metrics_text()
    moved = {"alias": "spill", "from_backend": "small", "to_backend": "spare"}
    assert grew(before, after, "hybridgate_failovers_total", reason="saturated", **moved) == 2
    assert grew(before, after, "hybridgate_failovers_total", **moved) == 2  # no other reason
    ok = {"alias": "spill", "backend": "spare", "outcome": "success"}
    assert grew(before, after, "hybridgate_requests_total", **ok) == 2
    assert grew(before, after, "hybridgate_requests_total", alias="spill") == 2


def test_a_full_last_target_answers_503_with_retry_after_within_the_deadline(
    proxy: ProxyHandle, log: Path
) -> None:
    """No target frees a slot before the deadline (alias timeout_s: 1): a 503 in OpenAI's
    shape with Retry-After, metered once as a failed request."""
    with held_stream(proxy, KEY_A, "hold"), held_stream(proxy, KEY_A, "hold"):
        r = post(proxy, KEY_B, "only-small")
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "1"
    assert r.headers["x-hybridgate-attempts"] == "1"
    err = error_of(r)
    assert err["code"] == "backend_saturated" and err["type"] == "server_error"
    assert "only-small" in err["message"] and "max_concurrency" in err["message"]
    (ev,) = events_where(log, 1, alias="only-small")
    assert ev["status"] == 503 and ev["outcome"] == "error" and ev["tenant"] == "b"
    assert [(a["backend"], a["reason"]) for a in ev["attempts"]] == [("small", "saturated")]
    text = proxy.metrics_text()
    assert metric_value(text, "hybridgate_requests_total", alias="only-small") == 1
    gave_up = {"alias": "only-small", "to_backend": "none", "reason": "saturated"}
    assert metric_value(text, "hybridgate_failovers_total", **gave_up) == 1


def test_a_waiting_request_gets_the_slot_freed_before_its_deadline(proxy: ProxyHandle) -> None:
    """The last target is waited for (within the deadline), not refused at once: a slot
    freed while the request is queued serves it."""
    with contextlib.ExitStack() as held:
        held.enter_context(held_stream(proxy, KEY_A, "hold"))
        second = held.enter_context(held_stream(proxy, KEY_A, "hold"))
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            answer = pool.submit(post, proxy, KEY_B, "hold", max_tokens=3)
            wait_for(
                lambda: proxy.metric("hybridgate_backend_queued_requests", backend="small") == 1,
                "the request to queue for a slot of 'small'",
            )
            second.close()  # a hang-up frees one slot: the queued request gets it
            r = answer.result()
    assert r.status_code == 200, r.text
    assert r.headers["x-hybridgate-backend"] == "small"
    assert r.headers["x-hybridgate-attempts"] == "1"
    assert proxy.metric("hybridgate_backend_queued_requests", backend="small") == 0


def test_a_client_gone_while_queued_leaves_no_slot_or_count_behind(proxy: ProxyHandle) -> None:
    """A request queued for a full backend whose client hangs up: it leaves the queue and
    its tenant's count (tenant c, capped), and the backend's slots are all usable again."""
    body = orjson.dumps({"model": "hold", "messages": MSGS, "max_tokens": 3})
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEY_C1}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    with held_stream(proxy, KEY_A, "hold"), held_stream(proxy, KEY_A, "hold"):
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
            sock.sendall(head.encode() + body)
            wait_for(
                lambda: (
                    proxy.metric("hybridgate_backend_queued_requests", backend="small") == 1
                    and proxy.metric("hybridgate_tenant_inflight_requests", tenant="c") == 1
                ),
                "the request to queue for a slot",
            )
        wait_for(
            lambda: (
                proxy.metric("hybridgate_backend_queued_requests", backend="small") == 0
                and proxy.metric("hybridgate_tenant_inflight_requests", tenant="c") == 0
            ),
            "the hang-up to leave the queue and the count",
        )
    wait_for(lambda: inflight(proxy) == 0, "the held streams to end")
    with held_stream(proxy, KEY_A, "hold"), held_stream(proxy, KEY_A, "hold"):
        pass  # both slots of 'small' are there to take


# ---------------------------------------------------------------- per key and tenant caps


def test_a_key_over_its_concurrency_cap_gets_429_while_another_is_served(
    proxy: ProxyHandle, log: Path
) -> None:
    """Key a-app (max_concurrency: 2) holds two streams on a backend with room: its third
    request is a 429 (OpenAI SDK: RateLimitError), tenant b is served meanwhile."""
    before = proxy.metrics_text()
    a = openai.OpenAI(base_url=proxy.base_url, api_key=KEY_A, max_retries=0)
    with held_stream(proxy, KEY_A, "roomy"), held_stream(proxy, KEY_A, "roomy"):
        assert proxy.metric("hybridgate_key_inflight_requests", key="a-app") == 2
        with pytest.raises(openai.RateLimitError) as exc:
            a.chat.completions.create(model="roomy", messages=MSGS, max_tokens=3)  # type: ignore[arg-type]
        r = exc.value.response
        assert r.headers["retry-after"] == "1"
        assert r.headers["x-ratelimit-limit-concurrency"] == "2"
        assert exc.value.code == "concurrency_limit_exceeded"
        err = error_of(r)
        assert err["type"] == "rate_limit_error" and "key 'a-app'" in err["message"]
        b = post(proxy, KEY_B, "roomy")
        assert b.status_code == 200 and b.headers["x-hybridgate-backend"] == "roomy"
    wait_for(
        lambda: proxy.metric("hybridgate_key_inflight_requests", key="a-app") == 0,
        "a-app's streams to be released",
    )
    assert post(proxy, KEY_A, "roomy").status_code == 200  # room again once they ended
    rejected = {"alias": "roomy", "outcome": "rejected"}
    assert grew(before, proxy.metrics_text(), "hybridgate_requests_total", **rejected) == 1
    (refused,) = events_where(log, 1, alias="roomy", key_name="a-app", status=429)
    assert refused["outcome"] == "rejected" and refused["attempts"] == []


def test_a_tenant_cap_is_shared_by_its_keys(proxy: ProxyHandle) -> None:
    """Tenant c (max_concurrency: 2): one stream per key fills it; either key's next
    request is a 429 naming the tenant; tenant b is not affected."""
    with held_stream(proxy, KEY_C1, "roomy"), held_stream(proxy, KEY_C2, "roomy"):
        assert proxy.metric("hybridgate_tenant_inflight_requests", tenant="c") == 2
        for key in (KEY_C1, KEY_C2):
            r = post(proxy, key, "roomy")
            assert r.status_code == 429 and r.headers["retry-after"] == "1"
            err = error_of(r)
            assert err["code"] == "concurrency_limit_exceeded"
            assert "tenant 'c'" in err["message"]
        assert post(proxy, KEY_B, "roomy").status_code == 200
    wait_for(
        lambda: proxy.metric("hybridgate_tenant_inflight_requests", tenant="c") == 0,
        "tenant c's streams to be released",
    )
    assert post(proxy, KEY_C1, "roomy").status_code == 200


def test_the_cap_is_released_once_on_every_way_out(proxy: ProxyHandle) -> None:
    """d-app (max_concurrency: 1, rpm: 1): counted while its request is in flight, and
    back to 0 after each way a request can end before reaching a backend."""

    def count() -> float:
        return proxy.metric("hybridgate_key_inflight_requests", key="d-app")

    def settled(what: str) -> None:
        wait_for(lambda: count() == 0, f"d-app's count to be 0 after {what}")

    with held_stream(proxy, KEY_D, "roomy"):  # its one request of the window
        assert count() == 1
        r = post(proxy, KEY_D, "fast")  # the cap comes first: the rpm is not charged
        assert r.status_code == 429 and error_of(r)["code"] == "concurrency_limit_exceeded"
    settled("a hang-up")
    r = post(proxy, KEY_D, "fast")  # rpm: 1 is spent: refused after the cap was taken
    assert r.status_code == 429 and error_of(r)["code"] == "rate_limit_exceeded"
    settled("a rate-limit refusal")
    assert post(proxy, KEY_D, "no-such-model").status_code == 404
    settled("an unknown model")


def test_the_cap_is_released_after_streams_errors_and_hang_ups(proxy: ProxyHandle) -> None:
    """a-app (max_concurrency: 2) through a whole stream, an upstream failure, a stream
    cut by its deadline and a client hang-up: its count is back to 0 each time, and
    exactly 2 fit again afterwards (a double release would let 3 in)."""

    def settled(what: str) -> None:
        wait_for(
            lambda: proxy.metric("hybridgate_key_inflight_requests", key="a-app") == 0,
            f"a-app's count to be 0 after {what}",
        )

    r = post(proxy, KEY_A, "fast", stream=True)
    assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]")
    settled("a whole stream")
    r = post(proxy, KEY_A, "broken")
    assert r.status_code == 503 and error_of(r)["code"] == "backend_unavailable"
    settled("an upstream failure")
    r = post(proxy, KEY_A, "short-stream", stream=True, max_tokens=LONG)
    assert r.status_code == 200 and "stream_timeout" in r.text
    settled("a stream deadline")
    with held_stream(proxy, KEY_A, "roomy"):
        pass
    settled("a hang-up")
    with held_stream(proxy, KEY_A, "roomy"), held_stream(proxy, KEY_A, "roomy"):
        assert post(proxy, KEY_A, "fast").status_code == 429


# ---------------------------------------------------------------- a stream's deadline


def test_a_stream_ends_at_its_deadline_with_an_error_event_and_is_metered_once(
    proxy: ProxyHandle, log: Path
) -> None:
    """models.short-stream.stream_timeout_s: 1 over a stream of minutes: the proxy ends
    it with an OpenAI-style error event (the SDK raises it), no [DONE], frees the
    backend, and meters once what was relayed."""
    before = proxy.metrics_text()
    client = openai.OpenAI(base_url=proxy.base_url, api_key=KEY_B, max_retries=0)
    stream = client.chat.completions.create(
        model="short-stream",
        messages=MSGS,  # type: ignore[arg-type]
        max_tokens=LONG,
        stream=True,
    )
    relayed = tokens = 0  # events relayed, and those of them with text
    with pytest.raises(openai.APIError) as exc:
        for chunk in stream:
            relayed += 1
            tokens += sum(1 for c in chunk.choices if c.delta.content)
    assert isinstance(exc.value.body, dict) and exc.value.body["code"] == "stream_timeout"
    assert "models.short-stream.stream_timeout_s" in exc.value.message
    assert 0 < tokens < LONG
    (ev,) = events_where(log, 1, alias="short-stream", tenant="b")
    assert ev["status"] == 200 and ev["outcome"] == "cut" and ev["estimated"]
    # Without the upstream's usage (it comes at the end), one token per event relayed.
    assert ev["completion_tokens"] == relayed
    assert [(a["backend"], a["reason"]) for a in ev["attempts"]] == [("roomy", "stream_timeout")]
    after = proxy.metrics_text()
    short = {"alias": "short-stream"}
    assert grew(before, after, "hybridgate_requests_total", **short) == 1
    assert grew(before, after, "hybridgate_requests_total", outcome="cut", **short) == 1
    assert metric_value(after, "hybridgate_inflight_requests", backend="roomy") == 0


# ---------------------------------------------------------------- with --workers


def test_caps_are_counted_per_worker_and_summed_by_the_hub(tmp_path: Path) -> None:
    """`serve --workers 2`: each worker counts its own requests; the hub's /metrics shows
    the sum (it showed 0 before the workers reported these gauges)."""
    with run_simulator(tmp_path, "api", args=["--ttft-ms", "0", "--itl-ms", "100"]) as sim:
        cfg = {
            "auth": {
                "keys": [{"key": KEY_A, "tenant": "a", "name": "a-app", "max_concurrency": 4}]
            },
            "tenants": {"a": {"max_concurrency": 4}},
            "backends": {"up": {"base_url": sim.base_url}},
            "models": {"roomy": {"targets": [{"backend": "up", "model": "gpt-4o-mini"}]}},
            "health_checks": {"enabled": False},
            "engine_metrics": {"enabled": False},
        }
        with run_proxy(tmp_path, cfg, args=["--workers", "2"]) as proxy:

            def summed(n: int) -> bool:
                text = proxy.metrics_text()
                return (
                    metric_value(text, "hybridgate_key_inflight_requests", key="a-app") == n
                    and metric_value(text, "hybridgate_tenant_inflight_requests", tenant="a") == n
                    and metric_value(text, "hybridgate_inflight_requests", backend="up") == n
                )

            with held_stream(proxy, KEY_A, "roomy"), held_stream(proxy, KEY_A, "roomy"):
                wait_for(lambda: summed(2), "the hub to show both workers' counts")
            wait_for(lambda: summed(0), "the counts to be back to 0")
