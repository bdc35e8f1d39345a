"""The /v1/responses route's own logic (proxy/request/responses.py): the terminal event
held until the response is stored, whatever the cuts; the body per attempt (as sent to
the backend that owns the previous response, else the stored conversation spelled out)."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.request.dialect import ResponsesTap
from proxy.request.errors import ProxyError
from proxy.request.responses import HoldEnd, Turn


def _event(kind: str, **fields: Any) -> bytes:
    body = orjson.dumps({"type": kind, **fields})
    return b"event: " + kind.encode() + b"\ndata: " + body + b"\n\n"


FINAL = {
    "id": "resp_1",
    "object": "response",
    "status": "completed",
    "output": [{"type": "message", "role": "assistant", "content": []}],
    "usage": {"input_tokens": 7, "output_tokens": 3, "input_tokens_details": {"cached_tokens": 2}},
}
STREAM = b"".join(
    [
        _event("response.created", response={**FINAL, "status": "in_progress", "usage": None}),
        _event("response.output_text.delta", delta="Hi", item_id="m", output_index=0),
        _event("response.output_text.delta", delta=" there", item_id="m", output_index=0),
        _event("response.completed", response=FINAL),
    ]
)


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=6))
def test_the_end_is_held_until_flush_whatever_the_cuts(cuts: list[int]) -> None:
    tap = HoldEnd(ResponsesTap())
    bounds = [0, *sorted(cuts), len(STREAM)]
    before = b"".join(tap.feed(STREAM[a:b]) for a, b in itertools.pairwise(bounds))
    assert b"response.completed" not in before  # the client cannot see the end yet
    assert tap.response == FINAL and tap.saw_done and not tap.saw_error
    assert before + tap.flush() == STREAM
    assert tap.usage() is not None
    assert tap.usage()["prompt_tokens"] == 7  # type: ignore[index]
    assert tap.content_events == 2


def test_a_turn_checks_its_fields() -> None:
    for data, param in [
        ({"input": 3}, "input"),
        ({"input": [1]}, "input[0]"),
        ({"input": "x", "store": 1}, "store"),
        ({"input": "x", "background": "yes"}, "background"),
        ({"input": "x", "previous_response_id": 5}, "previous_response_id"),
    ]:
        with pytest.raises(ProxyError) as err:
            Turn(data, "t")
        assert err.value.status == 400 and err.value.param == param
    assert Turn({"input": "hi"}, "t").items == [
        {"type": "message", "role": "user", "content": "hi"}
    ]
    assert Turn({"input": "hi"}, "t").store and not Turn({"input": "x", "store": False}, "t").store


def test_the_body_per_attempt() -> None:
    data = {"model": "m", "input": "and?", "previous_response_id": "resp_a"}
    turn = Turn(data, "t")
    turn.prev = {
        "backend": "a",
        "native": True,
        "input": [{"type": "message", "role": "user", "content": "first", "id": "msg_1"}],
        "output": [
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "reasoning", "id": "rs_2", "summary": [], "encrypted_content": "e"},
            {"type": "message", "role": "assistant", "id": "msg_2", "content": []},
        ],
    }
    assert turn.data_for("a") is data  # the owner has the conversation itself
    moved = turn.data_for("b")
    assert "previous_response_id" not in moved
    assert moved["input"] == [
        {"type": "message", "role": "user", "content": "first"},
        {"type": "reasoning", "summary": [], "encrypted_content": "e"},
        {"type": "message", "role": "assistant", "content": []},
        {"type": "message", "role": "user", "content": "and?"},
    ]
    assert data["previous_response_id"] == "resp_a"  # the client's body is left alone
    turn.prev["native"] = False  # made by a translation: no backend holds it
    assert "previous_response_id" not in turn.data_for("a")
