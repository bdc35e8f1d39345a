"""Test support for the dialect translations: hypothesis strategies for canonical requests
and answers of both dialects, stream makers (an answer as the upstream would stream it)
and stream readers (the chunks put back together as the SDKs do)."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
from hypothesis import strategies as st

text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=24)
nonempty = text.filter(bool)
_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
name = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12)
tool_id = st.builds(
    lambda p, s: p + s,
    st.sampled_from(["call_", "toolu_"]),
    st.text(_ALNUM, min_size=4, max_size=12),
)
json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(name, inner, max_size=3),
    max_leaves=6,
)
json_object = st.dictionaries(name, json_value, max_size=4)
schema = st.fixed_dictionaries(
    {
        "type": st.just("object"),
        "properties": st.dictionaries(name, st.just({"type": "string"}), max_size=3),
    }
)
image_url = st.one_of(
    st.builds(
        lambda d: f"data:image/png;base64,{d}",
        st.text(_ALNUM + "+/", min_size=4, max_size=16),
    ),
    st.builds(lambda p: f"https://example.com/{p}.png", name),
)


# -- OpenAI chat requests (canonical: what the translation maps one to one) ----------------
@st.composite
def openai_request(draw: st.DrawFn) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": s} for s in draw(st.lists(text, max_size=2))
    ]
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["user_text", "user_parts", "assistant", "tool_round"]))
        if kind == "user_text":
            messages.append({"role": "user", "content": draw(text)})
        elif kind == "user_parts":
            parts = draw(
                st.lists(
                    st.one_of(
                        st.builds(lambda t: {"type": "text", "text": t}, text),
                        st.builds(
                            lambda u: {"type": "image_url", "image_url": {"url": u}}, image_url
                        ),
                    ),
                    min_size=1,
                    max_size=3,
                )
            )
            messages.append({"role": "user", "content": parts})
        elif kind == "assistant":
            messages.append({"role": "assistant", "content": draw(text)})
        else:
            ids = draw(st.lists(tool_id, min_size=1, max_size=3, unique=True))
            calls = [
                {
                    "id": i,
                    "type": "function",
                    "function": {
                        "name": draw(name),
                        "arguments": orjson.dumps(draw(json_object)).decode(),
                    },
                }
                for i in ids
            ]
            messages.append(
                {"role": "assistant", "content": draw(st.none() | nonempty), "tool_calls": calls}
            )
            for i in ids:
                messages.append({"role": "tool", "tool_call_id": i, "content": draw(text)})
            messages.append({"role": "user", "content": draw(text)})
    body: dict[str, Any] = {
        "model": draw(name),
        "messages": messages,
        "max_tokens": draw(st.integers(1, 4096)),
    }
    if draw(st.booleans()):
        body["stop"] = draw(st.lists(nonempty, min_size=1, max_size=3))
    if draw(st.booleans()):
        body["temperature"] = draw(st.floats(0, 1))
    if draw(st.booleans()):
        body["top_p"] = draw(st.floats(0, 1))
    if draw(st.booleans()):
        body["stream"] = draw(st.booleans())
    if draw(st.booleans()):
        tools = draw(st.lists(name, min_size=1, max_size=3, unique=True))
        body["tools"] = [
            {
                "type": "function",
                "function": {"name": n, "description": draw(text), "parameters": draw(schema)},
            }
            for n in tools
        ]
        body["tool_choice"] = draw(
            st.sampled_from(
                ["auto", "none", "required", {"type": "function", "function": {"name": tools[0]}}]
            )
        )
        if draw(st.booleans()) and body["tool_choice"] != "none":
            body["parallel_tool_calls"] = False
    if draw(st.booleans()):
        body["user"] = draw(name)
    return body


def normal_openai(body: dict[str, Any]) -> dict[str, Any]:
    """What an OpenAI request comes back as after a round trip through Anthropic: the
    same, with the ways of saying one thing reduced to one (the stream asks for usage)."""
    out = dict(body)
    if out.get("stream"):
        out["stream_options"] = {"include_usage": True}
    if isinstance(out.get("stop"), str):
        out["stop"] = [out["stop"]]
    if out.get("parallel_tool_calls") is False and "tool_choice" not in out:
        out["tool_choice"] = "auto"
    msgs: list[dict[str, Any]] = []
    for m in out["messages"]:
        m = dict(m)
        if m["role"] == "assistant" and "tool_calls" in m:
            m["content"] = m.get("content") or None
        after_tool = m["role"] == "user" and msgs and msgs[-1]["role"] == "tool"
        if after_tool and isinstance(m["content"], str):
            # It shares the tool results' Anthropic user turn, as a text block.
            m["content"] = [{"type": "text", "text": m["content"]}]
        msgs.append(m)
    out["messages"] = msgs
    return out


# -- Anthropic requests (canonical) ------------------------------------------------------
@st.composite
def anthropic_request(draw: st.DrawFn) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["user_text", "user_blocks", "assistant", "tool_round"]))
        if kind == "user_text":
            messages.append({"role": "user", "content": draw(text)})
        elif kind == "user_blocks":
            blocks = draw(
                st.lists(
                    st.one_of(
                        st.builds(lambda t: {"type": "text", "text": t}, text),
                        st.builds(
                            lambda d: {
                                "type": "image",
                                "source": {"type": "base64", "media_type": "image/jpeg", "data": d},
                            },
                            st.text(_ALNUM, min_size=4, max_size=12),
                        ),
                        st.builds(
                            lambda u: {"type": "image", "source": {"type": "url", "url": u}},
                            st.builds(lambda p: f"https://example.com/{p}.jpg", name),
                        ),
                    ),
                    min_size=1,
                    max_size=3,
                )
            )
            messages.append({"role": "user", "content": blocks})
        elif kind == "assistant":
            messages.append({"role": "assistant", "content": draw(text)})
        else:
            ids = draw(st.lists(tool_id, min_size=1, max_size=3, unique=True))
            blocks = [{"type": "text", "text": draw(nonempty)}] if draw(st.booleans()) else []
            blocks += [
                {"type": "tool_use", "id": i, "name": draw(name), "input": draw(json_object)}
                for i in ids
            ]
            messages.append({"role": "assistant", "content": blocks})
            results: list[dict[str, Any]] = [
                {"type": "tool_result", "tool_use_id": i, "content": draw(text)} for i in ids
            ]
            if draw(st.booleans()):
                results.append({"type": "text", "text": draw(text)})
            messages.append({"role": "user", "content": results})
    body: dict[str, Any] = {
        "model": draw(name),
        "max_tokens": draw(st.integers(1, 4096)),
        "messages": messages,
    }
    system = draw(
        st.none()
        | text
        | st.lists(st.builds(lambda t: {"type": "text", "text": t}, text), min_size=2, max_size=3)
    )
    if system is not None:
        body["system"] = system
    if draw(st.booleans()):
        body["stop_sequences"] = draw(st.lists(nonempty, min_size=1, max_size=3))
    for key in ("temperature", "top_p"):
        if draw(st.booleans()):
            body[key] = draw(st.floats(0, 1))
    if draw(st.booleans()):
        body["top_k"] = draw(st.integers(1, 100))
    if draw(st.booleans()):
        body["stream"] = draw(st.booleans())
    if draw(st.booleans()):
        tools = draw(st.lists(name, min_size=1, max_size=3, unique=True))
        body["tools"] = [
            {"name": n, "description": draw(text), "input_schema": draw(schema)} for n in tools
        ]
        choice = draw(
            st.sampled_from(
                [
                    {"type": "auto"},
                    {"type": "any"},
                    {"type": "none"},
                    {"type": "tool", "name": tools[0]},
                ]
            )
        )
        if choice["type"] != "none" and draw(st.booleans()):
            choice["disable_parallel_tool_use"] = True
        body["tool_choice"] = choice
    if draw(st.booleans()):
        body["metadata"] = {"user_id": draw(name)}
    return body


# -- answers ---------------------------------------------------------------------------------
usage_counts = st.tuples(*(st.integers(0, 100_000) for _ in range(4)))


@st.composite
def anthropic_message(draw: st.DrawFn) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if draw(st.booleans()):
        content.append({"type": "text", "text": draw(text)})
    for i in draw(st.lists(tool_id, max_size=3, unique=True)):
        content.append(
            {"type": "tool_use", "id": i, "name": draw(name), "input": draw(json_object)}
        )
    stop = draw(st.sampled_from(["end_turn", "max_tokens", "tool_use"]))
    inp, out, read, write = draw(usage_counts)
    return {
        "id": "msg_" + draw(name),
        "type": "message",
        "role": "assistant",
        "model": draw(name),
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {
            "input_tokens": inp,
            "cache_creation_input_tokens": write,
            "cache_read_input_tokens": read,
            "output_tokens": out,
        },
    }


@st.composite
def openai_completion(draw: st.DrawFn) -> dict[str, Any]:
    calls = [
        {
            "id": i,
            "type": "function",
            "function": {"name": draw(name), "arguments": orjson.dumps(draw(json_object)).decode()},
        }
        for i in draw(st.lists(tool_id, max_size=3, unique=True))
    ]
    message: dict[str, Any] = {"role": "assistant", "content": draw(st.none() | text)}
    if calls:
        message["tool_calls"] = calls
    finish = draw(st.sampled_from(["stop", "length", "tool_calls", "content_filter"]))
    prompt_extra, completion, read, write = draw(usage_counts)
    prompt = prompt_extra + read + write
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": read},
        "cache_read_input_tokens": read,
        "cache_creation_input_tokens": write,
    }
    return {
        "id": "chatcmpl-" + draw(name),
        "object": "chat.completion",
        "created": 1700000000,
        "model": draw(name),
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": usage,
    }


def _pieces(s: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(s) + 1) for c in cuts} | {0, len(s)})
    return [s[a:b] for a, b in itertools.pairwise(points)] or [""]


def _aev(name: str, body: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(body) + b"\n\n"


def anthropic_sse(msg: dict[str, Any], cuts: list[int]) -> bytes:
    """The message as Anthropic streams it: text and tool input in pieces cut at `cuts`."""
    u = msg["usage"]
    start = {**msg, "content": [], "stop_reason": None, "usage": {**u, "output_tokens": 1}}
    out = [
        _aev("message_start", {"type": "message_start", "message": start}),
        b'event: ping\ndata: {"type": "ping"}\n\n',
    ]
    for i, b in enumerate(msg["content"]):
        if b["type"] == "text":
            out.append(
                _aev(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": i,
                        "content_block": {"type": "text", "text": ""},
                    },
                )
            )
            for p in _pieces(b["text"], cuts):
                out.append(
                    _aev(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": i,
                            "delta": {"type": "text_delta", "text": p},
                        },
                    )
                )
        else:
            out.append(
                _aev(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": i,
                        "content_block": {**b, "input": {}},
                    },
                )
            )
            for p in _pieces(orjson.dumps(b["input"]).decode(), cuts):
                out.append(
                    _aev(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": i,
                            "delta": {"type": "input_json_delta", "partial_json": p},
                        },
                    )
                )
        out.append(_aev("content_block_stop", {"type": "content_block_stop", "index": i}))
    out.append(
        _aev(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": msg["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": u["output_tokens"]},
            },
        )
    )
    out.append(_aev("message_stop", {"type": "message_stop"}))
    return b"".join(out)


def openai_sse(body: dict[str, Any], cuts: list[int]) -> bytes:
    """The completion as OpenAI streams it (with include_usage), pieces cut at `cuts`."""
    head = {
        "id": body["id"],
        "object": "chat.completion.chunk",
        "created": body["created"],
        "model": body["model"],
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        c = {
            **head,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        return b"data: " + orjson.dumps(c) + b"\n\n"

    choice = body["choices"][0]
    msg = choice["message"]
    out = [chunk({"role": "assistant", "content": ""})]
    if msg.get("content"):
        out += [chunk({"content": p}) for p in _pieces(msg["content"], cuts)]
    for i, call in enumerate(msg.get("tool_calls") or ()):
        fn = call["function"]
        out.append(
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": i,
                            "id": call["id"],
                            "type": "function",
                            "function": {"name": fn["name"], "arguments": ""},
                        }
                    ]
                }
            )
        )
        out += [
            chunk({"tool_calls": [{"index": i, "function": {"arguments": p}}]})
            for p in _pieces(fn["arguments"], cuts)
        ]
    out.append(chunk({}, choice["finish_reason"]))
    out.append(b"data: " + orjson.dumps({**head, "choices": [], "usage": body["usage"]}) + b"\n\n")
    out.append(b"data: [DONE]\n\n")
    return b"".join(out)


def _events(raw: bytes) -> list[bytes]:
    out = []
    for event in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
        data = [ln[5:].strip() for ln in event.split(b"\n") if ln.startswith(b"data:")]
        if data:
            out.append(b"\n".join(data))
    return out


def read_openai_stream(raw: bytes) -> dict[str, Any]:
    """OpenAI chunks put back together as the openai SDK's stream helper does."""
    message: dict[str, Any] = {"role": None, "content": None}
    calls: dict[int, dict[str, Any]] = {}
    result: dict[str, Any] = {"finish_reason": None, "usage": None, "done": False, "chunks": 0}
    for data in _events(raw):
        if data == b"[DONE]":
            result["done"] = True
            continue
        c = orjson.loads(data)
        result["chunks"] += 1
        result["id"], result["model"] = c["id"], c["model"]
        if c.get("usage"):
            result["usage"] = c["usage"]
        for ch in c["choices"]:
            d = ch["delta"]
            if d.get("role"):
                message["role"] = d["role"]
            if d.get("content") is not None:
                message["content"] = (message["content"] or "") + d["content"]
            for tc in d.get("tool_calls") or ():
                slot = calls.setdefault(
                    tc["index"],
                    {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
                )
                if tc.get("id"):
                    slot["id"] = tc["id"]
                fn = tc.get("function") or {}
                slot["function"]["name"] += fn.get("name") or ""
                slot["function"]["arguments"] += fn.get("arguments") or ""
            if ch.get("finish_reason"):
                result["finish_reason"] = ch["finish_reason"]
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    result["message"] = message
    return result


def read_anthropic_stream(raw: bytes) -> dict[str, Any]:
    """Anthropic events put back together as the anthropic SDK's accumulator does; also
    the list of event types, to check the sequence."""
    msg: dict[str, Any] = {}
    json_bufs: dict[int, str] = {}
    types: list[str] = []
    for data in _events(raw):
        ev = orjson.loads(data)
        types.append(ev["type"])
        if ev["type"] == "message_start":
            msg = ev["message"]
        elif ev["type"] == "content_block_start":
            assert ev["index"] == len(msg["content"])
            msg["content"].append(dict(ev["content_block"]))
        elif ev["type"] == "content_block_delta":
            block = msg["content"][ev["index"]]
            d = ev["delta"]
            if d["type"] == "text_delta":
                block["text"] += d["text"]
            elif d["type"] == "input_json_delta":
                json_bufs[ev["index"]] = json_bufs.get(ev["index"], "") + d["partial_json"]
        elif ev["type"] == "content_block_stop":
            if ev["index"] in json_bufs:
                msg["content"][ev["index"]]["input"] = orjson.loads(json_bufs[ev["index"]] or "{}")
        elif ev["type"] == "message_delta":
            msg["stop_reason"] = ev["delta"]["stop_reason"]
            msg["stop_sequence"] = ev["delta"]["stop_sequence"]
            for k, v in ev["usage"].items():
                if v is not None:
                    msg["usage"][k] = v
    return {"message": msg, "types": types}


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def normal_anthropic(body: dict[str, Any]) -> dict[str, Any]:
    """What an Anthropic request comes back as after a round trip through OpenAI: a user
    turn right after a turn of tool results joins it (Anthropic combines consecutive user
    turns itself, so this is the same request)."""
    msgs: list[dict[str, Any]] = []
    for m in body["messages"]:
        prev = msgs[-1] if msgs else None
        joins = (
            m["role"] == "user"
            and prev is not None
            and prev["role"] == "user"
            and isinstance(prev["content"], list)
            and any(b["type"] == "tool_result" for b in prev["content"])
            and prev["content"][-1]["type"] == "tool_result"
        )
        if joins:
            assert prev is not None
            extra = m["content"]
            if isinstance(extra, str):
                extra = [{"type": "text", "text": extra}]
            msgs[-1] = {**prev, "content": [*prev["content"], *extra]}
        else:
            msgs.append(m)
    return {**body, "messages": msgs}


# -- the Responses API -------------------------------------------------------------------
def chat_to_responses_request(body: dict[str, Any]) -> dict[str, Any]:
    """A canonical chat request said in the Responses API (test-side inverse of
    responses_to_chat): messages as input items, flat function tools."""
    items: list[dict[str, Any]] = []
    for m in body["messages"]:
        role = m["role"]
        if role == "system":
            items.append({"type": "message", "role": "system", "content": m["content"]})
        elif role == "user":
            content = m["content"]
            if isinstance(content, list):
                content = [
                    {"type": "input_text", "text": p["text"]}
                    if p["type"] == "text"
                    else {"type": "input_image", "image_url": p["image_url"]["url"]}
                    for p in content
                ]
            items.append({"role": "user", "content": content})
        elif role == "assistant":
            if m.get("content") is not None:
                items.append(
                    {
                        "type": "message",
                        "role": "assistant",
                        "content": [
                            {"type": "output_text", "text": m["content"], "annotations": []}
                        ],
                    }
                )
            for call in m.get("tool_calls") or ():
                items.append(
                    {
                        "type": "function_call",
                        "call_id": call["id"],
                        "name": call["function"]["name"],
                        "arguments": call["function"]["arguments"],
                    }
                )
        else:
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": m["tool_call_id"],
                    "output": m["content"],
                }
            )
    out: dict[str, Any] = {"model": body["model"], "input": items}
    out["max_output_tokens"] = body["max_tokens"]
    for key in ("temperature", "top_p", "stream", "parallel_tool_calls", "user"):
        if key in body:
            out[key] = body[key]
    if "tools" in body:
        out["tools"] = [{"type": "function", **t["function"]} for t in body["tools"]]
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        choice = {"type": "function", "name": choice["function"]["name"]}
    if choice is not None:
        out["tool_choice"] = choice
    return out


