"""Answers and streams in the Responses API's shape: every response object and every event
parses with the official openai SDK's models (and its stream accumulator), the stream for
any split of the upstream's bytes equals the whole answer's translation, Anthropic targets
through the chain, usage for the meter, native answers' usage read, caps and failures."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from proxy.backends.base import UpstreamRefused
from proxy.dialects import TokenUsage, TranslationError
from proxy.dialects.anthropic_response import anthropic_to_openai_response, usage_from_anthropic
from proxy.dialects.anthropic_stream import (
    AnthropicToOpenAIStream,
    OpenAIToAnthropicStream,
)
from proxy.dialects.responses_response import (
    chat_to_response,
    response_echo,
    responses_usage,
    usage_from_chat,
    usage_from_responses,
)
from proxy.dialects.responses_stream import AnthropicToResponsesStream, ChatToResponsesStream
from proxy.request.dialect import (
    RESPONSES_TO_ANTHROPIC,
    RESPONSES_TO_CHAT,
    ResponsesStream,
    ResponsesTap,
    responses_body_usage,
)
from proxy.request.sse import MAX_EVENT
from tests.support.dialects import (
    anthropic_message,
    anthropic_sse,
    openai_completion,
    openai_sse,
    read_responses_stream,
    split_at,
)
from tests.unit.test_dialect_anthropic_response import junk as answer_junk
from tests.unit.test_dialect_anthropic_stream import anthropic_junk, openai_junk
from tests.unit.test_dialect_anthropic_stream import junk as stream_junk

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
cuts = st.lists(st.integers(0, 10_000), max_size=12)
EVENT = TypeAdapter(ResponseStreamEvent)
REQUEST = {
    "model": "alias",
    "input": "hi",
    "instructions": "be brief",
    "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": False}],
    "metadata": {"k": "v"},
    "max_output_tokens": 50,
}
ECHO = response_echo(REQUEST)


def run(translator: Any, pieces: list[bytes]) -> bytes:
    return b"".join(translator.feed(p) for p in pieces) + translator.finish()


def sdk_final(raw: bytes) -> Response:
    """The events through the official SDK: each parsed by its models, accumulated by its
    stream helper (as `client.responses.stream` does); the final response it gives (or,
    for an incomplete or failed one, which the helper leaves to the caller, the last
    event's)."""
    state = ResponseStreamState(input_tools=omit, text_format=omit)
    events = read_responses_stream(raw)
    for n, ev in enumerate(events):
        assert ev["sequence_number"] == n
        state.handle_event(EVENT.validate_python(ev))
    final = state._completed_response  # set by response.completed only
    if events[-1]["type"] != "response.completed":
        assert final is None
        return Response.model_validate(events[-1]["response"])
    assert final is not None
    return final


@SETTINGS
@given(openai_completion())
def test_chat_answers_parse_as_the_sdk_response(chat: dict[str, Any]) -> None:
    got = chat_to_response(chat, "resp_abc", 1_700_000_000, ECHO)
    r = Response.model_validate(got)
    assert r.id == "resp_abc" and r.object == "response" and r.model == chat["model"]
    said = chat["choices"][0]["message"]
    assert r.output_text == (said.get("content") or "")
    calls = [o for o in r.output if o.type == "function_call"]
    assert [(c.call_id, c.name, c.arguments) for c in calls] == [
        (c["id"], c["function"]["name"], c["function"]["arguments"])
        for c in said.get("tool_calls") or ()
    ]
    finish = chat["choices"][0]["finish_reason"]
    incomplete = {"length": "max_output_tokens", "content_filter": "content_filter"}
    if finish in incomplete:
        assert r.status == "incomplete" and r.incomplete_details is not None
        assert r.incomplete_details.reason == incomplete[finish]
        assert r.output[-1].status == "incomplete"
    else:
        assert r.status == "completed" and r.incomplete_details is None
    u = chat["usage"]
    assert r.usage is not None
    assert (
        r.usage.input_tokens == u["prompt_tokens"]
        and r.usage.output_tokens == u["completion_tokens"]
    )
    assert r.usage.input_tokens_details.cached_tokens == u["prompt_tokens_details"]["cached_tokens"]
    assert r.usage.input_tokens_details.cache_write_tokens == u["cache_creation_input_tokens"]
    assert r.usage.total_tokens == u["prompt_tokens"] + u["completion_tokens"]
    assert (r.instructions, r.metadata, r.max_output_tokens) == ("be brief", {"k": "v"}, 50)
    assert len({o.id for o in r.output}) == len(r.output)


@SETTINGS
@given(openai_completion(), cuts, cuts, st.booleans())
def test_chat_stream_equals_the_whole_translation(
    chat: dict[str, Any], text_cuts: list[int], byte_cuts: list[int], crlf: bool
) -> None:
    raw = openai_sse(chat, text_cuts)
    if crlf:
        raw = raw.replace(b"\n", b"\r\n")
    t = ChatToResponsesStream("resp_abc", 1_700_000_000, ECHO)
    out = run(t, split_at(raw, byte_cuts))
    whole = chat_to_response(chat, "resp_abc", 1_700_000_000, ECHO)
    assert t.response == whole and t.done and t.error is None
    final = sdk_final(out)
    assert final.model_dump(exclude_none=True) == Response.model_validate(whole).model_dump(
        exclude_none=True
    )
    types = [e["type"] for e in read_responses_stream(out)]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == (
        "response.completed" if whole["status"] == "completed" else "response.incomplete"
    )
    assert t.usage == usage_from_chat(chat["usage"])


@SETTINGS
@given(anthropic_message(), cuts, cuts)
def test_anthropic_stream_equals_the_whole_translation(
    msg: dict[str, Any], text_cuts: list[int], byte_cuts: list[int]
) -> None:
    """Anthropic targets: through the chat translators, stream and answer alike."""
    xl = RESPONSES_TO_ANTHROPIC.bind(REQUEST, "resp_a", created_at=5)
    body, usage = xl.answer(orjson.dumps(msg), "drop")
    assert usage == usage_from_anthropic(msg["usage"])
    whole = orjson.loads(body)
    Response.model_validate(whole)
    assert whole == chat_to_response(anthropic_to_openai_response(msg, 5), "resp_a", 5, ECHO)
    assert xl.response == whole
    t = AnthropicToResponsesStream("resp_a", 5, ECHO)
    raw = anthropic_sse(msg, text_cuts)
    out = run(t, split_at(raw, byte_cuts))
    assert t.response == whole
    sdk_final(out)
    assert t.usage == usage_from_anthropic(msg["usage"])
    # the direct reader writes exactly what the chain Anthropic → chat → Responses would
    chat = AnthropicToOpenAIStream(include_usage=True, created=5)
    chained = ChatToResponsesStream("resp_a", 5, ECHO)
    assert run(chained, [chat.feed(raw) + chat.finish()]) == out


def test_event_sequence_of_text_and_calls() -> None:
    chat = {
        "id": "c",
        "object": "chat.completion",
        "created": 1,
        "model": "llama",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "ok",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"a":1}'},
                        },
                        {
                            "id": "call_2",
                            "type": "function",
                            "function": {"name": "g", "arguments": "{}"},
                        },
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13},
    }
    t = ChatToResponsesStream("resp_z", 1, ECHO)
    events = read_responses_stream(run(t, [openai_sse(chat, [])]))
    assert [(e["type"], e.get("output_index")) for e in events] == [
        ("response.created", None),
        ("response.in_progress", None),
        ("response.output_item.added", 0),
        ("response.content_part.added", 0),
        ("response.output_text.delta", 0),
        ("response.output_text.done", 0),
        ("response.content_part.done", 0),
        ("response.output_item.done", 0),
        ("response.output_item.added", 1),
        ("response.function_call_arguments.delta", 1),
        ("response.function_call_arguments.done", 1),
        ("response.output_item.done", 1),
        ("response.output_item.added", 2),
        ("response.function_call_arguments.delta", 2),
        ("response.function_call_arguments.done", 2),
        ("response.output_item.done", 2),
        ("response.completed", None),
    ]
    assert (
        events[0]["response"]["status"] == "in_progress" and events[0]["response"]["output"] == []
    )
    assert events[8]["item"] == {
        "id": "fc_z_1",
        "type": "function_call",
        "call_id": "call_1",
        "name": "f",
        "arguments": "",
        "status": "in_progress",
    }
    assert events[10]["arguments"] == '{"a":1}' and events[10]["name"] == "f"
    assert [o["id"] for o in events[-1]["response"]["output"]] == ["msg_z_0", "fc_z_1", "fc_z_2"]
    assert events[-1]["response"]["usage"]["total_tokens"] == 13


