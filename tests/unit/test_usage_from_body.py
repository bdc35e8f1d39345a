"""Usage read from a non-streamed answer: the usage object alone when it has the usual shape,
the whole answer otherwise; the same numbers either way."""

from __future__ import annotations

import orjson
import pytest

from proxy.metering.events import UsageEvent
from proxy.metering.usage import usage_from_body

ANSWERS = [
    # usage last, content quoting the word "usage"
    {
        "id": "a",
        "choices": [{"message": {"content": 'the "usage": {"prompt_tokens": 99} text'}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
    },
    # usage first, with nested details and a null
    {
        "usage": {
            "prompt_tokens": 11,
            "completion_tokens": 3,
            "total_tokens": 14,
            "prompt_tokens_details": {"cached_tokens": 4},
            "completion_tokens_details": None,
        },
        "id": "b",
        "choices": [],
    },
    # an unusual shape (a string inside usage): read by parsing the whole answer
    {"id": "c", "usage": {"prompt_tokens": 2, "completion_tokens": 1, "note": "x{y"}},
]


@pytest.mark.parametrize("answer", ANSWERS)
@pytest.mark.parametrize("indent", [False, True])
def test_same_numbers_as_a_full_parse(answer: dict, indent: bool) -> None:
    raw = orjson.dumps(answer, option=orjson.OPT_INDENT_2 if indent else 0)
    ev = UsageEvent(request_id="r", started_at=0.0, endpoint="chat")
    usage_from_body(raw, ev)
    assert ev.prompt_tokens == answer["usage"]["prompt_tokens"]
    assert ev.completion_tokens == answer["usage"]["completion_tokens"]


@pytest.mark.parametrize("raw", [b'{"usage": null}', b'{"usage": {"prompt_tokens": 1', b"[]", b""])
def test_no_usage_or_broken_answers_leave_the_event_alone(raw: bytes) -> None:
    ev = UsageEvent(request_id="r", started_at=0.0, endpoint="chat")
    usage_from_body(raw, ev)
    assert (ev.prompt_tokens, ev.completion_tokens) == (0, 0)
