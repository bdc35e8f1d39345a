"""Stream translation, event by event, for any split of the upstream's bytes: the stream's
chunks put back together equal the translation of the same answer whole."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.dialects import TokenUsage
from proxy.dialects.anthropic_response import (
    anthropic_to_openai_response,
    openai_to_anthropic_response,
    usage_from_anthropic,
    usage_from_openai,
)
from proxy.dialects.anthropic_stream import (
    AnthropicToOpenAIStream,
    OpenAIToAnthropicStream,
    SSESplitter,
)
from tests.support.dialects import (
    anthropic_message,
    anthropic_sse,
    openai_completion,
    openai_sse,
    read_anthropic_stream,
    read_openai_stream,
    split_at,
)

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
cuts = st.lists(st.integers(0, 10_000), max_size=12)


def run(translator: Any, pieces: list[bytes]) -> bytes:
    return b"".join(translator.feed(p) for p in pieces) + translator.finish()


@SETTINGS
@given(anthropic_message(), cuts, cuts, st.booleans(), st.booleans())
def test_anthropic_stream_equals_the_whole_translation(
    msg: dict[str, Any],
    text_cuts: list[int],
    byte_cuts: list[int],
    include_usage: bool,
    crlf: bool,
) -> None:
    raw = anthropic_sse(msg, text_cuts)
    if crlf:
        raw = raw.replace(b"\n", b"\r\n")
    t = AnthropicToOpenAIStream(include_usage=include_usage, created=1)
    got = read_openai_stream(run(t, split_at(raw, byte_cuts)))
    whole = anthropic_to_openai_response(msg, created=1)
    choice = whole["choices"][0]
    want_message = {**choice["message"], "role": "assistant"}
    if want_message["content"] is None:
        want_message["content"] = ""  # the role chunk's content: "" (as OpenAI sends it)
    assert got["message"] == want_message
    assert got["finish_reason"] == choice["finish_reason"]
    assert (got["id"], got["model"]) == (whole["id"], whole["model"])
    assert got["done"] and t.done
    assert got["usage"] == (whole["usage"] if include_usage else None)
    assert t.usage == usage_from_anthropic(msg["usage"])


@SETTINGS
@given(openai_completion(), cuts, cuts)
def test_openai_stream_equals_the_whole_translation(
    body: dict[str, Any], text_cuts: list[int], byte_cuts: list[int]
) -> None:
    raw = openai_sse(body, text_cuts)
    t = OpenAIToAnthropicStream()
    got = read_anthropic_stream(run(t, split_at(raw, byte_cuts)))
    whole = openai_to_anthropic_response(body)
    if whole["content"] and whole["content"][0] == {"type": "text", "text": ""}:
        whole["content"].pop(0)  # an empty text is no block in a stream (no delta to carry)
    assert got["message"] == whole
    types = got["types"]
    assert types[:2] == ["message_start", "ping"]
    assert types[-2:] == ["message_delta", "message_stop"]
    assert types.count("content_block_start") == types.count("content_block_stop")
    assert t.usage == usage_from_openai(body["usage"])


def test_anthropic_stream_event_by_event() -> None:
    msg = {
        "id": "msg_1",
        "model": "claude",
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "type": "message",
        "role": "assistant",
        "content": [
            {"type": "text", "text": "ab"},
            {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"x": 1}},
        ],
        "usage": {
            "input_tokens": 5,
            "cache_read_input_tokens": 2,
            "cache_creation_input_tokens": 1,
            "output_tokens": 9,
        },
    }
    t = AnthropicToOpenAIStream(include_usage=True, created=3)
    out = [t.feed(e + b"\n\n") for e in anthropic_sse(msg, [1]).split(b"\n\n") if e]
    chunks = [orjson.loads(o[6:].split(b"\n\n")[0]) if o else None for o in out]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[1] is None  # ping
    deltas = [c["choices"][0]["delta"] for c in chunks if c and c["choices"]]
    assert {"content": "a"} in deltas and {"content": "b"} in deltas
    assert {
        "tool_calls": [
            {
                "index": 0,
                "id": "toolu_1",
                "type": "function",
                "function": {"name": "f", "arguments": ""},
            }
        ]
    } in deltas
    assert out[-1].endswith(b"data: [DONE]\n\n")
    usage_chunk = orjson.loads(out[-1][6:].split(b"\n\n")[0])
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["prompt_tokens"] == 8
    assert t.usage == TokenUsage(5, 9, 2, 1)
    assert t.finish() == b""  # already done


def test_anthropic_error_event_ends_the_openai_stream() -> None:
    t = AnthropicToOpenAIStream(created=1)
    out = t.feed(
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error",'
        b'"message":"Overloaded"}}\n\n'
    )
    first = orjson.loads(out.split(b"\n\n")[0][6:])
    assert (
        first["error"]["code"] == "overloaded_error" and first["error"]["message"] == "Overloaded"
    )
    assert out.endswith(b"data: [DONE]\n\n") and t.error is not None


def test_openai_error_and_cut_streams_end_the_anthropic_stream() -> None:
    t = OpenAIToAnthropicStream()
    out = t.feed(b'data: {"error": {"message": "boom", "type": "x", "code": 500}}\n\n')
    assert out.startswith(b"event: error\n") and t.error is not None
    assert t.finish() == b""
    cut = OpenAIToAnthropicStream()
    out = cut.feed(
        b'data: {"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
    )
    out += cut.finish()  # the upstream went away without [DONE]
    assert read_anthropic_stream(out)["types"][-3:] == [
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


@given(st.lists(st.binary(max_size=30), max_size=6), cuts)
def test_splitter_yields_each_event_once_whatever_the_cuts(datas: list[bytes], byte_cuts) -> None:
    payloads = [d.replace(b"\n", b" ").replace(b"\r", b" ") for d in datas]
    raw = b"".join(b"event: x\ndata: " + p + b"\n\n" for p in payloads)
    s = SSESplitter()
    got = [e for piece in split_at(raw, byte_cuts) for e in s.feed(piece)] + s.flush()
    assert got == payloads
    two_lines = s.feed(b"data:a\ndata:  b\n\n")
    assert two_lines == [b"a\n b"]


junk = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
A_TYPES = [
    "message_start",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
    "ping",
    "error",
]
anthropic_junk = st.fixed_dictionaries(
    {"type": st.sampled_from(A_TYPES)},
    optional={
        k: junk
        | st.fixed_dictionaries(
            {},
            optional={
                "type": st.sampled_from(["text_delta", "input_json_delta", "tool_use", "text"]),
                "text": junk,
                "partial_json": junk,
                "id": junk,
                "name": junk,
                "usage": junk,
                "stop_reason": junk,
            },
        )
        for k in ("message", "content_block", "delta", "index", "usage", "error")
    },
)
openai_junk = st.fixed_dictionaries(
    {},
    optional={
        "id": junk,
        "model": junk,
        "usage": junk,
        "error": junk,
        "choices": junk
        | st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "index": junk,
                    "finish_reason": junk,
                    "stop_reason": junk,
                    "delta": junk
                    | st.fixed_dictionaries(
                        {},
                        optional={
                            "content": junk,
                            "reasoning_content": junk,
                            "tool_calls": junk
                            | st.lists(
                                st.fixed_dictionaries(
                                    {},
                                    optional={
                                        "index": junk,
                                        "id": junk,
                                        "function": junk
                                        | st.fixed_dictionaries(
                                            {}, optional={"name": junk, "arguments": junk}
                                        ),
                                    },
                                ),
                                max_size=2,
                            ),
                        },
                    ),
                },
            ),
            max_size=2,
        ),
    },
)


@SETTINGS
@given(st.lists(anthropic_junk | junk, max_size=6))
def test_anthropic_upstream_garbage_never_raises(events: list) -> None:
    """Whatever an upstream sends, the translator answers bytes and ends the stream."""
    for thinking in ("drop", "pass"):
        t = AnthropicToOpenAIStream(include_usage=True, thinking=thinking)  # type: ignore[arg-type]
        out = b"".join(t.feed(b"data: " + orjson.dumps(e) + b"\n\n") for e in events)
        out += t.finish()
        assert out.endswith(b"data: [DONE]\n\n")


@SETTINGS
@given(st.lists(openai_junk | junk, max_size=6))
def test_openai_upstream_garbage_never_raises(events: list) -> None:
    for thinking in ("drop", "pass"):
        t = OpenAIToAnthropicStream(thinking=thinking)  # type: ignore[arg-type]
        out = b"".join(t.feed(b"data: " + orjson.dumps(e) + b"\n\n") for e in events)
        out += t.finish()
        assert out.endswith((b'"message_stop"}\n\n', b"}}\n\n"))


@SETTINGS
@given(st.lists(openai_junk | junk, min_size=1, max_size=4), openai_completion())
def test_openai_garbage_first_never_loses_message_start(events: list, body: dict) -> None:
    """A malformed chunk that breaks halfway (the first one included) keeps what it made:
    message_start was lost when the first chunk broke after starting the message, and the
    Anthropic SDK cannot read a stream without it."""
    t = OpenAIToAnthropicStream()
    raw = b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events)
    out = t.feed(raw + openai_sse(body, [])) + t.finish()
    types = [orjson.loads(p)["type"] for p in SSESplitter().feed(out)]
    assert types[0] in ("message_start", "error")
    if types[0] == "message_start":
        read_anthropic_stream(out)  # every block started before its deltas, as the SDK needs


STRAY = [None], {"a": 1}, 7, True  # values an upstream may put where text belongs


def test_stray_values_in_openai_text_fields_never_reach_the_anthropic_client() -> None:
    """Regression (CI, hypothesis): `delta.content: [null]` went out as a text_delta whose
    `text` was a list, and the Anthropic SDK's accumulator broke on it."""
    for stray in STRAY:
        t = OpenAIToAnthropicStream(thinking="pass")  # type: ignore[arg-type]
        deltas = [
            {"content": stray},
            {"reasoning_content": stray},
            {"tool_calls": [{"index": 0, "id": stray, "function": {"name": stray}}]},
            {"tool_calls": [{"index": 0, "function": {"arguments": stray}}]},
            {"content": "ok"},
        ]
        raw = b"".join(
            b"data: " + orjson.dumps({"choices": [{"index": 0, "delta": d}]}) + b"\n\n"
            for d in deltas
        )
        msg = read_anthropic_stream(t.feed(raw + DONE_LINE) + t.finish())["message"]
        for block in msg["content"]:
            assert all(isinstance(block.get(k, ""), str) for k in ("text", "thinking", "id"))
        assert msg["content"][-1]["text"] == "ok"


def test_stray_values_in_anthropic_text_fields_never_reach_the_openai_client() -> None:
    for stray in STRAY:
        t = AnthropicToOpenAIStream(include_usage=True, thinking="pass")  # type: ignore[arg-type]
        events = [
            {"type": "message_start", "message": {"id": "m", "model": "c", "usage": {}}},
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}},
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": stray},
            },
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "ok"},
            },
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {"type": "tool_use", "id": stray, "name": stray},
            },
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": stray},
            },
            {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {}},
            {"type": "message_stop"},
        ]
        raw = b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events)
        result = read_openai_stream(t.feed(raw) + t.finish())
        assert result["message"]["content"] == "ok"
        call = result["message"]["tool_calls"][0]
        assert call["function"] == {"name": "", "arguments": ""}


DONE_LINE = b"data: [DONE]\n\n"