def test_reasoning_passes_as_a_reasoning_item_only_when_asked() -> None:
    chunks = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "reasoning_content": "think"}}]},
        {"choices": [{"index": 0, "delta": {"content": "answer"}, "finish_reason": "stop"}]},
        {
            "choices": [],
            "usage": {
                "prompt_tokens": 3,
                "completion_tokens": 5,
                "completion_tokens_details": {"reasoning_tokens": 2},
            },
        },
    ]
    raw = b"".join(
        b"data: " + orjson.dumps({"id": "c", "model": "m", **c}) + b"\n\n" for c in chunks
    )
    raw += b"data: [DONE]\n\n"
    passed = ChatToResponsesStream("resp_r", 1, ECHO, thinking="pass")
    final = sdk_final(run(passed, [raw]))
    assert [o.type for o in final.output] == ["reasoning", "message"]
    assert final.output_text == "answer" and final.usage is not None
    assert final.usage.output_tokens_details.reasoning_tokens == 2
    assert passed.usage.reasoning_tokens == 2
    dropped = ChatToResponsesStream("resp_r", 1, ECHO)
    assert [o.type for o in sdk_final(run(dropped, [raw])).output] == ["message"]
    whole = {
        "choices": [
            {"message": {"content": "a", "reasoning_content": "t"}, "finish_reason": "stop"}
        ]
    }
    assert [o["type"] for o in chat_to_response(whole, "resp_1", 1, ECHO, "pass")["output"]] == [
        "reasoning",
        "message",
    ]