def normal_chat_from_responses(body: dict[str, Any]) -> dict[str, Any]:
    """What a chat request comes back as after a trip through the Responses API: no stop
    (Responses has none), the stream asks for usage, and an assistant turn's calls join its
    text when the two were separate messages (one turn either way)."""
    out = {k: v for k, v in body.items() if k != "stop"}
    if out.get("stream"):
        out["stream_options"] = {"include_usage": True}
    elif "stream" in out:
        del out["stream"]
    msgs: list[dict[str, Any]] = []
    for m in out["messages"]:
        prev = msgs[-1] if msgs else None
        if (
            m["role"] == "assistant"
            and m.get("tool_calls")
            and m.get("content") is None
            and prev is not None
            and prev["role"] == "assistant"
        ):
            merged = {**prev, "tool_calls": [*(prev.get("tool_calls") or ()), *m["tool_calls"]]}
            merged["content"] = prev["content"] or None
            msgs[-1] = merged
        elif m["role"] == "assistant" and m.get("tool_calls"):
            msgs.append({**m, "content": m.get("content") or None})
        else:
            msgs.append(m)
    out["messages"] = msgs
    return out


def read_responses_stream(raw: bytes) -> list[dict[str, Any]]:
    """The Responses events of a stream (each `event:` line checked against its type)."""
    out = []
    for event in raw.split(b"\n\n"):
        if not event:
            continue
        head, _, data = event.partition(b"\n")
        assert head.startswith(b"event: ") and data.startswith(b"data: "), event
        ev = orjson.loads(data[6:])
        assert ev["type"] == head[7:].decode()
        out.append(ev)
    return out
