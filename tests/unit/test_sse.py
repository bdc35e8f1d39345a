"""The SSE usage tap: usage captured, usage chunk and inline usage stripped at byte level."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.backends.base import UpstreamRefused
from proxy.request.sse import UsageTap, cut_inline_usage


def _chunk(i: int, usage: dict | None = None) -> bytes:
    obj = {
        "id": "c",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": f"t{i}"}}],
    }
    if usage is not None:
        obj["usage"] = usage
    return b"data: " + orjson.dumps(obj) + b"\n\n"


USAGE = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
USAGE_CHUNK = b"data: " + orjson.dumps({"id": "c", "choices": [], "usage": USAGE}) + b"\n\n"
DONE = b"data: [DONE]\n\n"


def _stream(inline: bool) -> bytes:
    parts = [
        _chunk(
            i,
            {"prompt_tokens": 5, "completion_tokens": i + 1, "total_tokens": 6 + i}
            if inline
            else None,
        )
        for i in range(3)
    ]
    return b"".join(parts) + USAGE_CHUNK + DONE


def _relay(tap: UsageTap, data: bytes, cuts: list[int]) -> bytes:
    out = []
    prev = 0
    for c in [*sorted(cuts), len(data)]:
        out.append(tap.feed(data[prev:c]))
        prev = c
    out.append(tap.flush())
    return b"".join(out)


@given(st.lists(st.integers(min_value=0, max_value=len(_stream(True))), max_size=8))
def test_split_anywhere_keeps_events_and_usage(cuts: list[int]) -> None:
    data = _stream(inline=True)
    tap = UsageTap(strip_usage_chunk=True, strip_inline_usage=True)
    out = _relay(tap, data, cuts)
    assert tap.usage() == USAGE
    assert tap.saw_done
    assert b'"usage"' not in out
    events = [e for e in out.split(b"\n\n") if e]
    assert len(events) == 4  # 3 content chunks + [DONE]
    for e in events[:-1]:
        obj = orjson.loads(e[len(b"data: ") :])
        assert obj["choices"][0]["delta"]["content"].startswith("t")


def test_usage_chunk_kept_when_client_asked() -> None:
    tap = UsageTap(strip_usage_chunk=False, strip_inline_usage=False)
    out = _relay(tap, _stream(inline=False), [])
    assert out == _stream(inline=False)
    assert tap.usage() == USAGE
    assert tap.content_events == 3


def test_running_usage_of_a_cut_stream() -> None:
    data = b"".join(_chunk(i, {"prompt_tokens": 5, "completion_tokens": i + 1}) for i in range(4))
    tap = UsageTap(strip_usage_chunk=True, strip_inline_usage=True)
    _relay(tap, data, [7, 50])
    assert not tap.saw_done
    assert tap.usage() == {"prompt_tokens": 5, "completion_tokens": 4}


def test_cut_inline_usage_variants() -> None:
    ev = b'data: {"a":1,"usage":{"x":{"y":"}"}},"b":2}'
    assert cut_inline_usage(ev, ev.find(b'"usage"')) == b'data: {"a":1,"b":2}'
    ev2 = b'data: {"usage":{"p":1},"b":2}'
    assert cut_inline_usage(ev2, ev2.find(b'"usage"')) == b'data: {"b":2}'


def _event(obj: dict | str, sep: bytes) -> bytes:
    payload = obj.encode() if isinstance(obj, str) else orjson.dumps(obj)
    return b"data: " + payload + sep


@given(
    kinds=st.lists(st.sampled_from(["plain", "inline", "usage_only"]), max_size=12),
    crlf=st.booleans(),
    strip_chunk=st.booleans(),
    strip_inline=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=6),
)
def test_relay_equals_the_stream_minus_what_is_stripped(
    kinds: list[str], crlf: bool, strip_chunk: bool, strip_inline: bool, cuts: list[int]
) -> None:
    """Whatever mix of events and framing (LF or CRLF), split anywhere: the relay is the
    input with exactly the usage-only chunks and inline usage objects taken out (if asked),
    and the counts and last usage are right."""
    sep = b"\r\n\r\n" if crlf else b"\n\n"
    data, expected = [], []
    last_usage = None
    content = 0
    for i, kind in enumerate(kinds):
        usage = {"prompt_tokens": 5, "completion_tokens": i + 1}
        delta = {"index": 0, "delta": {"content": f"t{i}"}}
        if kind == "plain":
            ev = _event({"id": "c", "choices": [delta]}, sep)
            data.append(ev)
            expected.append(ev)
            content += 1
        elif kind == "inline":
            data.append(_event({"id": "c", "choices": [delta], "usage": usage}, sep))
            kept = {"id": "c", "choices": [delta]} if strip_inline else None
            expected.append(_event(kept, sep) if kept else data[-1])
            last_usage = usage
            content += 1
        else:
            data.append(_event({"id": "c", "choices": [], "usage": usage}, sep))
            if not strip_chunk:
                expected.append(data[-1])
            last_usage = usage
    data.append(_event("[DONE]", sep))
    expected.append(data[-1])
    stream = b"".join(data)
    tap = UsageTap(strip_usage_chunk=strip_chunk, strip_inline_usage=strip_inline)
    out = _relay(tap, stream, [c for c in cuts if c <= len(stream)])
    assert out == b"".join(expected)
    assert tap.saw_done
    assert tap.content_events == content
    assert tap.usage() == last_usage


@given(
    kinds=st.lists(st.sampled_from(["plain", "inline"]), max_size=10),
    usage_chunk=st.booleans(),
    crlf=st.booleans(),
    strip_chunk=st.booleans(),
    strip_inline=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=6),
)
def test_searching_from_the_end_relays_what_the_event_by_event_scan_does(
    kinds: list[str],
    usage_chunk: bool,
    crlf: bool,
    strip_chunk: bool,
    strip_inline: bool,
    cuts: list[int],
) -> None:
    """A tap that was not told to expect inline usage searches each piece from its end: for
    an OpenAI-shaped stream (one usage chunk at the end), or inline usage nobody asked for
    (then it falls back to every event), it relays and counts exactly what the full scan does."""
    if usage_chunk and "inline" in kinds:
        kinds = ["plain" for _ in kinds]
    sep = b"\r\n\r\n" if crlf else b"\n\n"
    parts = []
    for i, kind in enumerate(kinds):
        obj: dict = {"id": "c", "choices": [{"index": 0, "delta": {"content": f"t{i}"}}]}
        if kind == "inline":
            obj["usage"] = {"prompt_tokens": 5, "completion_tokens": i + 1}
        parts.append(_event(obj, sep))
    if usage_chunk:
        parts.append(_event({"id": "c", "choices": [], "usage": USAGE}, sep))
    parts.append(_event("[DONE]", sep))
    stream = b"".join(parts)
    cuts = [c for c in cuts if c <= len(stream)]
    taps = [UsageTap(strip_chunk, strip_inline, inline_expected=e) for e in (True, False)]
    full, from_end = (_relay(tap, stream, cuts) for tap in taps)
    assert from_end == full
    assert [t.content_events for t in taps] == [len(kinds)] * 2
    assert taps[1].usage() == taps[0].usage()
    assert taps[1].saw_done


def test_a_long_stream_is_counted_right_and_holds_little_to_count_later() -> None:
    """Events are counted lazily, but a long stream does not keep what it relayed: past the
    bound the held pieces are counted and let go, and the total still comes out exact."""
    from proxy.request.sse import _MAX_UNCOUNTED

    stream = b"".join(_chunk(i) for i in range(3000)) + USAGE_CHUNK + DONE
    tap = UsageTap(strip_usage_chunk=True, strip_inline_usage=True, inline_expected=False)
    for i in range(0, len(stream), 700):
        tap.feed(stream[i : i + 700])
        assert tap._uncounted_bytes <= _MAX_UNCOUNTED
    tap.flush()
    assert tap.content_events == 3000
    assert tap.usage() == USAGE
    assert tap.saw_done


def test_an_event_that_never_ends_is_refused_at_the_cap() -> None:
    """An upstream that never closes its event must not grow the stream's buffer without
    bound (limits.upstream_max_event_bytes)."""
    tap = UsageTap(strip_usage_chunk=False, strip_inline_usage=False, max_event=4096)
    assert tap.feed(b"data: {}\n\n" + b"data: " + b"x" * 1000) == b"data: {}\n\n"
    with pytest.raises(UpstreamRefused, match="stream event over 4096 bytes"):
        for _ in range(10):
            tap.feed(b"x" * 1000)
    # Events up to the cap pass whole, however they are cut.
    tap = UsageTap(strip_usage_chunk=False, strip_inline_usage=False, max_event=4096)
    event = b"data: " + b"y" * 4000 + b"\n\n"
    assert b"".join(tap.feed(event[i : i + 100]) for i in range(0, len(event), 100)) == event
