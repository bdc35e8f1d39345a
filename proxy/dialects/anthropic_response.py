"""Answers and errors between Anthropic Messages and OpenAI chat completions, both ways.

Usage: OpenAI counts every prompt token in `prompt_tokens`; Anthropic splits them into
`input_tokens` (uncached), `cache_read_input_tokens` and `cache_creation_input_tokens`.
So prompt_tokens = input + cache read + cache creation, `prompt_tokens_details.cached_tokens`
= cache read, and (as LiteLLM does) the two cache counts are also kept as extra usage keys
so the way back, and the meter, lose nothing.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import orjson

from proxy.dialects import TokenUsage, TranslationError
from proxy.dialects import malformed_answer as _malformed
from proxy.request.errors import error_type_for

# Keyed `str | None`: looked up with whatever the upstream sent (absent included).
STOP_TO_FINISH: dict[str | None, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
}
FINISH_TO_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

ThinkingOut = Literal["drop", "pass"]


# -- usage ------------------------------------------------------------------------------
def _count(u: dict[str, Any], key: str) -> int:
    """A token count as the upstream wrote it, or 0 when missing or not an integer."""
    v = u.get(key)
    return v if type(v) is int and v > 0 else 0


def usage_from_anthropic(u: Any) -> TokenUsage:
    u = u if isinstance(u, dict) else {}
    return TokenUsage(
        input_tokens=_count(u, "input_tokens"),
        output_tokens=_count(u, "output_tokens"),
        cache_read_tokens=_count(u, "cache_read_input_tokens"),
        cache_creation_tokens=_count(u, "cache_creation_input_tokens"),
    )


def usage_from_openai(u: Any) -> TokenUsage:
    u = u if isinstance(u, dict) else {}
    details = u.get("prompt_tokens_details")
    read = _count(details, "cached_tokens") if isinstance(details, dict) else 0
    read = read or _count(u, "cache_read_input_tokens")
    write = _count(u, "cache_creation_input_tokens")
    return TokenUsage(
        input_tokens=max(0, _count(u, "prompt_tokens") - read - write),
        output_tokens=_count(u, "completion_tokens"),
        cache_read_tokens=read,
        cache_creation_tokens=write,
    )


_ANTHROPIC_COUNTS = (
    ("input_tokens", "input_tokens"),
    ("output_tokens", "output_tokens"),
    ("cache_read_input_tokens", "cache_read_tokens"),
    ("cache_creation_input_tokens", "cache_creation_tokens"),
)


def update_anthropic_usage(t: TokenUsage, u: Any) -> None:
    """A streamed Anthropic usage (message_start's, message_delta's) into `t`: the counts
    are cumulative, so a later event's value replaces the earlier; non-integers ignored."""
    if not isinstance(u, dict):
        return
    for key, attr in _ANTHROPIC_COUNTS:
        v = u.get(key)
        if type(v) is int and v >= 0:
            setattr(t, attr, v)


def openai_usage(t: TokenUsage) -> dict[str, Any]:
    prompt = t.prompt_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": t.output_tokens,
        "total_tokens": prompt + t.output_tokens,
        "prompt_tokens_details": {"cached_tokens": t.cache_read_tokens},
        "cache_read_input_tokens": t.cache_read_tokens,
        "cache_creation_input_tokens": t.cache_creation_tokens,
    }


def anthropic_usage(t: TokenUsage) -> dict[str, Any]:
    return {
        "input_tokens": t.input_tokens,
        "cache_creation_input_tokens": t.cache_creation_tokens,
        "cache_read_input_tokens": t.cache_read_tokens,
        "output_tokens": t.output_tokens,
    }


# -- answers ----------------------------------------------------------------------------
def anthropic_to_openai_response(
    msg: dict[str, Any], created: int | None = None, thinking: ThinkingOut = "drop"
) -> dict[str, Any]:
    """An Anthropic `message` as an OpenAI `chat.completion` (one choice); an answer not
    of that shape is a 502 `TranslationError`."""
    try:
        return _anthropic_to_openai_response(msg, created, thinking)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise _malformed(exc) from None


def _anthropic_to_openai_response(
    msg: dict[str, Any], created: int | None, thinking: ThinkingOut
) -> dict[str, Any]:
    """An Anthropic `message` as an OpenAI `chat.completion` (one choice). The id and
    model are kept as they are; thinking text goes to vLLM's `reasoning_content` if
    passed."""
    text: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in msg.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            text.append(_string(block.get("text", ""), "text"))
        elif kind == "tool_use":
            calls.append(
                {
                    "id": _string(block.get("id", ""), "id"),
                    "type": "function",
                    "function": {
                        "name": _string(block.get("name", ""), "name"),
                        "arguments": orjson.dumps(block.get("input") or {}).decode(),
                    },
                }
            )
        elif kind == "thinking" and thinking == "pass":
            reasoning.append(_string(block.get("thinking", ""), "thinking"))
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text else None}
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if calls:
        message["tool_calls"] = calls
    stop = msg.get("stop_reason")
    return {
        "id": msg.get("id", ""),
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": msg.get("model", ""),
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": STOP_TO_FINISH.get(stop, stop),
            }
        ],
        "usage": openai_usage(usage_from_anthropic(msg.get("usage"))),
    }