def test_upstream_error_event_is_response_failed() -> None:
    t = ChatToResponsesStream("resp_e", 1, ECHO)
    out = t.feed(
        b'data: {"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"a"}}]}\n\n'
    )
    out += t.feed(b'data: {"error":{"message":"rate limited","type":"x","code":429}}\n\n')
    out += t.feed(b'data: {"choices":[{"index":0,"delta":{"content":"late"}}]}\n\ndata: [DONE]\n\n')
    out += t.finish()
    events = read_responses_stream(out)
    for e in events:
        EVENT.validate_python(e)
    last = events[-1]
    assert last["type"] == "response.failed" and t.done and t.error is not None
    assert last["response"]["error"] == {"code": "rate_limit_exceeded", "message": "rate limited"}
    assert "late" not in out.decode()
    for kind, code in (
        ("rate_limit_error", "rate_limit_exceeded"),
        ("overloaded_error", "server_error"),
    ):
        a = AnthropicToResponsesStream("resp_e", 1, ECHO)
        err = {"type": "error", "error": {"type": kind, "message": "busy"}}
        events = read_responses_stream(
            a.feed(b"event: error\ndata: " + orjson.dumps(err) + b"\n\n")
        )
        assert [e["type"] for e in events][-1] == "response.failed" and a.error is not None
        assert events[-1]["response"]["error"] == {"code": code, "message": "busy"}
        assert a.finish() == b""
    ts = ResponsesStream(
        ChatToResponsesStream("resp_f", 1, ECHO), RESPONSES_TO_CHAT.bind(REQUEST, "resp_f")
    )
    ts.feed(b'data: {"error":{"message":"boom"}}\n\n')
    assert ts.saw_error and not ts.saw_done


