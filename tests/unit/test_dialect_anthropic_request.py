"""Requests between OpenAI chat and Anthropic Messages: round trips, and every field
mapped, dropped or refused (never silently lost)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.dialects import TranslationError
from proxy.dialects.anthropic_request import (
    _NEUTRAL,
    ANTHROPIC_DROPPED,
    ANTHROPIC_MAPPED,
    ANTHROPIC_REFUSED,
    OPENAI_DROPPED,
    OPENAI_MAPPED,
    anthropic_to_openai_chat,
    openai_chat_to_anthropic,
)
from tests.support.dialects import (
    anthropic_request,
    normal_anthropic,
    normal_openai,
    openai_request,
)

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BASE = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@SETTINGS
@given(openai_request())
def test_openai_request_round_trips_through_anthropic(body: dict[str, Any]) -> None:
    there = openai_chat_to_anthropic(body, default_max_tokens=1024)
    assert anthropic_to_openai_chat(there) == normal_openai(body)


@SETTINGS
@given(anthropic_request())
def test_anthropic_request_round_trips_through_openai(body: dict[str, Any]) -> None:
    there = anthropic_to_openai_chat(body)
    assert openai_chat_to_anthropic(there, default_max_tokens=1) == normal_anthropic(body)


KNOWN_OPENAI = OPENAI_MAPPED | OPENAI_DROPPED | set(_NEUTRAL)


@SETTINGS
@given(st.text(min_size=1, max_size=20), st.integers() | st.text() | st.booleans())
def test_every_openai_field_is_mapped_dropped_or_refused(key: str, value: Any) -> None:
    """An unknown field is refused naming it; a known one never raises anything but a
    TranslationError, whose param is the field."""
    body = {**BASE, key: value}
    try:
        out = openai_chat_to_anthropic(body, default_max_tokens=16)
    except TranslationError as exc:
        assert exc.param == key or str(exc.param).startswith("messages")
        assert exc.openai_error()["error"]["param"] == exc.param
        return
    assert key in KNOWN_OPENAI
    assert out["model"] == "m" or key == "model"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("n", 2),
        ("logprobs", True),
        ("top_logprobs", 3),
        ("presence_penalty", 0.5),
        ("frequency_penalty", -1),
        ("logit_bias", {"50256": -100}),
        ("modalities", ["audio"]),
        ("audio", {"voice": "x"}),
        ("prediction", {"type": "content"}),
        ("reasoning_effort", "high"),
        ("functions", [{"name": "f"}]),
        ("function_call", "auto"),
        ("web_search_options", {}),
        ("response_format", {"type": "json_object"}),
        ("response_format", {"type": "json_schema", "json_schema": {}}),
        ("temperature", 1.5),
        ("frobnicate", 1),
    ],
)
def test_unmappable_openai_fields_are_refused_with_their_name(key: str, value: Any) -> None:
    with pytest.raises(TranslationError) as err:
        openai_chat_to_anthropic({**BASE, key: value}, default_max_tokens=16)
    assert err.value.param == key and err.value.status == 400
    body = err.value.openai_error()["error"]
    assert body["type"] == "invalid_request_error" and key in body["message"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("n", 1),
        ("logprobs", False),
        ("presence_penalty", 0),
        ("frequency_penalty", 0.0),
        ("logit_bias", {}),
        ("response_format", {"type": "text"}),
        ("modalities", ["text"]),
        ("seed", 7),
        ("store", True),
        ("metadata", {"a": "b"}),
        ("service_tier", "auto"),
        ("stream_options", {"include_usage": True}),
    ],
)
def test_neutral_and_dropped_openai_fields_pass(key: str, value: Any) -> None:
    out = openai_chat_to_anthropic({**BASE, key: value}, default_max_tokens=16)
    assert set(out) == {"model", "messages", "max_tokens"}


def test_openai_to_anthropic_details() -> None:
    body = {
        "model": "claude",
        "messages": [
            {"role": "system", "content": "be brief"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"},
                    },
                    {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                    {
                        "id": "c2",
                        "type": "function",
                        "function": {"name": "g", "arguments": '{"x": 1}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "one"},
            {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "two"}]},
        ],
        "max_completion_tokens": 5,
        "stop": "END",
        "tool_choice": "required",
        "tools": [{"type": "function", "function": {"name": "f"}}],
    }
    out = openai_chat_to_anthropic(body, default_max_tokens=16)
    assert out["system"] == "be brief" and out["max_tokens"] == 5
    assert out["stop_sequences"] == ["END"] and out["tool_choice"] == {"type": "any"}
    assert out["tools"] == [{"name": "f", "input_schema": {"type": "object", "properties": {}}}]
    user, assistant, results = out["messages"]
    assert user["content"][1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
    }
    assert user["content"][2]["source"] == {"type": "url", "url": "https://x.test/a.png"}
    assert [b["input"] for b in assistant["content"]] == [{}, {"x": 1}]
    assert results == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "c1", "content": "one"},
            {"type": "tool_result", "tool_use_id": "c2", "content": "two"},
        ],
    }
    assert openai_chat_to_anthropic(BASE, default_max_tokens=77)["max_tokens"] == 77


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([{"role": "function", "name": "f", "content": "x"}], "messages[0].role"),
        (
            [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}],
            "messages[0].content[0]",
        ),
        (
            [
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "1",
                            "type": "function",
                            "function": {"name": "f", "arguments": "[1]"},
                        }
                    ],
                }
            ],
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}],
                }
            ],
            "messages[0].content[0].image_url",
        ),
        ([], "messages"),
    ],
)
def test_unmappable_openai_messages_name_the_place(messages: list, param: str) -> None:
    with pytest.raises(TranslationError) as err:
        openai_chat_to_anthropic({"model": "m", "messages": messages}, default_max_tokens=1)
    assert err.value.param == param


KNOWN_ANTHROPIC = ANTHROPIC_MAPPED | ANTHROPIC_DROPPED
A_BASE = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


@SETTINGS
@given(st.text(min_size=1, max_size=20), st.integers() | st.text())
def test_every_anthropic_field_is_mapped_dropped_or_refused(key: str, value: Any) -> None:
    try:
        anthropic_to_openai_chat({**A_BASE, key: value})
    except TranslationError as exc:
        assert exc.param == key or str(exc.param).startswith("messages")
        assert exc.anthropic_error()["error"]["type"] == "invalid_request_error"
        return
    assert key in KNOWN_ANTHROPIC and key not in ANTHROPIC_REFUSED


def test_anthropic_to_openai_policies_and_refusals() -> None:
    thinking = {**A_BASE, "thinking": {"type": "enabled", "budget_tokens": 1024}, "top_k": 5}
    out = anthropic_to_openai_chat(thinking)
    assert "thinking" not in out and out["top_k"] == 5
    assert "top_k" not in anthropic_to_openai_chat(thinking, top_k="drop")
    with pytest.raises(TranslationError) as err:
        anthropic_to_openai_chat(thinking, thinking="refuse")
    assert err.value.param == "thinking"
    history = {
        **A_BASE,
        "messages": [
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "s"},
                    {"type": "text", "text": "ok"},
                ],
            }
        ],
    }
    assert anthropic_to_openai_chat(history)["messages"] == [{"role": "assistant", "content": "ok"}]
    with pytest.raises(TranslationError):
        anthropic_to_openai_chat(history, thinking="refuse")
    for bad, param in [
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools.0"),
        (
            {"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
            "messages.0.content.0",
        ),
        ({"mcp_servers": []}, "mcp_servers"),
        ({"tool_choice": {"type": "magic"}}, "tool_choice"),
    ]:
        with pytest.raises(TranslationError) as err:
            anthropic_to_openai_chat({**A_BASE, **bad})
        assert err.value.param == param
    for missing in ("model", "max_tokens", "messages"):
        body = {k: v for k, v in A_BASE.items() if k != missing}
        with pytest.raises(TranslationError) as err:
            anthropic_to_openai_chat(body)
        assert err.value.param == missing
    stream = anthropic_to_openai_chat({**A_BASE, "stream": True, "service_tier": "auto"})
    assert stream["stream_options"] == {"include_usage": True} and "service_tier" not in stream


any_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@SETTINGS
@given(st.sampled_from(sorted(KNOWN_OPENAI)), any_json)
def test_openai_fields_of_any_shape_are_translated_or_refused_never_crash(
    key: str, value: Any
) -> None:
    """A mapped field of the wrong type is the client's 400, not the proxy's 500."""
    try:
        openai_chat_to_anthropic({**BASE, key: value}, default_max_tokens=16)
    except TranslationError as exc:
        assert exc.status == 400 and exc.param is not None


@SETTINGS
@given(st.sampled_from(sorted(KNOWN_ANTHROPIC | set(ANTHROPIC_REFUSED))), any_json)
def test_anthropic_fields_of_any_shape_are_translated_or_refused_never_crash(
    key: str, value: Any
) -> None:
    try:
        anthropic_to_openai_chat({**A_BASE, key: value})
    except TranslationError as exc:
        assert exc.status == 400 and exc.param is not None


@SETTINGS
@given(st.lists(any_json, max_size=3))
def test_messages_of_any_shape_are_translated_or_refused_never_crash(messages: list) -> None:
    for build in (
        lambda: openai_chat_to_anthropic({**BASE, "messages": messages}, default_max_tokens=1),
        lambda: anthropic_to_openai_chat({**A_BASE, "messages": messages}),
    ):
        try:
            build()
        except TranslationError as exc:
            assert exc.param is not None and exc.param.startswith("messages")


def _shaped(types: list[str], keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects of a known `type` whose other fields are anything: the shapes a translation
    walks into, with wrong types where it expects others."""
    return st.fixed_dictionaries(
        {"type": st.sampled_from(types)},
        optional={k: any_json | st.dictionaries(st.sampled_from(keys), any_json) for k in keys},
    )


