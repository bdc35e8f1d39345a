"""Answers and errors between Anthropic Messages and OpenAI chat completions."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.dialects import TranslationError
from proxy.dialects.anthropic_response import (
    ANTHROPIC_STATUS,
    anthropic_error_to_openai,
    anthropic_to_openai_response,
    openai_error_to_anthropic,
    openai_to_anthropic_response,
    usage_from_anthropic,
    usage_from_openai,
)
from tests.support.dialects import anthropic_message, openai_completion

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(anthropic_message())
def test_anthropic_message_round_trips_through_openai(msg: dict[str, Any]) -> None:
    there = anthropic_to_openai_response(msg, created=1)
    assert there["object"] == "chat.completion" and there["id"] == msg["id"]
    back = openai_to_anthropic_response(there)
    assert back == msg


@SETTINGS
@given(openai_completion())
def test_openai_completion_round_trips_through_anthropic(body: dict[str, Any]) -> None:
    there = openai_to_anthropic_response(body)
    back = anthropic_to_openai_response(there, created=body["created"])
    assert back == body


@SETTINGS
@given(anthropic_message())
def test_usage_totals_are_preserved(msg: dict[str, Any]) -> None:
    u = msg["usage"]
    out = anthropic_to_openai_response(msg, created=1)["usage"]
    assert out["prompt_tokens"] == (
        u["input_tokens"] + u["cache_read_input_tokens"] + u["cache_creation_input_tokens"]
    )
    assert out["completion_tokens"] == u["output_tokens"]
    assert out["total_tokens"] == out["prompt_tokens"] + out["completion_tokens"]
    assert out["prompt_tokens_details"]["cached_tokens"] == u["cache_read_input_tokens"]
    assert usage_from_openai(out) == usage_from_anthropic(u)


def test_stop_reasons_and_tool_calls() -> None:
    msg = {
        "id": "msg_1",
        "model": "claude",
        "stop_reason": "tool_use",
        "content": [
            {"type": "text", "text": "let me look"},
            {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"q": "x"}},
        ],
        "usage": {"input_tokens": 10, "output_tokens": 5},
    }
    out = anthropic_to_openai_response(msg, created=7)
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "let me look"
    assert choice["message"]["tool_calls"] == [
        {"id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": '{"q":"x"}'}}
    ]
    assert out["usage"]["prompt_tokens"] == 10
    for stop, finish in [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("refusal", "content_filter"),
    ]:
        assert (
            anthropic_to_openai_response({**msg, "stop_reason": stop})["choices"][0][
                "finish_reason"
            ]
            == finish
        )


def test_vllm_matched_stop_string_becomes_stop_sequence() -> None:
    body = {
        "id": "c",
        "model": "m",
        "usage": {"prompt_tokens": 3, "completion_tokens": 1},
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "a"},
                "finish_reason": "stop",
                "stop_reason": "END",
            }
        ],
    }
    out = openai_to_anthropic_response(body)
    assert (out["stop_reason"], out["stop_sequence"]) == ("stop_sequence", "END")
    assert out["usage"] == {
        "input_tokens": 3,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 1,
    }


def test_bad_tool_arguments_from_the_model_are_a_502() -> None:
    body = {
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "1",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{oops"},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ]
    }
    with pytest.raises(TranslationError) as err:
        openai_to_anthropic_response(body)
    assert err.value.status == 502
    assert err.value.anthropic_error()["error"]["type"] == "api_error"


def test_a_last_call_cut_off_by_max_tokens_is_left_out_not_a_502() -> None:
    """Seen on the real llama-server: a forced call, then a second one cut off by
    max_tokens (arguments "{"). The whole call is kept, the cut one left out, and the
    stop_reason says max_tokens; a bad call that was not cut off is still a 502."""
    whole = {"id": "a", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
    cut = {"id": "b", "type": "function", "function": {"name": "f", "arguments": "{"}}

    def answer(calls: list[dict[str, Any]], finish: str) -> dict[str, Any]:
        message = {"role": "assistant", "content": "ok", "tool_calls": calls}
        return {"choices": [{"message": message, "finish_reason": finish}]}

    msg = openai_to_anthropic_response(answer([whole, cut], "length"))
    assert msg["stop_reason"] == "max_tokens"
    uses = [b for b in msg["content"] if b["type"] == "tool_use"]
    assert uses == [{"type": "tool_use", "id": "a", "name": "f", "input": {"x": 1}}]
    for calls, finish in (([cut, whole], "length"), ([whole, cut], "tool_calls")):
        with pytest.raises(TranslationError):
            openai_to_anthropic_response(answer(calls, finish))


def test_reasoning_passes_as_thinking_only_when_asked() -> None:
    body = {
        "choices": [
            {
                "message": {"role": "assistant", "content": "x", "reasoning_content": "because"},
                "finish_reason": "stop",
            }
        ]
    }
    assert [b["type"] for b in openai_to_anthropic_response(body)["content"]] == ["text"]
    out = openai_to_anthropic_response(body, thinking="pass")
    assert out["content"][0] == {"type": "thinking", "thinking": "because", "signature": ""}
    back = anthropic_to_openai_response(out, thinking="pass")
    assert back["choices"][0]["message"]["reasoning_content"] == "because"


@pytest.mark.parametrize(("kind", "status"), sorted(ANTHROPIC_STATUS.items()))
def test_anthropic_errors_become_openai_errors(kind: str, status: int) -> None:
    body = orjson.dumps({"type": "error", "error": {"type": kind, "message": "why"}})
    out = anthropic_error_to_openai(status, body)["error"]
    assert out["message"] == "why" and out["code"] == kind and out["param"] is None
    assert out["type"] == (
        {
            400: "invalid_request_error",
            401: "authentication_error",
            403: "permission_error",
            404: "invalid_request_error",
            413: "invalid_request_error",
            429: "rate_limit_error",
        }.get(status, "server_error")
    )
    back = openai_error_to_anthropic(status, orjson.dumps({"error": out}))
    assert back == {"type": "error", "error": {"type": kind, "message": "why"}}


@given(st.sampled_from([400, 401, 403, 404, 413, 429, 500, 502, 503, 529]), st.text(max_size=40))
def test_openai_and_vllm_errors_become_anthropic_errors(status: int, message: str) -> None:
    nested = {"error": {"message": message, "type": "x", "param": None, "code": status}}
    flat = {"object": "error", "message": message, "type": "x", "param": None, "code": status}
    for body in (nested, flat):
        out = openai_error_to_anthropic(status, orjson.dumps(body))
        assert out["type"] == "error" and out["error"]["message"] == message
        assert ANTHROPIC_STATUS.get(out["error"]["type"]) in (status, 500, 529, 400)
    assert openai_error_to_anthropic(502, b"<html>bad gateway</html>")["error"] == {
        "type": "api_error",
        "message": "<html>bad gateway</html>",
    }


junk = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=3),
    lambda inner: (
        st.lists(inner, max_size=2)
        | st.dictionaries(
            st.sampled_from(
                [
                    "id",
                    "model",
                    "content",
                    "choices",
                    "message",
                    "usage",
                    "type",
                    "text",
                    "tool_calls",
                    "function",
                    "arguments",
                    "input",
                    "finish_reason",
                    "stop_reason",
                    "prompt_tokens_details",
                ]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(junk)
def test_malformed_upstream_answers_are_a_502_never_a_crash(body: Any) -> None:
    for translate in (anthropic_to_openai_response, openai_to_anthropic_response):
        try:
            translate(body)
        except TranslationError as exc:
            assert exc.status in (400, 502)


@pytest.mark.parametrize("stray", [[None], {"a": 1}, 7])
def test_stray_values_where_text_belongs_are_a_502_not_passed_on(stray: Any) -> None:
    """Regression: a list in `message.content` went to the Anthropic client as its text."""
    choice = {"index": 0, "finish_reason": "stop"}
    for message in (
        {"role": "assistant", "content": stray},
        {"role": "assistant", "content": None, "tool_calls": [{"id": stray, "function": {}}]},
    ):
        with pytest.raises(TranslationError) as info:
            openai_to_anthropic_response({"choices": [{**choice, "message": message}]})
        assert info.value.status == 502
    for block in ({"type": "text", "text": stray}, {"type": "tool_use", "id": "t", "name": stray}):
        with pytest.raises(TranslationError):
            anthropic_to_openai_response({"content": [block], "stop_reason": "end_turn"})
