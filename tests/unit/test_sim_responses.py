"""Body shapes: vLLM's and OpenAI's, errors included."""

from __future__ import annotations

import base64
import struct

import orjson
import pytest

from simulator.config import SimConfig
from simulator.parse import RequestError, parse_chat, parse_completion, parse_embedding
from simulator.responses import (
    OpenAIDialect,
    Reply,
    ToolCall,
    VllmDialect,
    anthropic_error,
    embedding,
    tool_arguments,
)


def reply(**kw) -> Reply:
    base = dict(kind="chat", id="chatcmpl-x", model="m", prompt_tokens=7, max_tokens=3)
    base.update(kw)
    return Reply(**base)


def test_vllm_chat_body_and_usage():
    body = VllmDialect().chat_completion(reply(), 3)
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "the quick brown"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"] == {
        "prompt_tokens": 7, "total_tokens": 10, "completion_tokens": 3,
        "prompt_tokens_details": None, "completion_tokens_details": None,
    }  # fmt: skip
    detailed = VllmDialect(token_details=True).usage(reply(cached_tokens=16), 3)
    assert detailed["prompt_tokens_details"] == {"cached_tokens": 16}


def test_vllm_stream_usage_only_when_asked_and_continuous_needs_include_usage():
    d = VllmDialect()
    plain = reply()
    assert all("usage" not in c for c in d.stream_head(plain) + d.stream_token(plain, 0))
    assert d.stream_tail(plain, 3) == []
    asked = reply(include_usage=True)
    [usage_chunk] = d.stream_tail(asked, 3)
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] == 3
    assert "usage" not in d.stream_token(asked, 0)[0]
    continuous = reply(include_usage=True, continuous_usage=True)
    assert d.stream_token(continuous, 1)[0]["usage"]["completion_tokens"] == 2
    assert "usage" not in d.stream_token(reply(continuous_usage=True), 1)[0]
    last = d.stream_token(plain, 2)[0]["choices"][0]
    assert last["finish_reason"] == "length" and last["stop_reason"] is None


def test_tool_call_arguments_stream_in_pieces_that_rebuild_the_json():
    args = tool_arguments(
        {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
         "required": ["city", "days"]}
    )  # fmt: skip
    assert orjson.loads(args) == {"city": "sim", "days": 1}
    r = reply(
        max_tokens=4, tool_call=ToolCall("call_1", "get_weather", args), finish_reason="tool_calls"
    )
    deltas = [VllmDialect().stream_token(r, i)[0]["choices"][0]["delta"] for i in range(4)]
    assert deltas[0]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert "".join(d["tool_calls"][0]["function"]["arguments"] for d in deltas) == args


def test_error_shapes():
    nested = VllmDialect().error(400, "bad")
    assert nested == {
        "error": {"message": "bad", "type": "BadRequestError", "param": None, "code": 400}
    }
    flat = VllmDialect(flat_errors=True).error(503, "down")
    assert flat["object"] == "error" and flat["code"] == 503 and "error" not in flat
    oa = OpenAIDialect().error(429, "slow down")
    assert (
        oa["error"]["type"] == "rate_limit_error" and oa["error"]["code"] == "rate_limit_exceeded"
    )
    quota = OpenAIDialect().error(429, "q", "insufficient_quota", "insufficient_quota")
    assert quota["error"]["code"] == "insufficient_quota"
    assert anthropic_error(529, None, None) == {
        "type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"},
    }  # fmt: skip


def test_openai_stream_has_separate_finish_chunk_and_null_usage_when_asked():
    d = OpenAIDialect()
    r = reply(include_usage=True)
    token = d.stream_token(r, 0)[0]
    assert token["usage"] is None and token["choices"][0]["finish_reason"] is None
    finish, usage = d.stream_tail(r, 3)
    assert finish["choices"][0]["finish_reason"] == "length"
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] == 10


def test_embedding_base64_matches_floats():
    floats = embedding("hello", 8, b64=False)
    packed = base64.b64decode(embedding("hello", 8, b64=True))
    assert list(struct.unpack("<8f", packed)) == pytest.approx(floats, rel=1e-6)
    assert sum(v * v for v in floats) == pytest.approx(1.0, rel=1e-6)