openai_parts = st.lists(
    _shaped(["text", "image_url", "input_audio"], ["text", "image_url"]), max_size=3
)
openai_calls = st.lists(
    _shaped(["function", "x"], ["id", "function", "arguments", "name"]), max_size=2
)
openai_messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "developer", "user", "assistant", "tool", "x"])},
        optional={
            "content": any_json | openai_parts,
            "tool_calls": any_json | openai_calls,
            "tool_call_id": any_json,
            "refusal": st.none() | st.text(),
        },
    ),
    min_size=1,
    max_size=4,
)
anthropic_blocks = st.lists(
    _shaped(
        ["text", "image", "tool_use", "tool_result", "thinking", "document"],
        ["text", "source", "id", "name", "input", "tool_use_id", "content", "url", "data"],
    ),
    max_size=3,
)
anthropic_messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system"])},
        optional={"content": any_json | anthropic_blocks},
    ),
    min_size=1,
    max_size=4,
)


@SETTINGS
@given(openai_messages, st.lists(_shaped(["function", "x"], ["function", "name"]), max_size=2))
def test_openai_shapes_never_crash(messages: list, tools: list) -> None:
    try:
        openai_chat_to_anthropic(
            {**BASE, "messages": messages, "tools": tools}, default_max_tokens=1
        )
    except TranslationError as exc:
        assert exc.status == 400 and exc.param is not None