def test_fail_ends_a_cut_stream_in_sequence() -> None:
    xl = RESPONSES_TO_CHAT.bind(REQUEST, "resp_c", created_at=1)
    s = xl.stream(False, "drop")
    out = s.feed(
        b'data: {"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"par"}}]}\n\n'
    )
    out += s.flush()
    assert not s.saw_done
    out += s.fail("The backend ended the stream before it was complete.", "stream_interrupted")
    assert s.fail("again") == b""
    events = read_responses_stream(out)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[-1]["type"] == "response.failed"
    r = Response.model_validate(events[-1]["response"])
    assert r.status == "failed" and r.error is not None and r.error.code == "server_error"
    assert xl.response == events[-1]["response"] and s.response is xl.response
    # before any upstream event: still response.created first, as the SDK wants
    cold = ChatToResponsesStream("resp_d", 1, ECHO)
    types = [e["type"] for e in read_responses_stream(cold.fail("gone"))]
    assert types == ["response.created", "response.in_progress", "response.failed"]


def test_glue_answer_error_and_stream() -> None:
    xl = RESPONSES_TO_CHAT.bind(REQUEST, "resp_g", created_at=7)
    chat = {
        "id": "c",
        "model": "llama",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hi"},
                "finish_reason": "length",
            }
        ],
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 3,
            "prompt_tokens_details": {"cached_tokens": 4},
        },
    }
    raw, usage = xl.answer(orjson.dumps(chat), "drop")
    assert usage == TokenUsage(input_tokens=6, output_tokens=3, cache_read_tokens=4)
    r = Response.model_validate_json(raw)
    assert r.status == "incomplete" and r.output_text == "hi" and xl.response is not None
    assert xl.response["output"][0]["status"] == "incomplete"
    with pytest.raises(TranslationError) as e:
        xl.answer(b"[]", "drop")
    assert e.value.status == 502
    with pytest.raises(TranslationError):
        xl.answer(b'{"choices":[{"message":{"content":5}}]}', "drop")
    assert xl.error(400, b'{"error":{"message":"bad"}}') == b'{"error":{"message":"bad"}}'
    claude = RESPONSES_TO_ANTHROPIC.bind(REQUEST, "resp_h")
    err = orjson.loads(
        claude.error(529, b'{"type":"error","error":{"type":"overloaded_error","message":"busy"}}')
    )
    assert err["error"]["message"] == "busy" and err["error"]["code"] == "overloaded_error"
    s = claude.stream(True, "drop")
    msg = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude",
        "content": [{"type": "text", "text": "yo"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 3,
            "cache_read_input_tokens": 2,
            "cache_creation_input_tokens": 1,
            "output_tokens": 4,
        },
    }
    out = s.feed(anthropic_sse(msg, [1])) + s.flush()
    assert s.saw_done and s.usage() == {
        "prompt_tokens": 6,
        "completion_tokens": 4,
        "total_tokens": 10,
        "prompt_tokens_details": {"cached_tokens": 2},
        "cache_read_input_tokens": 2,
        "cache_creation_input_tokens": 1,
    }
    assert sdk_final(out).output_text == "yo" and claude.response is not None


@given(st.tuples(*(st.integers(0, 10_000) for _ in range(5))))
def test_responses_usage_round_trips(counts: tuple[int, ...]) -> None:
    inp, out, read, write, reasoning = counts
    t = TokenUsage(inp, out, read, write, min(reasoning, out))
    assert usage_from_responses(responses_usage(t)) == t


