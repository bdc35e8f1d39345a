"""The proxy in front of a real engine (llama.cpp + Gemma 3 270M) on a rented GPU pool, with
the simulator in API mode as the commercial API.

Which assertion catches which fault:
- usage wrong (usage chunk lost, stripped wrongly, or counted twice): the client's usage and
  the proxy's token counters are compared with the engine's own /metrics deltas;
- GPU-second attribution wrong (shares not summing, time lost between events): per-request
  GPU-seconds from the request log must add up to the pool's busy GPU-seconds and cost,
  and busy time must agree with the engine's own requests_processing;
- failover wrong: every request must succeed while the engine is killed mid-load, the API
  simulator must have served the rest, and a too-long prompt must reach the larger window
  (or come back as the engine's own 400 when there is none).
"""

from __future__ import annotations

import json
import math
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
from tests.support.llama import LlamaServer, run_llama_server
from tests.support.proxy import ProxyHandle, parse_metrics, read_log, run_proxy
from tests.support.sim import SimHandle, run_simulator

# serial: a real engine is CPU-bound (it gains nothing from a second worker on 2 cores) and
# these tests compare throughput and busy time with the engine's own: scripts/test.sh runs
# them in its serial pass, alone.
pytestmark = [pytest.mark.e2e, pytest.mark.serial]

EXACT = {"ignore_eos": True}
USD_PER_GPU_HOUR = 1.2


def proxy_config(llama: LlamaServer, api: SimHandle, log: Path) -> dict[str, Any]:
    local = {"backend": "llama", "model": llama.model}
    remote = {"backend": "api", "model": "gpt-4o-mini"}
    return {
        "request_log": {"path": str(log)},
        "engine_metrics": {"interval_s": 0.25},
        "health_checks": {"interval_s": 0.5},
        "breaker": {"failure_threshold": 2, "cooldown_s": 30},
        "gpu_pools": {
            "cpu": {"gpus": 1, "billing": "rental", "usd_per_gpu_hour": USD_PER_GPU_HOUR}
        },
        "backends": {
            "llama": {
                "type": "openai",
                "base_url": llama.base_url,
                "pool": "cpu",
                "engine": "llamacpp",
                "max_concurrency": 8,
            },
            "api": {"type": "openai", "base_url": api.base_url},
        },
        "models": {
            "chat": {"targets": [local, remote], "compare_to": {"model": "gpt-4o-mini"}},
            "spill": {
                "strategy": "spillover",
                "spillover": {"max_inflight": 4},
                "targets": [local, remote],
            },
            "local-only": {"targets": [local]},
        },
    }


@pytest.fixture(scope="module")
def stack(
    llama_server: LlamaServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ProxyHandle, LlamaServer, SimHandle, Path]]:
    tmp = tmp_path_factory.mktemp("proxy-llama")
    log = tmp / "requests.jsonl"
    with (
        run_simulator(tmp, "api", args=["--ttft-ms", "0", "--itl-ms", "0"]) as api,
        run_proxy(tmp, proxy_config(llama_server, api, log)) as proxy,
    ):
        yield proxy, llama_server, api, log


def engine_tokens(llama: LlamaServer) -> tuple[float, float]:
    """(prompt, completion) as the engine counts them; prompt includes cache hits."""
    m = llama.metrics()
    return (
        m["llamacpp:prompt_tokens_total"] + m.get("llamacpp:prompt_tokens_cached_total", 0),
        m["llamacpp:tokens_predicted_total"],
    )


def proxy_tokens(proxy: ProxyHandle, backend: str) -> tuple[float, float]:
    return (
        proxy.metric("hybridgate_tokens_total", backend=backend, kind="prompt"),
        proxy.metric("hybridgate_tokens_total", backend=backend, kind="completion"),
    )


def api_chats(api: SimHandle) -> int:
    """Chat completions the API simulator answered (its health probes not counted)."""
    return api.stats(detail=False)["requests_by_endpoint"].get("/v1/chat/completions", 0)


def msgs(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_usage_at_the_client_equals_the_engine_counters(stack: Any) -> None:
    proxy, llama, _, _ = stack
    client = openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0)
    e0, p0 = engine_tokens(llama), proxy_tokens(proxy, "llama")
    seen = [0, 0]

    def add(u: Any) -> None:
        seen[0] += u.prompt_tokens
        seen[1] += u.completion_tokens

    r = client.chat.completions.create(
        model="chat", messages=msgs("Name a colour."), max_tokens=6, extra_body=EXACT
    )
    assert r.usage.completion_tokens == 6
    add(r.usage)
    chunks = list(
        client.chat.completions.create(
            model="chat",
            messages=msgs("Name a fruit."),
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
            extra_body=EXACT,
        )
    )
    usage = [c.usage for c in chunks if c.usage is not None]
    assert len(usage) == 1 and usage[0].completion_tokens == 5
    add(usage[0])
    plain = list(
        client.chat.completions.create(
            model="chat", messages=msgs("Name a tree."), max_tokens=4, stream=True, extra_body=EXACT
        )
    )
    assert all(c.usage is None for c in plain)  # asked upstream, stripped for the client
    e1, p1 = engine_tokens(llama), proxy_tokens(proxy, "llama")
    assert e1[1] - e0[1] == seen[1] + 4
    assert p1[1] - p0[1] == e1[1] - e0[1]
    assert p1[0] - p0[0] == e1[0] - e0[0]
    assert seen[0] > 0
    # The proxy's cross-check agrees: nothing reached the engine around the proxy.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        gaps = [
            proxy.metric("hybridgate_engine_unmetered_tokens", backend="llama", kind=k)
            for k in ("prompt", "completion")
        ]
        if "hybridgate_engine_unmetered_tokens{" in proxy.metrics_text() and gaps == [0, 0]:
            break
        time.sleep(0.2)
    assert gaps == [0, 0]


