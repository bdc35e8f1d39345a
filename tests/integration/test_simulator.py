"""The upstream simulator as clients meet it: the openai SDK and raw HTTP against a real server."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.exposition import sample_sum
from tests.support.servers import PYTHON, ManagedProcess, free_port, wait_http
from tests.support.sim import SimHandle, run_simulator

USER = [{"role": "user", "content": "Say something about GPUs, please."}]  # 34 chars: 9 tokens
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city"],
            },
        },
    }
]


@pytest.fixture(scope="module")
def vllm_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimHandle]:
    args = ["--speed", "10", "--max-model-len", "4096", "--model", "sim-model", "--model", "alt"]
    with run_simulator(tmp_path_factory.mktemp("vllm"), "vllm", args=args) as sim:
        yield sim


@pytest.fixture(scope="module")
def api_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimHandle]:
    args = ["--ttft-ms", "0", "--itl-ms", "0", "--model", "gpt-4o-mini"]
    with run_simulator(tmp_path_factory.mktemp("api"), "api", args=args) as sim:
        yield sim


@pytest.fixture
def sim(vllm_sim: SimHandle) -> Iterator[SimHandle]:
    """The shared vLLM simulator with fresh books and no faults."""
    vllm_sim.clear_faults()
    vllm_sim.reset()
    yield vllm_sim
    vllm_sim.clear_faults()


# One of each per server: building a client costs ~0.1 s (an SSL context), a lot on a busy box.
HTTP = httpx.Client(timeout=30.0)
_CLIENTS: dict[str, openai.OpenAI] = {}


def client(sim: SimHandle) -> openai.OpenAI:
    if sim.base_url not in _CLIENTS:
        _CLIENTS[sim.base_url] = openai.OpenAI(
            base_url=sim.base_url, api_key="none", max_retries=0, http_client=HTTP
        )
    return _CLIENTS[sim.base_url]


def aclient(sim: SimHandle) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=sim.base_url, api_key="none", max_retries=0)


def sse_events(text: str) -> list[str]:
    return [line[len("data: ") :] for line in text.split("\n\n") if line.startswith("data: ")]


def wait_until(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


# -- the openai SDK, vLLM mode ---------------------------------------------------------------


def test_sync_chat_usage_is_exact_and_gpu_time_is_reported(sim: SimHandle):
    raw = client(sim).chat.completions.with_raw_response.create(
        model="sim-model", messages=USER, max_tokens=7
    )
    resp = raw.parse()
    assert resp.id.startswith("chatcmpl-") and resp.object == "chat.completion"
    assert resp.model == "sim-model"
    assert resp.choices[0].message.content == "the quick brown fox jumps over a"
    assert resp.choices[0].finish_reason == "length"
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (9, 7)
    assert resp.usage.total_tokens == 16 and resp.usage.prompt_tokens_details is None
    gpu = float(raw.headers["x-sim-gpu-seconds"])
    [rec] = sim.stats()["requests"]
    assert rec["id"] == raw.headers["x-sim-request-id"]
    assert rec["gpu_seconds"] == gpu > 0
    assert (rec["prompt_tokens"], rec["completion_tokens"], rec["status"]) == (9, 7, 200)


def test_default_completion_length_finishes_with_stop(sim: SimHandle):
    resp = client(sim).chat.completions.create(model="alt", messages=USER)
    assert resp.usage.completion_tokens == 16 and resp.choices[0].finish_reason == "stop"


def test_sync_stream_has_no_usage_unless_asked(sim: SimHandle):
    chunks = list(
        client(sim).chat.completions.create(
            model="sim-model", messages=USER, max_tokens=5, stream=True
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.usage is None for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "the quick brown fox jumps"
    assert chunks[-1].choices[0].finish_reason == "length"


async def test_async_stream_with_include_usage(vllm_sim: SimHandle):
    vllm_sim.clear_faults()
    stream = await aclient(vllm_sim).chat.completions.create(
        model="sim-model",
        messages=USER,
        max_tokens=4,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    *body, last = chunks
    assert last.choices == [] and last.usage.completion_tokens == 4
    assert last.usage.prompt_tokens == 9
    assert all(c.usage is None for c in body) and len(body) == 1 + 4


async def test_async_non_stream_and_completions_and_embeddings(vllm_sim: SimHandle):
    c = aclient(vllm_sim)
    chat, comp, emb = await asyncio.gather(
        c.chat.completions.create(model="sim-model", messages=USER, max_tokens=3),
        c.completions.create(model="sim-model", prompt="Once upon a time", max_tokens=6),
        c.embeddings.create(model="sim-model", input=["hello", "world wide"]),
    )
    assert chat.usage.completion_tokens == 3
    assert comp.id.startswith("cmpl-") and comp.object == "text_completion"
    assert comp.choices[0].text == "the quick brown fox jumps over"
    assert (comp.usage.prompt_tokens, comp.usage.completion_tokens) == (4, 6)
    assert len(emb.data) == 2 and len(emb.data[0].embedding) == 32  # base64 by default
    assert emb.usage.prompt_tokens == 2 + 3
    assert emb.data[0].embedding != emb.data[1].embedding


def test_continuous_usage_stats_in_every_chunk(sim: SimHandle):
    chunks = list(
        client(sim).chat.completions.create(
            model="sim-model",
            messages=USER,
            max_tokens=3,
            stream=True,
            stream_options={"include_usage": True, "continuous_usage_stats": True},
        )
    )
    assert [c.usage.completion_tokens for c in chunks] == [0, 1, 2, 3, 3]
    assert chunks[-1].choices == []


def test_completions_stream_with_usage(sim: SimHandle):
    chunks = list(
        client(sim).completions.create(
            model="sim-model",
            prompt="abcdefgh",
            max_tokens=3,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "the quick brown"
    assert chunks[-1].usage.total_tokens == 2 + 3


def test_tool_calls_non_stream_and_stream(sim: SimHandle):
    c = client(sim)
    resp = c.chat.completions.create(model="sim-model", messages=USER, tools=TOOLS, max_tokens=6)
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.id.startswith("chatcmpl-tool-") and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "sim"}

    chunks = list(
        c.chat.completions.create(
            model="sim-model", messages=USER, tools=TOOLS, max_tokens=6, stream=True
        )
    )
    deltas = [d for ch in chunks for d in (ch.choices[0].delta.tool_calls or [])]
    assert deltas[0].function.name == "get_weather" and deltas[0].id
    assert json.loads("".join(d.function.arguments or "" for d in deltas)) == {"city": "sim"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"

    answered = [
        *USER,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    final = c.chat.completions.create(model="sim-model", messages=answered, tools=TOOLS)
    assert final.choices[0].message.content and not final.choices[0].message.tool_calls
    none = c.chat.completions.create(
        model="sim-model", messages=USER, tools=TOOLS, tool_choice="none"
    )
    assert none.choices[0].finish_reason == "stop"


def test_models_list_has_max_model_len(sim: SimHandle):
    body = HTTP.get(f"{sim.base_url}/models").json()
    assert body["object"] == "list"
    assert [(m["id"], m["max_model_len"]) for m in body["data"]] == [
        ("sim-model", 4096),
        ("alt", 4096),
    ]
    assert [m.id for m in client(sim).models.list()] == ["sim-model", "alt"]


# -- errors ---------------------------------------------------------------------------------


def test_context_length_error_is_vllms_400(sim: SimHandle):
    long = [{"role": "user", "content": "x" * 16400}]  # 4100 tokens > 4096
    with pytest.raises(openai.BadRequestError) as err:
        client(sim).chat.completions.create(model="sim-model", messages=long, max_tokens=200)
    assert err.value.status_code == 400
    body = err.value.response.json()
    assert body == {
        "error": {
            "message": "This model's maximum context length is 4096 tokens. However, your "
            "prompt contains at least 4097 input tokens, which exceeds this limit even without "
            "any output tokens. Please reduce the length of the input prompt. "
            "(parameter=input_tokens, value=4097)",
            "type": "BadRequestError",
            "param": "input_tokens",
            "code": 400,
        }
    }
    # A prompt that fits with a max_tokens that does not: run, cut to the window (vLLM 0.32).
    fits = [{"role": "user", "content": "x" * 16000}]
    r = client(sim).chat.completions.create(model="sim-model", messages=fits, max_tokens=200)
    assert r.usage.prompt_tokens + r.usage.completion_tokens == 4096
    assert r.choices[0].finish_reason == "length"


def test_unknown_model_and_malformed_json(sim: SimHandle):
    r = HTTP.post(f"{sim.base_url}/chat/completions", json={"model": "nope", "messages": USER})
    assert r.status_code == 404
    assert r.json()["error"]["message"] == (
        "The model `nope` does not exist. Valid aliases: sim-model, alt."
    )
    assert r.json()["error"]["param"] == "model"
    assert r.json()["error"]["code"] == 404
    bad = HTTP.post(f"{sim.base_url}/chat/completions", content=b"{not json")
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "BadRequestError"
    missing = HTTP.post(f"{sim.base_url}/chat/completions", json={"model": "sim-model"})
    assert missing.status_code == 400 and "messages" in missing.json()["error"]["message"]
    assert sim.stats()["responses_by_status"] == {"404": 1, "400": 2}


def test_flat_errors_flag(simulator):
    sim = simulator("vllm", ["--flat-errors", "--max-model-len", "100"])
    r = HTTP.post(
        f"{sim.base_url}/chat/completions",
        json={"model": "sim-model", "messages": [{"role": "user", "content": "y" * 440}]},
    )
    assert r.status_code == 400
    body = r.json()
    assert body["object"] == "error" and body["code"] == 400 and "error" not in body
    assert body["type"] == "BadRequestError" and "maximum context length is 100" in body["message"]
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        client(sim).chat.completions.create(
            model="sim-model", messages=[{"role": "user", "content": "y" * 440}]
        )


# -- fault knobs -----------------------------------------------------------------------------


def test_status_fault_for_next_n_requests_with_retry_after(sim: SimHandle):
    faults = sim.set_faults(status=503, count=2, retry_after=3)
    assert faults["status"] == 503 and faults["count"] == 2
    body = {"model": "sim-model", "messages": USER, "max_tokens": 2}
    rs = [HTTP.post(f"{sim.base_url}/chat/completions", json=body) for _ in range(3)]
    assert [r.status_code for r in rs] == [503, 503, 200]
    assert rs[0].headers["retry-after"] == "3"
    assert rs[0].json()["error"] == {
        "message": "Service unavailable (simulated fault)",
        "type": "ServiceUnavailableError",
        "param": None,
        "code": 503,
    }
    stats = sim.stats()
    assert stats["responses_by_status"] == {"503": 2, "200": 1}
    assert stats["requests_by_endpoint"]["/v1/chat/completions"] == 3
    assert [r["fault"] for r in stats["requests"]] == [True, True, False]
    assert len([e for e in stats["request_log"] if e["status"] == 503]) == 2
    assert sim.faults()["status"] is None


def test_probabilistic_fault_and_custom_type_and_shape(sim: SimHandle):
    sim.set_faults(status=429, probability=0.5, error_type="insufficient_quota",
                   error_code="insufficient_quota", error_shape="openai")  # fmt: skip
    codes = [
        HTTP.post(
            f"{sim.base_url}/embeddings", json={"model": "sim-model", "input": "hi"}
        ).status_code
        for _ in range(40)
    ]
    assert 5 < codes.count(429) < 35 and codes.count(200) == 40 - codes.count(429)
    sim.set_faults(probability=1.0)
    with pytest.raises(openai.RateLimitError) as err:
        client(sim).chat.completions.create(model="sim-model", messages=USER)
    assert err.value.code == "insufficient_quota"
    assert err.value.response.json()["error"]["type"] == "insufficient_quota"
    sim.set_faults(status=529, error_shape="anthropic", error_type=None, error_code=None)
    r = HTTP.post(f"{sim.base_url}/chat/completions", json={"model": "x", "messages": USER})
    assert r.status_code == 529
    assert r.json() == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }


def test_bad_fault_request_is_rejected(sim: SimHandle):
    r = HTTP.post(f"{sim.control_url}/sim/faults", json={"status": 503, "cnt": 1})
    assert r.status_code == 400 and "unknown fault keys: cnt" in r.json()["error"]
    assert sim.faults()["status"] is None


@pytest.mark.serial  # compares timings with the upstream's own: runs alone
def test_slow_first_token(sim: SimHandle):
    sim.set_faults(slow_first_token_s=1.0)
    start = time.monotonic()
    stream = client(sim).chat.completions.create(
        model="sim-model", messages=USER, max_tokens=2, stream=True
    )
    first = next(iter(stream))
    ttft = time.monotonic() - start
    assert first.choices[0].delta.role == "assistant"
    assert ttft >= 1.0
    list(stream)
    sim.clear_faults()
    start = time.monotonic()
    client(sim).chat.completions.create(model="sim-model", messages=USER, max_tokens=2)
    assert time.monotonic() - start < 0.7


def test_cut_stream_after_k_events(sim: SimHandle):
    sim.set_faults(cut_stream_after=3)
    body = {"model": "sim-model", "messages": USER, "max_tokens": 50, "stream": True}
    received = b""
    with (
        pytest.raises(httpx.RemoteProtocolError),
        HTTP.stream("POST", f"{sim.base_url}/chat/completions", json=body) as r,
    ):
        assert r.status_code == 200
        for part in r.iter_bytes():
            received += part
    events = sse_events(received.decode())
    assert len(events) == 3 and "[DONE]" not in events
    stats = wait_until(lambda: (s := sim.stats())["running"] == 0 and s)
    assert stats["cut"] == 1 and stats["cancelled"] == 0
    [rec] = stats["requests"]
    assert rec["cut"] and rec["completion_tokens"] < 50
    with pytest.raises(openai.APIConnectionError):
        list(client(sim).chat.completions.create(**body))


def test_health_503_knob(sim: SimHandle):
    ok = HTTP.get(f"{sim.url}/health")
    assert ok.status_code == 200 and ok.content == b""
    sim.set_faults(health_503=True)
    assert HTTP.get(f"{sim.url}/health").status_code == 503
    sim.clear_faults()
    assert HTTP.get(f"{sim.url}/health").status_code == 200


def test_refuse_connections_and_listen_again(sim: SimHandle):
    pooled = httpx.Client()
    assert pooled.get(f"{sim.url}/health").status_code == 200
    sim.set_faults(refuse_connections=True)
    # A new connection is refused (httpx.get: HTTP's pooled one to this simulator, from the
    # tests before, may be reset mid-request instead, a ReadError).
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{sim.url}/health")
    with pytest.raises(httpx.TransportError):  # the pooled keep-alive connection was closed
        pooled.get(f"{sim.url}/health")
    with pytest.raises(openai.APIConnectionError):
        client(sim).chat.completions.create(model="sim-model", messages=USER)
    assert sim.stats(detail=False)["mode"] == "vllm"  # the control port stays up
    sim.clear_faults()
    assert HTTP.get(f"{sim.url}/health").status_code == 200
    # A window long enough that a loaded machine still connects inside it (0.3 s was not:
    # one CI-like run under load connected after it had closed).
    sim.set_faults(refuse_connections=True, refuse_for_s=3.0)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{sim.url}/health")
    wait_until(lambda: sim.faults()["refuse_connections"] is False, timeout=15)
    assert HTTP.get(f"{sim.url}/health").status_code == 200
    pooled.close()


# -- the engine as a client sees it -----------------------------------------------------------


@pytest.mark.serial  # compares timings with the upstream's own: runs alone
async def test_queueing_beyond_max_num_seqs(simulator):
    sim = simulator("vllm", ["--max-num-seqs", "4", "--speed", "2"])
    c = aclient(sim)
    peak_waiting = 0.0
    done = asyncio.Event()

    async def scrape() -> None:
        nonlocal peak_waiting
        async with httpx.AsyncClient() as http:
            while not done.is_set():
                text = (await http.get(f"{sim.url}/metrics")).text
                waiting = sample_sum(text, "vllm:num_requests_waiting")
                peak_waiting = max(peak_waiting, waiting)
                assert sample_sum(text, "vllm:num_requests_running") <= 4
                await asyncio.sleep(0.01)

    async def one() -> float:
        start = time.monotonic()
        await c.chat.completions.create(model="sim-model", messages=USER, max_tokens=50)
        return time.monotonic() - start

    await one()  # warm the client up, then start from clean books
    sim.reset()
    scraper = asyncio.create_task(scrape())
    latencies = sorted(await asyncio.gather(*(one() for _ in range(16))))
    done.set()
    await scraper
    assert peak_waiting > 0
    # Client side: the slowest waited for earlier waves (generous: the machine may be busy).
    assert sum(latencies[-4:]) > 1.5 * sum(latencies[:4])
    # Server side, exact: four waves of four; a wave is >= 50 steps of 6.3 ms.
    stats = sim.stats()
    records = sorted(stats["requests"], key=lambda r: r["started"])
    assert len(records) == 16
    queued = [r["started"] - r["arrived"] for r in records]
    e2e = [r["finished"] - r["arrived"] for r in records]
    assert min(queued[-4:]) > 0.3 and min(queued[-4:]) > max(queued[:4])
    assert sum(e2e[-4:]) > 2 * sum(e2e[:4])
    assert math.isclose(
        math.fsum(r["gpu_seconds"] for r in records), stats["busy_seconds"], rel_tol=1e-9
    )


async def test_gpu_seconds_sum_to_busy_seconds_under_mixed_load(sim: SimHandle):
    c = aclient(sim)

    async def streamed(n: int) -> None:
        stream = await c.chat.completions.create(
            model="sim-model", messages=USER, max_tokens=n, stream=True
        )
        async for _ in stream:
            pass

    async def abandoned() -> None:
        async with (
            httpx.AsyncClient() as http,
            http.stream(
                "POST",
                f"{sim.base_url}/chat/completions",
                json={"model": "sim-model", "messages": USER, "max_tokens": 500, "stream": True},
            ) as r,
        ):
            async for _ in r.aiter_lines():
                break

    jobs = [
        c.chat.completions.create(model="alt", messages=USER, max_tokens=5 + i) for i in range(8)
    ]
    jobs += [streamed(3 + i) for i in range(5)]
    jobs += [c.embeddings.create(model="sim-model", input="x" * 40 * (i + 1)) for i in range(3)]
    jobs += [abandoned() for _ in range(2)]
    await asyncio.gather(*jobs)
    stats = await asyncio.to_thread(
        wait_until, lambda: (s := sim.stats())["running"] == 0 and s["waiting"] == 0 and s
    )
    assert len(stats["requests"]) == 18 and stats["cancelled"] == 2
    assert stats["busy_seconds"] > 0
    total = math.fsum(r["gpu_seconds"] for r in stats["requests"])
    assert total == pytest.approx(stats["busy_seconds"], rel=1e-9)
    assert stats["gpu_seconds_total"] == pytest.approx(stats["busy_seconds"], rel=1e-9)
    assert all(r["gpu_seconds"] > 0 for r in stats["requests"])


def test_client_disconnect_mid_stream_cancels_the_sequence(sim: SimHandle):
    body = {"model": "sim-model", "messages": USER, "max_tokens": 4000, "stream": True}
    with HTTP.stream("POST", f"{sim.base_url}/chat/completions", json=body) as r:
        rid = r.headers["x-sim-request-id"]
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")
    # leaving the block closed the connection mid-stream
    stats = wait_until(lambda: (s := sim.stats())["cancelled"] == 1 and s["running"] == 0 and s)
    [rec] = [r for r in stats["requests"] if r["id"] == rid]
    assert rec["cancelled"] and not rec["cut"] and rec["status"] == 200
    assert 0 < rec["completion_tokens"] < 4000 and rec["gpu_seconds"] > 0
    assert rec["gpu_seconds"] == pytest.approx(stats["busy_seconds"], rel=1e-9)
    assert 'finished_reason="abort"' in sim.metrics()


def test_reset_clears_the_books_and_request_log_proves_silence(sim: SimHandle):
    client(sim).chat.completions.create(model="sim-model", messages=USER, max_tokens=2)
    assert sim.stats()["requests_total"] == 1
    sim.reset()
    quiet_from = time.time()
    time.sleep(0.1)
    quiet_to = time.time()
    client(sim).chat.completions.create(model="sim-model", messages=USER, max_tokens=2)
    stats = sim.stats()
    assert stats["requests_total"] == 1 and len(stats["requests"]) == 1
    assert not [e for e in stats["request_log"] if quiet_from <= e["t"] <= quiet_to]
    assert stats["request_log"][0]["t"] > quiet_to


def test_metrics_counters_follow_traffic(sim: SimHandle):
    before = sim.metrics()
    client(sim).chat.completions.create(model="sim-model", messages=USER, max_tokens=4)

    after = sim.metrics()
    assert (
        sample_sum(after, "vllm:prompt_tokens_total")
        - sample_sum(before, "vllm:prompt_tokens_total")
        == 9
    )
    assert (
        sample_sum(after, "vllm:generation_tokens_total")
        - sample_sum(before, "vllm:generation_tokens_total")
        == 4
    )
    assert "vllm:kv_cache_usage_perc{" in after
    assert "vllm:e2e_request_latency_seconds_bucket{" in after
    assert "vllm:time_to_first_token_seconds_count{" in after


def test_old_metrics_and_prompt_tokens_details_flags(simulator):
    sim = simulator("vllm", ["--old-metrics", "--prompt-tokens-details", "--speed", "10"])
    text = HTTP.get(f"{sim.url}/metrics").text
    assert 'vllm:gpu_cache_usage_perc{model_name="sim-model"}' in text
    assert "vllm:kv_cache_usage_perc" not in text
    system = {"role": "system", "content": "You are terse. " * 20}  # 70 tokens
    c = client(sim)
    first = c.chat.completions.create(model="sim-model", messages=[system, *USER], max_tokens=1)
    second = c.chat.completions.create(
        model="sim-model", messages=[system, {"role": "user", "content": "again"}], max_tokens=1
    )
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    assert second.usage.prompt_tokens_details.cached_tokens == 64


# -- api mode ------------------------------------------------------------------------------------


def test_api_mode_shapes_and_headers(api_sim: SimHandle):
    api_sim.clear_faults()
    raw = client(api_sim).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=USER, max_tokens=3
    )
    resp = raw.parse()
    assert resp.id.startswith("chatcmpl-") and resp.system_fingerprint
    assert resp.usage.prompt_tokens_details.cached_tokens == 0
    assert raw.headers["x-request-id"] == raw.headers["x-sim-request-id"]
    assert int(raw.headers["x-ratelimit-limit-requests"]) >= int(
        raw.headers["x-ratelimit-remaining-requests"]
    )
    assert raw.headers["x-ratelimit-reset-requests"].endswith("s")
    chunks = list(
        client(api_sim).chat.completions.create(
            model="gpt-4o-mini",
            messages=USER,
            max_tokens=3,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert (
        chunks[-2].choices[0].finish_reason == "length"
        and chunks[-2].choices[0].delta.content is None
    )
    assert chunks[-1].usage.completion_tokens == 3
    with pytest.raises(openai.NotFoundError) as err:
        client(api_sim).chat.completions.create(model="gpt-5", messages=USER)
    assert err.value.code == "model_not_found"
    assert HTTP.get(f"{api_sim.url}/metrics").status_code == 404


def test_api_mode_errors_are_openai_shaped(api_sim: SimHandle):
    api_sim.set_faults(status=429, count=1, retry_after=2)
    with pytest.raises(openai.RateLimitError) as err:
        client(api_sim).chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert err.value.response.json()["error"]["type"] == "rate_limit_error"
    assert err.value.code == "rate_limit_exceeded"
    assert err.value.response.headers["retry-after"] == "2"
    api_sim.set_faults(status=500, count=1)
    r = HTTP.post(f"{api_sim.base_url}/chat/completions", json={"model": "m", "messages": USER})
    assert r.status_code == 500
    assert r.json()["error"]["type"] == "server_error" and r.json()["error"]["code"] is None
    assert r.headers["x-request-id"].startswith("req_")
    api_sim.clear_faults()


def test_api_mode_key_and_rate_limit(simulator):
    sim = simulator("api", ["--require-key", "sk-right", "--rpm-limit", "2", "--ttft-ms", "0"])
    wrong = openai.OpenAI(base_url=sim.base_url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        wrong.chat.completions.create(model="any", messages=USER)
    assert err.value.code == "invalid_api_key" and "sk-wrong" not in err.value.response.text
    right = openai.OpenAI(base_url=sim.base_url, api_key="sk-right", max_retries=0)
    ok = right.chat.completions.with_raw_response.create(model="any", messages=USER)
    assert ok.headers["x-ratelimit-remaining-requests"] == "1"
    right.chat.completions.create(model="any", messages=USER)
    with pytest.raises(openai.RateLimitError):
        right.chat.completions.create(model="any", messages=USER)


@pytest.mark.serial  # compares timings with the upstream's own: runs alone
def test_api_mode_latency_knobs(simulator):
    sim = simulator("api", ["--ttft-ms", "200", "--itl-ms", "20"])
    start = time.monotonic()
    stream = client(sim).chat.completions.create(
        model="m", messages=USER, max_tokens=6, stream=True
    )
    it = iter(stream)
    next(it)
    ttft = time.monotonic() - start
    list(it)
    total = time.monotonic() - start
    assert 0.2 <= ttft < 0.6
    # Five more tokens, 20 ms apart, after the first at 200 ms: the last leaves the simulator
    # ≥ 0.3 s after the request reached it, which is after `start`. (Not `total - ttft`: a
    # first chunk that reached this client late shrinks that gap: 0.0986 s seen once.)
    assert total >= 0.2 + 5 * 0.02


# -- process-level behaviour -------------------------------------------------------------------


def test_kill_and_restart_on_the_same_port(simulator):
    sim = simulator("vllm", ["--speed", "10"])
    client(sim).chat.completions.create(model="sim-model", messages=USER, max_tokens=1)
    port = sim.port
    sim.kill()
    with pytest.raises(httpx.ConnectError):
        HTTP.get(f"{sim.url}/health")
    sim.restart()
    assert sim.port == port and HTTP.get(f"{sim.url}/health").status_code == 200
    # fresh books: only the /health above (readiness is probed on /sim/*, never logged)
    assert sim.stats()["requests_total"] == 1


def test_hybridgate_sim_subcommand(tmp_path: Path):
    port = free_port()
    proc = ManagedProcess(
        [PYTHON, "-m", "proxy", "sim", "--mode", "api", "--port", str(port), "--ttft-ms", "0"],
        tmp_path / "cli.log",
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/v1/models", proc=proc.proc)
        r = HTTP.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={"model": "whatever", "messages": USER, "max_tokens": 2},
        )
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 2
    finally:
        proc.stop()
    assert "simulator (api) listening on" in (tmp_path / "cli.log").read_text()
