"""Responses API requests as chat requests: every field mapped, dropped or refused by name,
items as messages (round trip by property), history replayed, built-in tools refused, and
the chain to Anthropic naming the client's fields."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.config import Backend as BackendConfig
from proxy.dialects import Dialect, TranslationError
from proxy.dialects.responses_request import (
    _NEUTRAL_RESPONSES,
    BUILTIN_TOOLS,
    RESPONSES_DROPPED,
    RESPONSES_MAPPED,
    input_items,
    responses_to_chat,
)
from proxy.dialects.responses_response import chat_to_response, response_echo
from proxy.request.dialect import (
    RESPONSES_TO_ANTHROPIC,
    RESPONSES_TO_CHAT,
    ResponsesTranslation,
    translation_for,
)
from tests.support.dialects import (
    chat_to_responses_request,
    normal_chat_from_responses,
    openai_completion,
    openai_request,
)

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KNOWN = RESPONSES_MAPPED | RESPONSES_DROPPED | set(_NEUTRAL_RESPONSES)
any_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def base(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "input": "hi", **extra}


@SETTINGS
@given(openai_request())
def test_chat_said_in_responses_comes_back_the_same(chat: dict[str, Any]) -> None:
    got = responses_to_chat(chat_to_responses_request(chat))
    assert got == normal_chat_from_responses(chat)


@SETTINGS
@given(openai_completion(), st.text(max_size=10))
def test_a_stored_answer_replays_as_the_assistant_turn(chat: dict[str, Any], nxt: str) -> None:
    """The output items of one turn, as the history of the next, are the assistant's
    message (text and calls) the chat answer had."""
    resp = chat_to_response(chat, "resp_1", 1, response_echo(base()))
    history = [{"role": "user", "content": "first"}, *resp["output"]]
    got = responses_to_chat(base(input=nxt), history)["messages"]
    said = chat["choices"][0]["message"]
    want: dict[str, Any] = {"role": "assistant", "content": said.get("content") or None}
    if said.get("tool_calls"):
        want["tool_calls"] = said["tool_calls"]
    else:
        want["content"] = said.get("content") or ""
    assert got == [{"role": "user", "content": "first"}, want, {"role": "user", "content": nxt}]


@SETTINGS
@given(st.text(min_size=1, max_size=20), st.integers() | st.text() | st.booleans())
def test_every_field_is_mapped_dropped_or_refused(key: str, value: Any) -> None:
    body = base(**{key: value})
    try:
        responses_to_chat(body)
    except TranslationError as exc:
        assert exc.status == 400 and exc.param is not None
        assert exc.param == key or exc.param.startswith((f"{key}.", f"{key}["))
        if key not in KNOWN:
            assert exc.message == f"Unknown parameter: '{key}'."
            assert exc.code == "unknown_parameter"


@SETTINGS
@given(st.sampled_from(sorted(KNOWN)), any_json)
def test_fields_of_any_shape_are_translated_or_refused_never_crash(key: str, value: Any) -> None:
    try:
        orjson.dumps(responses_to_chat(base(**{key: value})))
    except TranslationError as exc:
        assert exc.status == 400


@SETTINGS
@given(st.lists(any_json, max_size=4), st.lists(any_json, max_size=2))
def test_items_of_any_shape_are_translated_or_refused_never_crash(
    items: list, history: list
) -> None:
    try:
        orjson.dumps(responses_to_chat(base(input=items), history))
    except TranslationError as exc:
        assert exc.status == 400


def test_details() -> None:
    body = {
        "model": "m",
        "instructions": "be brief",
        "input": [
            {
                "type": "message",
                "role": "developer",
                "content": [{"type": "input_text", "text": "dev"}],
            },
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "look"},
                    {"type": "input_image", "image_url": "https://x/y.png", "detail": "high"},
                    {"type": "input_file", "file_id": "file_1", "filename": "a.pdf"},
                ],
            },
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "xx"},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "refusal", "refusal": "no"}],
            },
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": ""},
            {"type": "function_call", "call_id": "c2", "name": "g", "arguments": '{"a":1}'},
            {
                "type": "function_call_output",
                "call_id": "c1",
                "output": [{"type": "input_text", "text": "r1"}],
            },
            {"type": "function_call_output", "call_id": "c2", "output": "r2"},
        ],
        "tools": [
            {
                "type": "function",
                "name": "f",
                "description": "d",
                "parameters": None,
                "strict": True,
            },
            {"type": "function", "name": "g", "parameters": {"type": "object"}},
        ],
        "tool_choice": {
            "type": "allowed_tools",
            "mode": "required",
            "tools": [{"type": "function", "name": "g"}],
        },
        "parallel_tool_calls": False,
        "text": {"format": {"type": "json_object"}, "verbosity": "low"},
        "max_output_tokens": 7,
        "reasoning": {"effort": "high", "summary": "auto"},
        "stream": True,
        "metadata": {"a": "b"},
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "truncation": "auto",
        "background": False,
        "user": "u1",
    }
    got = responses_to_chat(body, max_tokens_field="max_completion_tokens")
    assert got == {
        "model": "m",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "system", "content": "dev"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "https://x/y.png", "detail": "high"},
                    },
                    {"type": "file", "file": {"file_id": "file_1", "filename": "a.pdf"}},
                ],
            },
            {
                "role": "assistant",
                "content": "no",
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                    {
                        "id": "c2",
                        "type": "function",
                        "function": {"name": "g", "arguments": '{"a":1}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "r1"}]},
            {"role": "tool", "tool_call_id": "c2", "content": "r2"},
        ],
        "max_completion_tokens": 7,
        "stream": True,
        "stream_options": {"include_usage": True},
        "tools": [
            {"type": "function", "function": {"name": "g", "parameters": {"type": "object"}}}
        ],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "response_format": {"type": "json_object"},
        "reasoning_effort": "high",
        "user": "u1",
    }
    assert "reasoning_effort" not in responses_to_chat(body, reasoning="drop")
    schema = {
        "format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}, "strict": True}
    }
    assert responses_to_chat(base(text=schema))["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": True},
    }
    assert "response_format" not in responses_to_chat(base(text={"format": {"type": "text"}}))
    fn = {"type": "function", "name": "f"}
    assert responses_to_chat(base(tools=[fn], tool_choice={"type": "function", "name": "f"}))[
        "tool_choice"
    ] == {"type": "function", "function": {"name": "f"}}


@pytest.mark.parametrize("tool", sorted(BUILTIN_TOOLS))
def test_builtin_tools_are_a_400_naming_the_tool(tool: str) -> None:
    with pytest.raises(TranslationError) as e:
        responses_to_chat(base(tools=[{"type": "function", "name": "f"}, {"type": tool}]))
    assert e.value.status == 400 and e.value.param == "tools[1].type"
    assert repr(tool) in e.value.message and e.value.code == "unsupported_tool"
    assert e.value.openai_error()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("patch", "param"),
    [
        ({"background": True}, "background"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"prompt": {"id": "p"}}, "prompt"),
        ({"max_tool_calls": 3}, "max_tool_calls"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
        ({"input": [{"type": "web_search_call", "id": "ws"}]}, "input[0].type"),
        ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_audio"}]}]},
            "input[0].content[0].type",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
            "input[0].content[0].file_id",
        ),
        (
            {
                "input": [
                    {
                        "role": "system",
                        "content": [{"type": "input_image", "image_url": "https://x"}],
                    }
                ]
            },
            "input[0].content",
        ),
        ({"tool_choice": {"type": "web_search"}}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"text": {"format": {"type": "grammar"}}}, "text.format"),
        ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema"),
        ({"max_output_tokens": "7"}, "max_output_tokens"),
        ({"input": 3}, "input"),
        ({"input": []}, "input"),
        ({"tools": [{"type": "function"}]}, "tools[0].name"),
    ],
)
def test_unmappable_requests_name_the_place(patch: dict, param: str) -> None:
    with pytest.raises(TranslationError) as e:
        responses_to_chat(base(**patch))
    assert e.value.param == param and e.value.status == 400


def test_history_comes_after_instructions_and_before_input() -> None:
    history = [
        {"role": "user", "content": "one"},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "two"}],
        },
    ]
    got = responses_to_chat(base(instructions="sys", input="three"), history)["messages"]
    assert [m["content"] for m in got] == ["sys", "one", "two", "three"]
    with pytest.raises(TranslationError) as e:
        responses_to_chat(base(), [{"type": "item_reference", "id": "x"}])
    assert e.value.param == "previous_response_id.type"  # an item of the stored conversation


def _cfg(**kw: Any) -> BackendConfig:
    return BackendConfig(**kw)


def test_translation_for_responses_clients() -> None:
    chat_only = frozenset({Dialect.OPENAI_CHAT})
    anthropic = frozenset({Dialect.ANTHROPIC_MESSAGES})
    assert translation_for(Dialect.OPENAI_RESPONSES, chat_only) is RESPONSES_TO_CHAT
    assert translation_for(Dialect.OPENAI_RESPONSES, anthropic) is RESPONSES_TO_ANTHROPIC
    assert translation_for(Dialect.OPENAI_RESPONSES, chat_only | anthropic) is RESPONSES_TO_CHAT
    assert (
        RESPONSES_TO_CHAT.path == "/chat/completions" and RESPONSES_TO_ANTHROPIC.path == "/messages"
    )
    assert not RESPONSES_TO_CHAT.anthropic_client  # errors in OpenAI's shape
    with pytest.raises(RuntimeError):
        RESPONSES_TO_CHAT.request(base(), "m", _cfg(base_url="http://x"), None)


def test_glue_request_per_target() -> None:
    body = base(max_output_tokens=9, reasoning={"effort": "low"}, stream=True)
    xl = RESPONSES_TO_CHAT.bind(body, "resp_1", [{"role": "user", "content": "before"}])
    assert isinstance(xl, ResponsesTranslation) and xl is not RESPONSES_TO_CHAT
    vllm = orjson.loads(xl.request(body, "llama", _cfg(base_url="http://vllm", pool="p"), None))
    assert (
        vllm["model"] == "llama" and vllm["max_tokens"] == 9 and vllm["reasoning_effort"] == "low"
    )
    assert [m["content"] for m in vllm["messages"]] == ["before", "hi"]
    oai = orjson.loads(xl.request(body, "gpt", _cfg(base_url="https://api.openai.com/v1"), None))
    assert oai["max_completion_tokens"] == 9 and "max_tokens" not in oai
    claude = RESPONSES_TO_ANTHROPIC.bind(body, "resp_2")
    cfg = _cfg(type="anthropic", default_max_tokens=100)
    out = orjson.loads(claude.request(body, "claude-x", cfg, None))
    assert out == {
        "model": "claude-x",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 9,
        "stream": True,
    }
    assert orjson.loads(claude.request(base(), "c", cfg, None))["max_tokens"] == 100


def test_anthropic_refusals_name_the_responses_fields() -> None:
    cfg = _cfg(type="anthropic")
    cases = [
        (base(text={"format": {"type": "json_object"}}), "text.format"),
        (base(temperature=1.5), "temperature"),
        (
            base(
                input=[
                    {"role": "user", "content": "q"},
                    {"type": "function_call", "call_id": "c", "name": "f", "arguments": "[1]"},
                ]
            ),
            "input[1]",
        ),
        (
            base(input=[{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]),
            "input[0]",
        ),
    ]
    for body, param in cases:
        xl = RESPONSES_TO_ANTHROPIC.bind(body, "resp_x")
        with pytest.raises(TranslationError) as e:
            xl.request(body, "c", cfg, None)
        assert e.value.param == param, body
        assert "response_format" not in e.value.message


def test_input_items_are_what_the_next_turn_replays() -> None:
    assert input_items(base()) == [{"type": "message", "role": "user", "content": "hi"}]
    items = [{"role": "user", "content": "a"}]
    assert input_items(base(input=items)) == items and input_items({"model": "m"}) == []
    chat = {"choices": [{"message": {"content": "b"}, "finish_reason": "stop"}]}
    first = base(instructions="sys")
    output = chat_to_response(chat, "resp_1", 1, response_echo(first))["output"]
    history = [*input_items(first), *output]
    got = responses_to_chat(base(input="c"), history)["messages"]
    assert got == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ]