def _string(value: Any, what: str) -> str:
    """A field the other dialect reads as text: anything else from the upstream makes the
    answer malformed (a 502), never a list or number passed on where a client expects text."""
    if not isinstance(value, str):
        raise TypeError(f"{what} is not a string")
    return value


def openai_to_anthropic_response(
    body: dict[str, Any], thinking: ThinkingOut = "drop"
) -> dict[str, Any]:
    """An OpenAI `chat.completion` as an Anthropic `message` (details below); an answer
    not of that shape is a 502 `TranslationError`."""
    try:
        return _openai_to_anthropic_response(body, thinking)
    except TranslationError:
        raise
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise _malformed(exc) from None


def _openai_to_anthropic_response(body: dict[str, Any], thinking: ThinkingOut) -> dict[str, Any]:
    """An OpenAI `chat.completion` as an Anthropic `message`.

    Tool-call arguments that are not a JSON object (a small model's bad JSON) make the
    answer untranslatable: a 502 rather than a tool_use the client cannot parse; except the
    last call of an answer cut off by max_tokens (`finish_reason: length`), which is left
    out: it was never whole, and `stop_reason: max_tokens` says why.
    vLLM's per-choice `stop_reason` (the matched stop string) becomes `stop_sequence`.
    """
    choices = body.get("choices") or [{}]
    choice = choices[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if reasoning and thinking == "pass":
        content.append(
            {"type": "thinking", "thinking": _string(reasoning, "reasoning"), "signature": ""}
        )
    text = message.get("content")
    if text is not None:
        content.append({"type": "text", "text": _string(text, "message.content")})
    calls = message.get("tool_calls") or []
    finish = choice.get("finish_reason")
    for n, call in enumerate(calls, 1):
        fn = call.get("function") or {}
        try:
            args = orjson.loads(fn.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            args = None
        if not isinstance(args, dict):
            if finish == "length" and n == len(calls):
                # The last call was cut off by max_tokens: no input to give, and the
                # stop_reason (max_tokens) tells the client to ask again with more room.
                break
            raise TranslationError(
                "the model's tool call arguments are not a JSON object",
                status=502,
                code="bad_upstream_answer",
            )
        content.append(
            {
                "type": "tool_use",
                "id": _string(call.get("id", ""), "tool_calls.id"),
                "name": _string(fn.get("name", ""), "tool_calls.function.name"),
                "input": args,
            }
        )
    matched = choice.get("stop_reason")
    stop_sequence = matched if finish == "stop" and isinstance(matched, str) else None
    stop = "stop_sequence" if stop_sequence is not None else FINISH_TO_STOP.get(finish, finish)
    return {
        "id": body.get("id", ""),
        "type": "message",
        "role": "assistant",
        "model": body.get("model", ""),
        "content": content,
        "stop_reason": stop,
        "stop_sequence": stop_sequence,
        "usage": anthropic_usage(usage_from_openai(body.get("usage"))),
    }


# -- errors -----------------------------------------------------------------------------
ANTHROPIC_STATUS: dict[str | None, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}
_TYPE_BY_STATUS = {v: k for k, v in ANTHROPIC_STATUS.items() if k is not None}


def anthropic_error_type(status: int) -> str:
    if status in _TYPE_BY_STATUS:
        return _TYPE_BY_STATUS[status]
    if status == 503:
        return "overloaded_error"
    return "api_error" if status >= 500 else "invalid_request_error"


def anthropic_error_body(status: int, message: str, type_: str | None = None) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": type_ or anthropic_error_type(status), "message": message},
    }


def _loads(body: bytes | dict[str, Any]) -> Any:
    if isinstance(body, dict):
        return body
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def anthropic_error_to_openai(status: int, body: bytes | dict[str, Any]) -> dict[str, Any]:
    """Anthropic's `{"type":"error","error":{type,message}}` as OpenAI's error; the
    Anthropic type is kept as the `code` (e.g. `overloaded_error` on a 529)."""
    data = _loads(body)
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        kind = err.get("type") or anthropic_error_type(status)
        message = str(err.get("message", ""))
    else:
        kind = anthropic_error_type(status)
        raw = body if isinstance(body, bytes) else b""
        message = raw[:512].decode("utf-8", "replace") or f"upstream error {status}"
    return {
        "error": {"message": message, "type": error_type_for(status), "param": None, "code": kind}
    }


def openai_error_to_anthropic(status: int, body: bytes | dict[str, Any]) -> dict[str, Any]:
    """OpenAI's (or vLLM's, nested or flat) error as Anthropic's, typed by status."""
    data = _loads(body)
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        message = str(err.get("message", ""))
    elif isinstance(data, dict) and isinstance(data.get("message"), str):
        message = data["message"]  # vLLM's flat shape
    elif isinstance(err, str):
        message = err
    else:
        raw = body if isinstance(body, bytes) else b""
        message = raw[:512].decode("utf-8", "replace") or f"upstream error {status}"
    return anthropic_error_body(status, message)
