"""Raw-body fuzzing of the OpenAI routes with hypothesis, against a real `hybridgate serve`.

Every field the proxy reads (model, messages, prompt, input, stream, stream_options and
its keys, max_tokens, metadata, user) gets wrong types and odd values; whole bodies are
random JSON, non-objects, deep nesting, huge numbers, invalid UTF-8, duplicate keys,
NaN/Infinity literals, truncations, and sizes on both sides of the body limit. The proxy
must never answer 5xx itself, never crash, and answer every non-2xx in OpenAI's shape.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.fuzz import ALIASES, BODY_LIMIT, Tally, check_answer, client_headers, fuzz_stack
from tests.support.proxy import ProxyHandle

PATHS = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
    "/chat/completions": "chat",
    "/completions": "completions",
    "/embeddings": "embeddings",
}
BASE: dict[str, dict[str, Any]] = {
    "chat": {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
    "completions": {"model": "frontier", "prompt": "hi", "max_tokens": 3},
    "embeddings": {"model": "embed", "input": "hi"},
}
READ_FIELDS = [
    "model", "messages", "prompt", "input", "stream", "stream_options", "max_tokens",
    "max_completion_tokens", "metadata", "user",
]  # fmt: skip
STREAM_OPTION_KEYS = ["include_usage", "continuous_usage_stats"]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)
# Values for a field: anything, plus the ones that look almost right.
field_values = json_values | st.sampled_from(
    [
        "", "chat", " chat", "CHAT", "chat\x00", 0, -1, 2**63, 1.5, True, "true", [], {},
        [{}], [None], ["hi"], [1, 2], [[1]], {"role": "user"}, [{"role": "user", "content": 5}],
        {"include_usage": "yes"}, {"include_usage": True, "continuous_usage_stats": 1},
        {"data_class": "confidential"}, {"data_class": ["confidential"]}, "batch-job",
    ]
)  # fmt: skip

# Literals no JSON encoder produces: the proxy's parser must refuse them cleanly.
ODD_LITERALS = [
    b"NaN", b"-NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"1e-400", b"-0",
    b"1" + b"0" * 400, b"-" + b"9" * 5000, b"0x10", b"01", b"1.", b".5", b"+1", b"1e",
    b"true1", b"nul", b"undefined", b'"\\ud800"', b'"\\udfff\\ud800"', b'"\\u00"', b"'chat'",
]  # fmt: skip
INVALID_UTF8 = [b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80"]

settings.register_profile(
    "fuzz",
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyHandle]:
    with fuzz_stack(tmp_path_factory.mktemp("fuzz-bodies")) as p:
        yield p


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30, headers=client_headers()) as c:
        yield c


def post(http: httpx.Client, proxy: ProxyHandle, path: str, body: bytes, tally: Tally, *,
         chunked: bool = False, headers: dict[str, str] | None = None) -> None:  # fmt: skip
    content: Any = (
        iter([body[i : i + 4096] for i in range(0, len(body), 4096)]) if chunked else body
    )
    with http.stream("POST", proxy.url + path, content=content, headers=headers) as r:
        raw = r.read()
    check_answer(r.status_code, r.headers, raw, tally)
    if r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream"):
        # A stream from upstreams that never fault ends with [DONE], never cut.
        assert raw.rstrip().endswith(b"data: [DONE]"), raw[-300:]
        assert b"stream_interrupted" not in raw


def run_fuzz(name: str, examples: int, strategy: st.SearchStrategy[Any], send: Any) -> Tally:
    tally = Tally()
    t0 = time.monotonic()

    @settings(settings.get_profile("fuzz"), max_examples=examples)
    @given(strategy)
    def fuzz(case: Any) -> None:
        send(case, tally)

    fuzz()
    print(tally.summary(name, time.monotonic() - t0))
    assert tally.cases >= examples  # hypothesis ran every example it was asked for
    return tally


@st.composite
def wrong_fields(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid body with one or more fields the proxy reads replaced, removed or added."""
    path = draw(st.sampled_from(list(PATHS)))
    body = dict(BASE[PATHS[path]])
    body["model"] = draw(st.sampled_from(ALIASES))
    if draw(st.booleans()):
        body["stream"] = True
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from([*READ_FIELDS, "stream_options.*"]))
        if name == "stream_options.*":
            so = body.get("stream_options")
            so = dict(so) if isinstance(so, dict) else {}
            so[draw(st.sampled_from(STREAM_OPTION_KEYS))] = draw(field_values)
            body["stream_options"] = so
        elif draw(st.integers(0, 5)) == 0:
            body.pop(name, None)
        else:
            body[name] = draw(field_values)
    return path, orjson.dumps(body)


def test_wrong_types_for_every_field_the_proxy_reads(
    proxy: ProxyHandle, http: httpx.Client
) -> None:
    tally = run_fuzz(
        "wrong fields",
        600,
        wrong_fields(),
        lambda case, tally: post(http, proxy, case[0], case[1], tally),
    )
    assert tally.statuses[400] > 0 and tally.statuses[200] > 0  # both sides were reached