def test_context_length_rules_are_vllm_0_32s():
    """vLLM 0.32: max_tokens over the window is refused, a prompt over it too (quoted as
    window + 1: vLLM stops tokenizing there), a prompt that fills it leaves 0 tokens, and a
    prompt that fits with too many max_tokens runs with max_tokens cut to what is left."""
    cfg = SimConfig(max_model_len=100)

    def chat(content: str, max_tokens: int | None) -> dict:
        body = {"model": "m", "messages": [{"role": "user", "content": content}]}
        return body if max_tokens is None else {**body, "max_tokens": max_tokens}

    job = parse_chat(chat("x" * 360, 20), cfg)  # 90 + 20 > 100: cut to 10
    assert (job.prompt_tokens, job.max_tokens, job.explicit_max) == (90, 10, True)
    with pytest.raises(RequestError) as err:
        parse_chat(chat("x" * 440, 4), cfg)  # 110 prompt tokens > 100
    assert (err.value.status, err.value.param) == (400, "input_tokens")
    assert str(err.value) == (
        "This model's maximum context length is 100 tokens. However, your prompt contains at "
        "least 101 input tokens, which exceeds this limit even without any output tokens. "
        "Please reduce the length of the input prompt. (parameter=input_tokens, value=101)"
    )
    with pytest.raises(RequestError) as err:
        parse_chat(chat("hi", 101), cfg)
    assert err.value.param == "max_tokens"
    assert str(err.value).startswith("max_tokens=101 cannot be greater than max_model_len=100.")
    with pytest.raises(RequestError, match="max_tokens must be at least 1, got 0"):
        parse_completion({"model": "m", "prompt": [7] * 100}, cfg)
    api = SimConfig(mode="api", max_model_len=100)
    with pytest.raises(RequestError) as err:
        parse_chat(chat("x" * 360, 20), api)
    assert err.value.code == "context_length_exceeded"


def test_parse_rules():
    cfg = SimConfig(default_max_tokens=16)
    job = parse_chat({"model": "m", "messages": [{"role": "user", "content": "hi"}]}, cfg)
    assert (job.prompt_tokens, job.max_tokens, job.explicit_max) == (1, 16, False)
    job = parse_chat(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 4,
         "stream": True, "stream_options": {"include_usage": True}}, cfg,
    )  # fmt: skip
    assert job.max_tokens == 4 and job.include_usage and not job.continuous_usage
    with pytest.raises(RequestError, match="only be defined when"):
        parse_chat({"model": "m", "messages": [{"role": "user", "content": "x"}],
                    "stream_options": {"include_usage": True}}, cfg)  # fmt: skip
    batch = parse_completion({"model": "m", "prompt": ["abcd", "abcdefgh"], "max_tokens": 2}, cfg)
    assert (batch.prompt_tokens, batch.n) == (3, 2)
    emb = parse_embedding({"model": "m", "input": ["abcd", [1, 2, 3]]}, cfg)
    assert emb.prompt_tokens == 4 and emb.max_tokens == 0


def test_tool_choice_rules():
    tools = [{"type": "function", "function": {"name": "a", "parameters": {}}},
             {"type": "function", "function": {"name": "b", "parameters": {}}}]  # fmt: skip
    user = [{"role": "user", "content": "do it"}]
    cfg = SimConfig()

    def pick(messages, **kw):
        return parse_chat({"model": "m", "messages": messages, "tools": tools, **kw}, cfg).tool

    assert pick(user)[0] == "a"
    assert pick(user, tool_choice="none") is None
    assert pick(user, tool_choice={"type": "function", "function": {"name": "b"}})[0] == "b"
    after_tool = [*user, {"role": "tool", "tool_call_id": "1", "content": "42"}]
    assert pick(after_tool) is None  # the tool answered: reply in text
    assert pick(after_tool, tool_choice="required")[0] == "a"
    assert parse_chat({"model": "m", "messages": user}, cfg).tool is None