def test_tool_calls_pass_through(stack: Any) -> None:
    proxy, _, _, _ = stack
    client = openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0)
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather in a city",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    r = client.chat.completions.create(
        model="chat", messages=msgs("Weather in Paris?"), tools=tools, max_tokens=24, temperature=0
    )
    assert r.choices[0].finish_reason in ("stop", "length", "tool_calls")
    assert r.usage.completion_tokens > 0
    for call in r.choices[0].message.tool_calls or []:
        assert call.function.name == "get_weather"
        json.loads(call.function.arguments)


def test_gpu_seconds_balance_and_match_the_engine_busy_time(stack: Any) -> None:
    proxy, llama, _, log = stack
    # Every event metered so far in the log first (it is written a moment after each answer):
    # else the last one of an earlier test lands among this test's.
    n_before = len(read_log(log, int(proxy.metric("hybridgate_requests_total"))))
    busy0 = proxy.metric("hybridgate_gpu_busy_seconds_total", pool="cpu")
    cost0 = proxy.metric("hybridgate_cost_usd_total", backend="llama")
    # The engine's own view: requests_processing, every 50 ms.
    with sampled_gauge(f"{llama.url}/metrics", "llamacpp:requests_processing") as samples:
        t0 = time.monotonic()
        client = openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0)
        with ThreadPoolExecutor(6) as pool:
            list(
                pool.map(
                    lambda i: client.chat.completions.create(
                        model="local-only",
                        messages=msgs(f"Count to {i + 3}."),
                        max_tokens=6 + i,
                        extra_body=EXACT,
                    ),
                    range(6),
                )
            )
        wall = time.monotonic() - t0
        time.sleep(0.3)
    events = read_log(log, n_before + 6)[n_before:]
    assert len(events) == 6 and all(e["backend"] == "llama" for e in events)
    busy = proxy.metric("hybridgate_gpu_busy_seconds_total", pool="cpu") - busy0
    attributed = math.fsum(e["gpu_seconds"] for e in events)
    assert all(e["gpu_seconds"] > 0 for e in events)
    assert math.isclose(attributed, busy, rel_tol=1e-6)
    cost = proxy.metric("hybridgate_cost_usd_total", backend="llama") - cost0
    assert math.isclose(cost, busy * USD_PER_GPU_HOUR / 3600, rel_tol=1e-6)
    engine_busy = busy_seconds(samples, wall)
    print(
        f"\nbusy: proxy {busy:.2f} s, engine (requests_processing > 0) ~{engine_busy:.2f} s "
        f"of {wall:.2f} s wall"
    )
    assert busy <= wall + 0.05
    assert abs(busy - engine_busy) <= 0.25 * wall + 0.5


def test_spillover_to_the_api_when_the_slots_are_full(stack: Any) -> None:
    proxy, _, api, _ = stack
    api_before = api_chats(api)
    client = openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0)

    def one(i: int) -> str:
        r = client.chat.completions.with_raw_response.create(
            model="spill", messages=msgs(f"Say {i}."), max_tokens=12, extra_body=EXACT
        )
        return r.headers["x-hybridgate-backend"]

    with ThreadPoolExecutor(8) as pool:
        served = list(pool.map(one, range(8)))
    to_api = served.count("api")
    assert served.count("llama") + to_api == 8
    assert 1 <= to_api <= 7
    assert api_chats(api) - api_before == to_api


def test_too_long_prompt_goes_to_the_larger_window_or_gets_the_engine_400(stack: Any) -> None:
    proxy, llama, api, _ = stack
    long_text = "word " * (llama.ctx_per_slot + 200)
    api_before = api_chats(api)
    r = httpx.post(
        f"{proxy.base_url}/chat/completions",
        timeout=60,
        json={"model": "chat", "messages": msgs(long_text), "max_tokens": 4},
    )
    assert r.status_code == 200
    assert r.headers["x-hybridgate-backend"] == "api"
    assert api_chats(api) == api_before + 1
    r = httpx.post(
        f"{proxy.base_url}/chat/completions",
        timeout=60,
        json={"model": "local-only", "messages": msgs(long_text), "max_tokens": 4},
    )
    assert r.status_code == 400
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert "context" in err["message"]


