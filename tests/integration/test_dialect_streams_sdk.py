"""The stream translators against real upstream bytes and the official SDKs' own stream
machinery: the simulator's Anthropic SSE translated to OpenAI chunks and read by the
openai SDK's decoder and accumulator, and the simulator's OpenAI chunks translated to
Anthropic SSE and read by the anthropic SDK's; each equals the translation of the same
request's non-streamed answer, and the usage the translator exposes equals the books."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from anthropic._models import construct_type
from anthropic._streaming import SSEDecoder as AnthropicDecoder
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import RawMessageStreamEvent
from openai._streaming import SSEDecoder as OpenAIDecoder
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

from proxy.dialects import TokenUsage
from proxy.dialects.anthropic_response import (
    anthropic_to_openai_response,
    openai_to_anthropic_response,
)
from proxy.dialects.anthropic_stream import AnthropicToOpenAIStream, OpenAIToAnthropicStream
from tests.support.sim import SimHandle, run_simulator

USER = [{"role": "user", "content": "Say something about GPUs, please."}]
A_TOOLS = [
    {
        "name": "get_weather",
        "description": "Weather",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]
O_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather",
            "parameters": A_TOOLS[0]["input_schema"],
        },
    }
]
A_HEADERS = {"anthropic-version": "2023-06-01", "x-api-key": "k"}


@pytest.fixture(scope="module")
def anthropic_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimHandle]:
    args = [
        "--ttft-ms",
        "0",
        "--itl-ms",
        "0",
        "--cache-read-tokens",
        "4",
        "--cache-creation-tokens",
        "2",
    ]
    with run_simulator(tmp_path_factory.mktemp("a"), "anthropic", args=args) as sim:
        yield sim


@pytest.fixture(scope="module")
def api_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimHandle]:
    with run_simulator(
        tmp_path_factory.mktemp("o"), "api", args=["--ttft-ms", "0", "--itl-ms", "0"]
    ) as sim:
        yield sim


def pieces(raw: bytes, size: int) -> list[bytes]:
    return [raw[i : i + size] for i in range(0, len(raw), size)]


@pytest.mark.parametrize("tools", [None, A_TOOLS], ids=["text", "tool_use"])
def test_anthropic_upstream_stream_read_by_the_openai_sdk(
    anthropic_sim: SimHandle, tools: list[dict[str, Any]] | None
) -> None:
    body: dict[str, Any] = {"model": "claude-sim", "max_tokens": 50, "messages": USER}
    if tools:
        body["tools"] = tools
    with httpx.Client(timeout=10) as http:
        whole = http.post(f"{anthropic_sim.url}/v1/messages", json=body, headers=A_HEADERS)
        streamed = http.post(
            f"{anthropic_sim.url}/v1/messages", json={**body, "stream": True}, headers=A_HEADERS
        )
    assert whole.status_code == streamed.status_code == 200
    t = AnthropicToOpenAIStream(include_usage=True, created=1)
    out = [t.feed(p) for p in pieces(streamed.content, 7)] + [t.finish()]
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    done = False
    for sse in OpenAIDecoder().iter_bytes(iter(out)):
        if sse.data == "[DONE]":
            done = True
            continue
        state.handle_chunk(ChatCompletionChunk.model_validate(sse.json()))
    final = state.get_final_completion()
    want = anthropic_to_openai_response(whole.json(), created=1)
    assert done
    got_msg, want_msg = final.choices[0].message, want["choices"][0]["message"]
    assert (got_msg.content or None) == want_msg["content"]
    got_calls = [(c.function.name, c.function.arguments) for c in got_msg.tool_calls or ()]
    want_calls = [
        (c["function"]["name"], c["function"]["arguments"]) for c in want_msg.get("tool_calls", ())
    ]
    assert got_calls == want_calls and bool(got_calls) == bool(tools)
    assert final.choices[0].finish_reason == want["choices"][0]["finish_reason"]
    assert final.usage is not None
    assert final.usage.prompt_tokens == want["usage"]["prompt_tokens"]
    assert final.usage.completion_tokens == want["usage"]["completion_tokens"]
    assert final.usage.prompt_tokens_details.cached_tokens == 4
    rec = anthropic_sim.stats()["requests"][-1]
    assert t.usage == TokenUsage(
        input_tokens=rec["prompt_tokens"] - rec["cached_tokens"] - rec["cache_creation_tokens"],
        output_tokens=rec["completion_tokens"],
        cache_read_tokens=rec["cached_tokens"],
        cache_creation_tokens=rec["cache_creation_tokens"],
    )


@pytest.mark.parametrize("tools", [None, O_TOOLS], ids=["text", "tool_calls"])
def test_openai_upstream_stream_read_by_the_anthropic_sdk(
    api_sim: SimHandle, tools: list[dict[str, Any]] | None
) -> None:
    body: dict[str, Any] = {"model": "gpt-sim", "max_tokens": 12, "messages": USER}
    if tools:
        body["tools"] = tools
    with httpx.Client(timeout=10) as http:
        whole = http.post(f"{api_sim.base_url}/chat/completions", json=body)
        streamed = http.post(
            f"{api_sim.base_url}/chat/completions",
            json={**body, "stream": True, "stream_options": {"include_usage": True}},
        )
    assert whole.status_code == streamed.status_code == 200
    t = OpenAIToAnthropicStream()
    out = [t.feed(p) for p in pieces(streamed.content, 5)] + [t.finish()]
    snapshot = None
    json_bufs: dict[int, bytes] = {}
    kinds = []
    for sse in AnthropicDecoder().iter_bytes(iter(out)):
        assert sse.event == sse.json()["type"]  # the `event:` line names the data's type
        event = construct_type(type_=RawMessageStreamEvent, value=sse.json())
        kinds.append(event.type)
        if event.type != "ping":
            snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=json_bufs)
    assert kinds[:2] == ["message_start", "ping"] and kinds[-1] == "message_stop"
    want = openai_to_anthropic_response(whole.json())
    assert snapshot is not None
    got = snapshot.model_dump(exclude_none=True)
    assert [b["type"] for b in got["content"]] == [b["type"] for b in want["content"]]
    if tools:
        assert [(b["name"], b["input"]) for b in got["content"]] == [
            (b["name"], b["input"]) for b in want["content"]
        ]
    else:
        assert got["content"][0]["text"] == want["content"][0]["text"]
    assert got["stop_reason"] == want["stop_reason"]
    assert got["usage"]["input_tokens"] == want["usage"]["input_tokens"]
    assert got["usage"]["output_tokens"] == want["usage"]["output_tokens"] == 12
    rec = api_sim.stats()["requests"][-1]
    assert t.usage.prompt_tokens == rec["prompt_tokens"]
    assert t.usage.output_tokens == rec["completion_tokens"]