@SETTINGS
@given(anthropic_messages, st.lists(_shaped(["custom", "x"], ["name", "input_schema"]), max_size=2))
def test_anthropic_shapes_never_crash(messages: list, tools: list) -> None:
    try:
        anthropic_to_openai_chat({**A_BASE, "messages": messages, "tools": tools})
    except TranslationError as exc:
        assert exc.status == 400 and exc.param is not None


ASSISTANT = {"role": "assistant", "content": None}


@pytest.mark.parametrize(
    ("patch", "param"),
    [
        ({"stop": 5}, "stop"),
        ({"stop": ["a", 1]}, "stop"),
        ({"max_tokens": "10"}, "max_tokens"),
        ({"stream": "yes"}, "stream"),
        ({"tools": [{"type": "function", "function": 5}]}, "tools[0].function"),
        ({"tool_choice": {"type": "function", "function": 5}}, "tool_choice"),
        ({"messages": [{**ASSISTANT, "tool_calls": 5}]}, "messages[0].tool_calls"),
        ({"messages": [{**ASSISTANT, "tool_calls": [{"function": 5}]}]},
         "messages[0].tool_calls[0].function"),
        ({"messages": [{**ASSISTANT, "tool_calls": [{"function": {"arguments": 5}}]}]},
         "messages[0].tool_calls[0].function.arguments"),
    ],
)  # fmt: skip
def test_openai_wrong_types_are_400s_naming_the_field(patch: dict, param: str) -> None:
    """Each of these raised TypeError/AttributeError (a 500 once wired) before."""
    with pytest.raises(TranslationError) as err:
        openai_chat_to_anthropic({**BASE, **patch}, default_max_tokens=1)
    assert (err.value.status, err.value.param) == (400, param)


@pytest.mark.parametrize(
    ("patch", "param"),
    [
        ({"stop_sequences": True}, "stop_sequences"),
        ({"stop_sequences": "END"}, "stop_sequences"),
        ({"tools": 5}, "tools"),
        ({"thinking": [1]}, "thinking"),
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"messages": [{"role": "user", "content": [{"type": "image", "source": 5}]}]},
         "messages.0.content.0.source"),
    ],
)  # fmt: skip
def test_anthropic_wrong_types_are_400s_naming_the_field(patch: dict, param: str) -> None:
    with pytest.raises(TranslationError) as err:
        anthropic_to_openai_chat({**A_BASE, **patch})
    assert (err.value.status, err.value.param) == (400, param)