def test_engine_killed_mid_load_requests_complete_on_the_api(
    llama_engine: dict[str, str], tmp_path: Path
) -> None:
    log = tmp_path / "requests.jsonl"
    with (
        run_llama_server(tmp_path) as llama,
        run_simulator(tmp_path, "api", args=["--ttft-ms", "0", "--itl-ms", "0"]) as api,
        run_proxy(tmp_path, proxy_config(llama, api, log)) as proxy,
    ):
        client = openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0)
        done = threading.Event()

        def one(i: int) -> str:
            r = client.chat.completions.with_raw_response.create(
                model="chat", messages=msgs(f"Tell me about {i}."), max_tokens=16, extra_body=EXACT
            )
            done.set()
            return r.headers["x-hybridgate-backend"]

        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(one, i) for i in range(12)]
            assert done.wait(120)
            llama.kill()
            served = [f.result(timeout=120) for f in futures]
        assert len(served) == 12
        assert served.count("api") >= 1
        assert api_chats(api) == served.count("api")
        assert proxy.metric("hybridgate_requests_total", alias="chat", outcome="success") == 12
        assert proxy.metric("hybridgate_failovers_total", from_backend="llama") >= 1
        samples = parse_metrics(proxy.metrics_text())
        assert (
            any(
                n == "hybridgate_backend_up" and lab.get("backend") == "llama" and v == 0
                for n, lab, v in samples
            )
            or proxy.metric("hybridgate_breaker_open", backend="llama") == 1
        )


def prompt_of(usage: Any) -> int:
    """Anthropic counts a prompt's cache reads and writes apart from `input_tokens`."""
    cached = (usage.cache_read_input_tokens or 0) + (usage.cache_creation_input_tokens or 0)
    return int(usage.input_tokens) + cached


def test_anthropic_sdk_served_by_the_real_engine_through_translation(stack: Any) -> None:
    """An Anthropic client on an OpenAI-only engine: the request translated to chat, the
    answer (JSON and stream, event by event) back to Messages; the usage the SDK sees is
    the engine's own counters' growth, and the books say the same."""
    import anthropic

    proxy, llama, _, _ = stack
    client = anthropic.Anthropic(base_url=proxy.url, api_key="x", max_retries=0, timeout=60)
    e0, p0 = engine_tokens(llama), proxy_tokens(proxy, "llama")
    msg = client.messages.create(
        model="local-only", max_tokens=8, messages=[{"role": "user", "content": "Say hi."}]
    )
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.stop_reason in ("end_turn", "max_tokens")
    assert msg.content and msg.content[0].type == "text"
    seen_in, seen_out = prompt_of(msg.usage), msg.usage.output_tokens
    with client.messages.stream(
        model="local-only", max_tokens=8, messages=[{"role": "user", "content": "Count: 1, 2,"}]
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_delta" in kinds and "message_delta" in kinds
    seen_in += prompt_of(final.usage)
    seen_out += final.usage.output_tokens
    assert seen_out > 0
    e1 = engine_tokens(llama)
    assert (seen_in, seen_out) == (e1[0] - e0[0], e1[1] - e0[1])
    wait_books = time.monotonic() + 10
    while proxy_tokens(proxy, "llama") != (p0[0] + seen_in, p0[1] + seen_out):
        assert time.monotonic() < wait_books, "the proxy's token counters never caught up"
        time.sleep(0.1)


WEATHER = {
    "name": "get_weather",
    "description": "Current weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo"]}},
        "required": ["city"],
    },
}


def test_anthropic_tools_round_trip_and_count_tokens_on_the_real_engine(stack: Any) -> None:
    """Anthropic tools on an OpenAI-only engine: the forced call comes back as a tool_use
    block (translated from llama.cpp's tool_calls), its tool_result goes back as a tool
    message and is accepted; count_tokens is answered by the proxy's own estimate."""
    import anthropic

    proxy, _, _, _ = stack
    client = anthropic.Anthropic(base_url=proxy.url, api_key="x", max_retries=0, timeout=60)
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    call = client.messages.create(
        model="local-only",
        max_tokens=40,
        extra_body={"temperature": 0},  # (this SDK release has no temperature argument)
        messages=ask,
        tools=[WEATHER],
        # Parallel calls allowed: this engine then adds a second call cut off by max_tokens
        # (arguments "{"), which the translation leaves out (it was a 502 before).
        tool_choice={"type": "any"},
    )
    # This small model may keep generating after its call until max_tokens (finish_reason
    # "length" from the engine, "max_tokens" here); the call is whole either way.
    assert call.stop_reason in ("tool_use", "max_tokens")
    uses = [b for b in call.content if b.type == "tool_use"]
    assert len(uses) == 1 and uses[0].name == "get_weather" and uses[0].id
    assert isinstance(uses[0].input, dict)
    answer = client.messages.create(
        model="local-only",
        max_tokens=8,
        messages=[
            *ask,
            {"role": "assistant", "content": [b.model_dump() for b in uses]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": uses[0].id, "content": "3 C, snow"}
                ],
            },
        ],
        tools=[WEATHER],
    )
    assert answer.type == "message" and answer.usage.output_tokens > 0
    counted = client.messages.count_tokens(model="local-only", messages=ask)
    assert counted.input_tokens > 0
