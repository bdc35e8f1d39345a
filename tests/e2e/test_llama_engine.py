"""Smoke tests straight against a real llama-server (Gemma 3 270M), with the official openai SDK.

They pin down the engine facts the proxy relies on: usage in responses and the usage chunk,
usage equal to the engine's own /metrics counters, exact completion counts with ignore_eos, the
400 for a too-long prompt, tool requests accepted, embeddings refused. The model's text is
rambling: assert on structure and counts, never on content.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.llama import ENGINE_SCRIPT, LlamaServer, run_llama_server

# serial: a real engine is CPU-bound (it gains nothing from a second worker on 2 cores) and
# these tests compare throughput and busy time with the engine's own: scripts/test.sh runs
# them in its serial pass, alone.
pytestmark = [pytest.mark.e2e, pytest.mark.serial]

PROMPT_PROCESSED = "llamacpp:prompt_tokens_total"  # excludes tokens reused from the prompt cache
PROMPT_CACHED = "llamacpp:prompt_tokens_cached_total"
PREDICTED = "llamacpp:tokens_predicted_total"
EXACT = {"ignore_eos": True}  # generate exactly max_tokens: counts become exact expectations

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo"]}},
            "required": ["city"],
        },
    },
}


@pytest.fixture
def client(llama_server: LlamaServer) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=llama_server.base_url, api_key="unused", max_retries=0, timeout=60
    )


def deltas(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    return {k: int(after[k] - before[k]) for k in (PROMPT_PROCESSED, PROMPT_CACHED, PREDICTED)}


def engine_counts(prompt_tokens: int, cached: int, completion_tokens: int) -> dict[str, int]:
    """What /metrics must have counted for these usage figures."""
    return {
        PROMPT_PROCESSED: prompt_tokens - cached,
        PROMPT_CACHED: cached,
        PREDICTED: completion_tokens,
    }


def test_metrics_page_has_the_counters_we_meter_on(llama_server: LlamaServer) -> None:
    names = set(llama_server.metrics())
    for name in (
        PROMPT_PROCESSED,
        PROMPT_CACHED,
        PREDICTED,
        "llamacpp:requests_processing",
        "llamacpp:requests_deferred",
        "llamacpp:n_decode_total",
    ):
        assert name in names


def test_models_lists_the_alias(client: openai.OpenAI, llama_server: LlamaServer) -> None:
    assert [m.id for m in client.models.list().data] == [llama_server.model]


def test_template_folds_system_into_first_user_turn(llama_server: LlamaServer) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    r = httpx.post(f"{llama_server.url}/apply-template", json={"messages": messages}, timeout=10)
    r.raise_for_status()
    assert r.json()["prompt"] == (
        "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
    )


def test_chat_non_streaming_usage_matches_engine_metrics(
    client: openai.OpenAI, llama_server: LlamaServer
) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Name three rivers in Europe."},
    ]
    counted = httpx.post(
        f"{llama_server.base_url}/chat/completions/input_tokens",
        json={"model": llama_server.model, "messages": messages},
        timeout=10,
    )
    counted.raise_for_status()
    before = llama_server.metrics()
    r = client.chat.completions.create(
        model=llama_server.model, messages=messages, max_tokens=12, extra_body=EXACT
    )
    after = llama_server.metrics()

    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert isinstance(r.choices[0].message.content, str)
    assert r.choices[0].finish_reason == "length"
    u = r.usage
    assert u is not None
    assert u.completion_tokens == 12
    assert u.prompt_tokens == counted.json()["input_tokens"]
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    cached = u.prompt_tokens_details.cached_tokens if u.prompt_tokens_details else 0
    assert deltas(before, after) == engine_counts(u.prompt_tokens, cached or 0, 12)


def test_chat_streaming_with_include_usage(
    client: openai.OpenAI, llama_server: LlamaServer
) -> None:
    before = llama_server.metrics()
    stream = client.chat.completions.create(
        model=llama_server.model,
        messages=[{"role": "user", "content": "Count to ten."}],
        max_tokens=10,
        stream=True,
        stream_options={"include_usage": True},
        extra_body=EXACT,
    )
    chunks = list(stream)
    after = llama_server.metrics()

    *content_chunks, usage_chunk = chunks
    assert usage_chunk.choices == []  # OpenAI's shape: a final chunk with usage and no choices
    assert usage_chunk.usage is not None
    assert all(c.usage is None for c in content_chunks)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert content_chunks[-1].choices[0].finish_reason == "length"
    text = "".join(c.choices[0].delta.content or "" for c in content_chunks)
    assert text
    u = usage_chunk.usage
    assert u.completion_tokens == 10
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    cached = u.prompt_tokens_details.cached_tokens if u.prompt_tokens_details else 0
    assert deltas(before, after) == engine_counts(u.prompt_tokens, cached or 0, 10)


def test_chat_streaming_without_include_usage_sends_no_usage(
    client: openai.OpenAI, llama_server: LlamaServer
) -> None:
    before = llama_server.metrics()
    chunks = list(
        client.chat.completions.create(
            model=llama_server.model,
            messages=[{"role": "user", "content": "Say hello."}],
            max_tokens=6,
            stream=True,
            extra_body=EXACT,
        )
    )
    after = llama_server.metrics()
    assert chunks
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "length"
    assert deltas(before, after)[PREDICTED] == 6  # the engine counts what the client cannot see


def test_concurrent_requests_usage_sums_to_engine_metrics(
    client: openai.OpenAI, llama_server: LlamaServer
) -> None:
    def one(i: int) -> openai.types.CompletionUsage:
        stream = client.chat.completions.create(
            model=llama_server.model,
            messages=[{"role": "user", "content": f"Tell story number {i} about a cat."}],
            max_tokens=8 + i,
            stream=True,
            stream_options={"include_usage": True},
            extra_body=EXACT,
        )
        usage = [c.usage for c in stream if c.usage is not None]
        assert len(usage) == 1
        return usage[0]

    before = llama_server.metrics()
    with ThreadPoolExecutor(max_workers=llama_server.slots) as pool:
        usages = list(pool.map(one, range(llama_server.slots)))
    after = llama_server.metrics()

    assert [u.completion_tokens for u in usages] == [8 + i for i in range(llama_server.slots)]
    prompt = sum(u.prompt_tokens for u in usages)
    cached = sum(
        (u.prompt_tokens_details.cached_tokens or 0) if u.prompt_tokens_details else 0
        for u in usages
    )
    completion = sum(u.completion_tokens for u in usages)
    assert deltas(before, after) == engine_counts(prompt, cached, completion)
    assert after["llamacpp:requests_processing"] == 0


@pytest.mark.parametrize("stream", [False, True])
def test_too_long_prompt_is_a_400_exceed_context_size(
    client: openai.OpenAI, llama_server: LlamaServer, stream: bool
) -> None:
    long_text = "alpha beta gamma delta " * llama_server.ctx_per_slot  # ~4 tokens per repeat
    before = llama_server.metrics()
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=llama_server.model,
            max_tokens=4,
            stream=stream,
            messages=[{"role": "user", "content": long_text}],
        )
    after = llama_server.metrics()

    assert info.value.status_code == 400
    error = info.value.response.json()["error"]
    assert error["type"] == "exceed_context_size_error"
    assert error["code"] == 400
    assert error["n_ctx"] == llama_server.ctx_per_slot
    assert error["n_prompt_tokens"] > llama_server.ctx_per_slot
    assert "context" in error["message"]
    assert deltas(before, after) == engine_counts(0, 0, 0)  # refused before any work


@pytest.mark.parametrize("tool_choice", ["auto", "required"])
def test_tool_request_is_accepted(
    client: openai.OpenAI, llama_server: LlamaServer, tool_choice: str
) -> None:
    r = client.chat.completions.create(
        model=llama_server.model,
        messages=[{"role": "user", "content": "Is it snowing in Oslo?"}],
        tools=[WEATHER_TOOL],
        tool_choice=tool_choice,
        max_tokens=16,
    )
    choice = r.choices[0]
    # finish_reason stays "length" when max_tokens ends it, tool calls or not
    assert choice.finish_reason in ("stop", "length", "tool_calls")
    for call in choice.message.tool_calls or []:
        assert call.type == "function" and call.function.name == "get_weather" and call.id
    assert r.usage is not None and r.usage.completion_tokens <= 16


def test_tool_call_is_parsed_into_tool_calls(
    client: openai.OpenAI, llama_server: LlamaServer
) -> None:
    """Greedy decoding of a pinned model and build: the call below is what it produces. The
    template's <tool_call> shape is what llama.cpp's parser turns into `tool_calls`."""
    r = client.chat.completions.create(
        model=llama_server.model,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER_TOOL],
        tool_choice="required",
        parallel_tool_calls=False,
        temperature=0,
        max_tokens=40,
        extra_body={"cache_prompt": False},  # same numerics every time: no reused KV cache
    )
    calls = r.choices[0].message.tool_calls
    assert calls is not None and len(calls) == 1
    assert calls[0].type == "function" and calls[0].id
    assert calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}


def test_tool_conversation_round_trip_is_accepted(
    client: openai.OpenAI, llama_server: LlamaServer
) -> None:
    messages = [
        {"role": "system", "content": "You answer weather questions."},
        {"role": "user", "content": "What is the weather in Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 3, "sky": "snow"}'},
    ]
    r = client.chat.completions.create(
        model=llama_server.model, messages=messages, tools=[WEATHER_TOOL], max_tokens=8
    )
    assert r.choices[0].finish_reason in ("stop", "length", "tool_calls")
    assert r.usage is not None and r.usage.prompt_tokens > 0
    rendered = httpx.post(
        f"{llama_server.url}/apply-template",
        json={"messages": messages, "tools": [WEATHER_TOOL]},
        timeout=10,
    )
    rendered.raise_for_status()
    prompt = rendered.json()["prompt"]
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>' in (
        prompt
    )
    assert "<tool_response>" in prompt
    assert prompt.endswith("<start_of_turn>model\n")


def test_embeddings_are_refused_with_501(llama_server: LlamaServer) -> None:
    r = httpx.post(
        f"{llama_server.base_url}/embeddings",
        json={"model": llama_server.model, "input": "hello"},
        timeout=10,
    )
    assert r.status_code == 501
    assert r.json()["error"]["type"] == "not_supported_error"


def test_run_llama_server_slots_and_kill(llama_engine: dict[str, str], tmp_path: Path) -> None:
    with run_llama_server(tmp_path, slots=2, ctx=2048) as server:
        props = httpx.get(f"{server.url}/props", timeout=10).json()
        assert props["total_slots"] == 2
        assert props["default_generation_settings"]["n_ctx"] == 1024
        server.kill()
        assert not server.process.alive()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{server.url}/health", timeout=2)


def test_engine_script_start_status_stop(llama_engine: dict[str, str]) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(ENGINE_SCRIPT), *args], capture_output=True, text=True, timeout=90
        )

    started = run("start", "--slots", "1", "--ctx", "1024", "--threads", "1", "--json")
    assert started.returncode == 0, started.stderr
    state = json.loads(started.stdout.strip().splitlines()[-1])
    try:
        assert httpx.get(f"{state['url']}/health", timeout=5).status_code == 200
        status = run("status")
        assert status.returncode == 0
        assert state["base_url"] in status.stdout
    finally:
        stopped = run("stop", "--port", str(state["port"]))
    assert stopped.returncode == 0, stopped.stderr
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{state['url']}/health", timeout=2)
