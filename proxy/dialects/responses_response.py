"""Answers in the Responses API's shape: an OpenAI chat completion as a `response` object,
usage both ways, errors, and the fields a response echoes from its request.

The output items (`response["output"]`) are what the route stores for a later
`previous_response_id`: `responses_to_chat` takes them back as `history`.
"""

from __future__ import annotations

from typing import Any

from proxy.dialects import TokenUsage
from proxy.dialects import malformed_answer as _malformed
from proxy.dialects.anthropic_response import usage_from_openai

# What a response echoes of its request, with OpenAI's defaults for those not given.
ECHO_DEFAULTS: dict[str, Any] = {
    "instructions": None,
    "max_output_tokens": None,
    "metadata": {},
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "reasoning": {"effort": None, "summary": None},
    "store": True,
    "temperature": 1.0,
    "text": {"format": {"type": "text"}},
    "tool_choice": "auto",
    "tools": [],
    "top_p": 1.0,
    "truncation": "disabled",
    "user": None,
    "background": False,
    "service_tier": "auto",
}

# chat finish_reason → (status, incomplete_details.reason)
FINISH_STATUS: dict[str | None, tuple[str, str | None]] = {
    "stop": ("completed", None),
    "tool_calls": ("completed", None),
    "function_call": ("completed", None),
    "length": ("incomplete", "max_output_tokens"),
    "content_filter": ("incomplete", "content_filter"),
}


def response_echo(body: dict[str, Any]) -> dict[str, Any]:
    """The request fields a response object repeats (the client's values, else defaults)."""
    out = dict(ECHO_DEFAULTS)
    for key in ECHO_DEFAULTS:
        value = body.get(key)
        if value is not None:
            out[key] = value
    out["model"] = body.get("model", "")
    return out


def response_ids(response_id: str) -> str:
    """The id's unique part, from which the output items' ids are made."""
    return response_id[5:] if response_id.startswith("resp_") else response_id


# -- usage --------------------------------------------------------------------------------
def _count(u: Any, key: str) -> int:
    v = u.get(key) if isinstance(u, dict) else None
    return v if type(v) is int and v > 0 else 0


def usage_from_chat(u: Any) -> TokenUsage:
    """A chat answer's usage, with its reasoning tokens (part of the output tokens)."""
    t = usage_from_openai(u)
    if isinstance(u, dict):
        t.reasoning_tokens = _count(u.get("completion_tokens_details"), "reasoning_tokens")
    return t


def usage_from_responses(u: Any) -> TokenUsage:
    """A Responses `usage` (a native answer's, or `response.completed`'s): input_tokens
    counts every prompt token, cached (read) and cache writes among them."""
    u = u if isinstance(u, dict) else {}
    details = u.get("input_tokens_details")
    read = _count(details, "cached_tokens")
    write = _count(details, "cache_write_tokens")
    return TokenUsage(
        input_tokens=max(0, _count(u, "input_tokens") - read - write),
        output_tokens=_count(u, "output_tokens"),
        cache_read_tokens=read,
        cache_creation_tokens=write,
        reasoning_tokens=_count(u.get("output_tokens_details"), "reasoning_tokens"),
    )


def responses_usage(t: TokenUsage) -> dict[str, Any]:
    prompt = t.prompt_tokens
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": t.cache_read_tokens,
            "cache_write_tokens": t.cache_creation_tokens,
        },
        "output_tokens": t.output_tokens,
        "output_tokens_details": {"reasoning_tokens": t.reasoning_tokens},
        "total_tokens": prompt + t.output_tokens,
    }


# -- items --------------------------------------------------------------------------------
def message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [text_part(text)],
    }


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def reasoning_item(item_id: str, text: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "reasoning",
        "summary": [],
        "content": [{"type": "reasoning_text", "text": text}],
        "status": "completed",
    }


def call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def response_object(
    response_id: str,
    created_at: int,
    echo: dict[str, Any],
    *,
    model: str,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    incomplete: str | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    out = {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "error": error,
        "incomplete_details": None if incomplete is None else {"reason": incomplete},
        **echo,
        "model": model or echo.get("model", ""),
        "output": output,
        "usage": usage,
    }
    return out


# -- answers ------------------------------------------------------------------------------
def chat_to_response(
    body: dict[str, Any],
    response_id: str,
    created_at: int,
    echo: dict[str, Any],
    thinking: str = "drop",
) -> dict[str, Any]:
    """A chat completion as a Responses `response` object; one not of that shape is a 502
    `TranslationError`.

    Output items, in order: the reasoning (vLLM's `reasoning_content`, with thinking
    "pass"), the message (when the model said something, or said nothing and called
    nothing), the function calls. finish_reason length / content_filter → status
    `incomplete` with its reason; the last call of an answer cut off is `incomplete` too.
    """
    try:
        return _chat_to_response(body, response_id, created_at, echo, thinking)
    except (AttributeError, KeyError, TypeError, ValueError, IndexError) as exc:
        raise _malformed(exc) from None


def _chat_to_response(
    body: dict[str, Any], response_id: str, created_at: int, echo: dict[str, Any], thinking: str
) -> dict[str, Any]:
    choices = body.get("choices") or [{}]
    choice = choices[0]
    message = choice.get("message") or {}
    finish = choice.get("finish_reason")
    status, reason = FINISH_STATUS.get(finish, ("completed", None))
    base = response_ids(response_id)
    output: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if reasoning and thinking == "pass":
        output.append(reasoning_item(f"rs_{base}_{len(output)}", str(reasoning)))
    text = message.get("content")
    if text is not None and not isinstance(text, str):
        raise TypeError("message.content is not a string")
    calls = message.get("tool_calls") or []
    if text or not calls:  # the last item carries the answer's incompleteness
        said = status if not calls else "completed"
        output.append(message_item(f"msg_{base}_{len(output)}", text or "", said))
    for n, call in enumerate(calls, 1):
        fn = call.get("function") or {}
        args = fn.get("arguments")
        cut = status == "incomplete" and n == len(calls)
        i = len(output)
        output.append(
            call_item(
                f"fc_{base}_{i}",
                str(call.get("id") or f"call_{base}_{i}"),
                str(fn.get("name", "")),
                args if isinstance(args, str) else "",
                "incomplete" if cut else "completed",
            )
        )
    raw_usage = body.get("usage")
    usage = responses_usage(usage_from_chat(raw_usage)) if isinstance(raw_usage, dict) else None
    model = body.get("model")
    return response_object(
        response_id,
        created_at,
        echo,
        model=model if isinstance(model, str) else "",
        status=status,
        output=output,
        usage=usage,
        incomplete=reason,
    )


# -- errors -------------------------------------------------------------------------------
def stream_error_code(status: int) -> str:
    """The `response.error.code` of a failed response (the API's codes are few)."""
    return "rate_limit_exceeded" if status == 429 else "server_error"