@st.composite
def mangled_text(draw: st.DrawFn) -> tuple[str, bytes, bool]:
    """Bodies no JSON encoder writes: odd literals, duplicate keys, deep nesting, bad UTF-8,
    truncation, BOMs, garbage; sent with Content-Length or chunked."""
    path = draw(st.sampled_from(list(PATHS)))
    body = dict(BASE[PATHS[path]])
    if draw(st.booleans()):
        body["stream"] = True
    text = orjson.dumps(body)
    kind = draw(st.sampled_from(["literal", "duplicate", "nesting", "utf8", "cut", "frame"]))
    field = draw(st.sampled_from(READ_FIELDS)).encode()
    if kind == "literal":
        value = draw(st.sampled_from(ODD_LITERALS))
        text = text[:-1] + b',"' + field + b'":' + value + b"}"
    elif kind == "duplicate":
        value = orjson.dumps(draw(field_values))
        dup = b'"' + field + b'":' + value
        text = (
            (b"{" + dup + b"," + text[1:])
            if draw(st.booleans())
            else (text[:-1] + b"," + dup + b"}")
        )
    elif kind == "nesting":
        depth = draw(st.sampled_from([100, 253, 254, 255, 256, 500, 1023, 1024, 1025, 5000]))
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
        inner = b"1" if opener == b"[" else b"null"
        close = closer * depth if draw(st.integers(0, 4)) else closer * (depth // 2)
        text = text[:-1] + b',"' + field + b'":' + opener * depth + inner + close + b"}"
    elif kind == "utf8":
        bad = draw(st.sampled_from(INVALID_UTF8))
        at = text.find(b'"hi"')
        text = (
            text[: at + 1] + bad + text[at + 1 :]
            if at >= 0
            else text[:-1] + b',"x":"' + bad + b'"}'
        )
    elif kind == "cut":
        text = text[: draw(st.integers(0, len(text) - 1))]
    else:
        prefix = draw(st.sampled_from([b"", b"\xef\xbb\xbf", b" \n\t", b"\x00"]))
        suffix = draw(st.sampled_from([b"", b"x", b"}", b"\x00", b",", b" {}", b"\n"]))
        text = prefix + text + suffix
    return path, text, draw(st.booleans())


def test_mangled_json_text(proxy: ProxyHandle, http: httpx.Client) -> None:
    tally = run_fuzz(
        "mangled text",
        500,
        mangled_text(),
        lambda case, tally: post(http, proxy, case[0], case[1], tally, chunked=case[2]),
    )
    assert tally.statuses[400] > 0


@st.composite
def random_documents(draw: st.DrawFn) -> tuple[str, bytes]:
    """Any JSON document at all (objects, arrays, scalars), or raw bytes, or nothing."""
    path = draw(st.sampled_from(list(PATHS)))
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return path, draw(st.binary(max_size=64))
    if kind == 1:
        return path, draw(st.sampled_from([b"", b" ", b"null", b"[]", b"{}", b"0", b'""', b"true"]))
    doc = draw(json_values | st.dictionaries(st.sampled_from(READ_FIELDS), field_values))
    return path, orjson.dumps(doc)


def test_random_documents(proxy: ProxyHandle, http: httpx.Client) -> None:
    run_fuzz(
        "random documents",
        250,
        random_documents(),
        lambda case, tally: post(http, proxy, case[0], case[1], tally),
    )


@st.composite
def sized_bodies(draw: st.DrawFn) -> tuple[str, bytes, bool]:
    """Bodies within a few bytes of limits.max_body_bytes, on either side of it."""
    path = draw(st.sampled_from(list(PATHS)))
    body = dict(BASE[PATHS[path]])
    field = {"chat": "messages", "completions": "prompt", "embeddings": "input"}[PATHS[path]]
    shell = (
        len(orjson.dumps({**body, field: ""}))
        if field != "messages"
        else len(orjson.dumps({**body, "messages": [{"role": "user", "content": ""}]}))
    )
    size = BODY_LIMIT + draw(st.integers(-48, 48))
    filler = draw(st.sampled_from(["a", "é", "\u2603", " "]))
    room = max(0, size - shell)
    width = len(filler.encode())
    text = filler * (room // width) + "a" * (room % width)
    if field == "messages":
        body["messages"] = [{"role": "user", "content": text}]
    else:
        body[field] = text
    return path, orjson.dumps(body), draw(st.booleans())


def test_bodies_at_the_size_limit(proxy: ProxyHandle, http: httpx.Client) -> None:
    def send(case: tuple[str, bytes, bool], tally: Tally) -> None:
        path, body, chunked = case
        before = tally.statuses[413]
        post(http, proxy, path, body, tally, chunked=chunked)
        assert (tally.statuses[413] > before) == (len(body) > BODY_LIMIT), len(body)

    tally = run_fuzz("size limit", 120, sized_bodies(), send)
    assert tally.statuses[413] > 0 and tally.cases > tally.statuses[413]


# Regressions the fuzzer found, pinned as plain examples.


def test_nesting_too_deep_to_forward_is_a_400(proxy: ProxyHandle, http: httpx.Client) -> None:
    """orjson parses 1,024 levels but serialises only 254: the upstream body could not be
    written and the proxy answered 500."""

    def nested(levels: int) -> bytes:
        inner = b"[" * (levels - 1) + b"]" * (levels - 1)  # plus the body object itself
        return (
            b'{"model":"chat","max_tokens":2,"messages":[{"role":"user","content":"hi"}],'
            b'"metadata_extra":' + inner + b"}"
        )

    r = http.post(f"{proxy.base_url}/chat/completions", content=nested(255))
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_body" and "254" in r.json()["error"]["message"]
    assert http.post(f"{proxy.base_url}/chat/completions", content=nested(254)).status_code == 200


@pytest.mark.parametrize("chunk", [BODY_LIMIT + 1, 1000])
def test_chunked_body_over_the_limit_is_a_413(
    proxy: ProxyHandle, http: httpx.Client, chunk: int
) -> None:
    """Without Content-Length the whole body could arrive in one message, which was never
    measured against limits.max_body_bytes."""
    msgs = [{"role": "user", "content": "x" * BODY_LIMIT}]
    body = orjson.dumps({"model": "chat", "max_tokens": 2, "messages": msgs})
    parts = iter([body[i : i + chunk] for i in range(0, len(body), chunk)])
    r = http.post(f"{proxy.base_url}/chat/completions", content=parts)
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "request_too_large"