def test_native_responses_usage_for_the_meter() -> None:
    usage = {
        "input_tokens": 100,
        "input_tokens_details": {"cached_tokens": 60, "cache_write_tokens": 0},
        "output_tokens": 20,
        "output_tokens_details": {"reasoning_tokens": 8},
        "total_tokens": 120,
    }
    want = {
        "prompt_tokens": 100,
        "completion_tokens": 20,
        "total_tokens": 120,
        "prompt_tokens_details": {"cached_tokens": 60},
        "cache_read_input_tokens": 60,
        "cache_creation_input_tokens": 0,
    }
    body = chat_to_response({"choices": [{"message": {"content": "x"}}]}, "resp_n", 1, ECHO)
    body["usage"] = usage
    assert responses_body_usage(orjson.dumps(body)) == want
    assert responses_body_usage(b"not json") is None and responses_body_usage(b"{}") is None
    # a native stream: bytes through unchanged, whatever the cuts; usage from the end
    t = ChatToResponsesStream("resp_n", 1, ECHO)
    chat = {
        "id": "c",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hello there"},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 100,
            "completion_tokens": 20,
            "prompt_tokens_details": {"cached_tokens": 60},
        },
    }
    native = run(t, [openai_sse(chat, [2, 5])])
    for n in (1, 7, 64):
        tap = ResponsesTap()
        pieces = [native[i : i + n] for i in range(0, len(native), n)]
        passed = b"".join(tap.feed(p) for p in pieces) + tap.flush()
        assert passed == native and tap.saw_done and not tap.saw_error
        assert tap.usage() == want and tap.content_events == 3
        assert tap.response is not None and tap.response["status"] == "completed"
    failed = ResponsesTap()
    failed.feed(b'event: error\ndata: {"type":"error","message":"x","sequence_number":0}\n\n')
    assert failed.saw_error and failed.usage() is None
    with pytest.raises(UpstreamRefused):
        ResponsesTap(max_event=2048).feed(b"data: " + b"x" * 4096)


@pytest.mark.parametrize(
    "make",
    [
        lambda: ChatToResponsesStream("resp_1", 1, ECHO, max_event=2048),
        lambda: AnthropicToResponsesStream("resp_1", 1, ECHO, max_event=2048),
        lambda: AnthropicToOpenAIStream(max_event=2048),
        lambda: OpenAIToAnthropicStream(),
    ],
    ids=["chat-to-responses", "anthropic-to-responses", "anthropic-to-chat", "chat-to-anthropic"],
)
def test_an_event_over_the_cap_is_refused(make: Any) -> None:
    """An upstream that never ends its event must not grow the proxy's memory: the stream
    translators refuse it as the passthrough relay does (they buffered without bound)."""
    t = make()
    cap = 2048 if not isinstance(t, OpenAIToAnthropicStream) else MAX_EVENT
    t.feed(b'data: {"choices":[]}\n\n')
    with pytest.raises(UpstreamRefused):
        for _ in range(cap // 1000 + 2):
            t.feed(b"data: " + b"x" * 1000)


@SETTINGS
@given(st.lists(anthropic_junk | openai_junk | stream_junk, max_size=6))
def test_upstream_garbage_never_raises_and_the_stream_ends(events: list) -> None:
    """Whatever an upstream sends, both readers answer events the SDK parses and end the
    stream with completed, incomplete or failed."""
    raw = b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events)
    for make in (ChatToResponsesStream, AnthropicToResponsesStream):
        for thinking in ("drop", "pass"):
            t = make("resp_j", 1, ECHO, thinking)
            out = t.feed(raw) + t.finish()
            got = read_responses_stream(out)
            for e in got:
                EVENT.validate_python(e)
            assert got[-1]["type"] in (
                "response.completed",
                "response.incomplete",
                "response.failed",
            )
            assert [e["sequence_number"] for e in got] == list(range(len(got)))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answer_junk)
def test_malformed_chat_answers_are_a_502_never_a_crash(body: Any) -> None:
    try:
        Response.model_validate(chat_to_response(body, "resp_j", 1, ECHO, "pass"))
    except TranslationError as exc:
        assert exc.status == 502
