"""Requests between OpenAI chat completions and Anthropic Messages, both ways.

Every top-level field of the source dialect is in exactly one of: mapped, dropped
(documented: it has no counterpart and losing it changes nothing the client relies on)
or refused with a `TranslationError` naming the field. Unknown fields are refused,
as OpenAI and Anthropic themselves do. docs/dialects.md has the table.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson

from proxy.dialects import TranslationError

# -- OpenAI chat → Anthropic Messages -------------------------------------------------

# Mapped by `openai_chat_to_anthropic` (some only when their value is neutral).
OPENAI_MAPPED = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "top_k",
        "stop",
        "stream",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "user",
    }
)
# Dropped: no Anthropic counterpart, and the answer means the same without them.
OPENAI_DROPPED = frozenset(
    {
        "stream_options",  # read by the caller: it decides whether the usage chunk is sent
        "metadata",  # OpenAI's stored-completion tags; Anthropic's metadata is user_id only
        "store",  # OpenAI-side storage of the completion
        "service_tier",  # a different tier vocabulary; the target's default applies
        "seed",  # best-effort determinism; Anthropic has none to offer
    }
)
# Accepted only at their neutral value; anything else is refused.
_NEUTRAL: dict[str, Any] = {
    "n": (None, 1),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "presence_penalty": (None, 0, 0.0),
    "frequency_penalty": (None, 0, 0.0),
    "logit_bias": (None,),
    "modalities": (None,),
    "audio": (None,),
    "prediction": (None,),
    "reasoning_effort": (None,),
    "functions": (None,),
    "function_call": (None,),
    "web_search_options": (None,),
    "response_format": (None,),
}
_REFUSAL_REASON = {
    "n": "Anthropic models return one choice per request; n must be 1",
    "logprobs": "Anthropic models do not return log probabilities",
    "top_logprobs": "Anthropic models do not return log probabilities",
    "presence_penalty": "Anthropic models have no presence penalty",
    "frequency_penalty": "Anthropic models have no frequency penalty",
    "logit_bias": "Anthropic models take no logit bias",
    "modalities": "only text output is supported for this model",
    "audio": "audio output is not supported for this model",
    "prediction": "predicted outputs are not supported for this model",
    "reasoning_effort": "reasoning_effort is not supported for this model",
    "functions": "the deprecated 'functions' are not supported: use 'tools'",
    "function_call": "the deprecated 'function_call' is not supported: use 'tool_choice'",
    "web_search_options": "web search is not supported for this model",
    "response_format": "only response_format {'type': 'text'} is supported for this model",
}


def _refuse(param: str, reason: str) -> TranslationError:
    return TranslationError(f"Unsupported parameter '{param}': {reason}.", param)


_NUMBER = (int, float)
# The JSON type each mapped field must have (None always allowed): a wrong one is the
# client's 400 with the field's name, never an exception from inside the translation.
_OPENAI_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "model": ((str,), "a string"),
    "messages": ((list,), "an array"),
    "max_tokens": ((int,), "an integer"),
    "max_completion_tokens": ((int,), "an integer"),
    "temperature": (_NUMBER, "a number"),
    "top_p": (_NUMBER, "a number"),
    "top_k": ((int,), "an integer"),
    "stop": ((str, list), "a string or a list of strings"),
    "stream": ((bool,), "a boolean"),
    "tools": ((list,), "an array"),
    "tool_choice": ((str, dict), "a string or an object"),
    "parallel_tool_calls": ((bool,), "a boolean"),
    "user": ((str,), "a string"),
}
_ANTHROPIC_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "model": ((str,), "a valid string"),
    "messages": ((list,), "a valid list"),
    "max_tokens": ((int,), "a valid integer"),
    "system": ((str, list), "a valid string or list"),
    "stop_sequences": ((list,), "a valid list of strings"),
    "stream": ((bool,), "a valid boolean"),
    "temperature": (_NUMBER, "a valid number"),
    "top_p": (_NUMBER, "a valid number"),
    "top_k": ((int,), "a valid integer"),
    "tools": ((list,), "a valid list"),
    "tool_choice": ((dict,), "a valid dictionary"),
    "metadata": ((dict,), "a valid dictionary"),
    "thinking": ((dict,), "a valid dictionary"),
}


def _check_types(body: dict[str, Any], types: dict[str, tuple[tuple[type, ...], str]]) -> None:
    for key, (kinds, what) in types.items():
        value = body.get(key)
        if value is None:
            continue
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if ok and key in ("stop", "stop_sequences") and isinstance(value, list):
            ok = all(isinstance(v, str) for v in value)
        if not ok:
            raise TranslationError(
                f"Invalid type for '{key}': expected {what}.", key, code="invalid_type"
            )


def _obj(value: Any, param: str) -> dict[str, Any]:
    """An optional nested object: {} when absent, a 400 naming it when not an object."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TranslationError("expected an object", param, code="invalid_type")
    return value


def _neutral(key: str, value: Any) -> bool:
    if key == "response_format":
        return value is None or value == {"type": "text"}
    if key == "modalities":
        return value is None or value == ["text"]
    if key == "logit_bias":
        return not value
    return any(value is v or (v is not None and value == v) for v in _NEUTRAL[key])


def _text_of(content: Any, param: str) -> str:
    """A system/developer/tool content: a string or a list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text":
                raise _refuse(f"{param}[{j}]", "only text parts are supported here")
            out.append(str(part.get("text", "")))
        return "".join(out)
    raise TranslationError("content must be a string or a list of parts", param)


def _image_block(part: dict[str, Any], param: str) -> dict[str, Any]:
    spec = part.get("image_url")
    url = spec.get("url") if isinstance(spec, dict) else spec
    if not isinstance(url, str):
        raise TranslationError("image_url.url must be a string", f"{param}.image_url")
    if url.startswith("data:"):
        head, sep, data = url.partition(",")
        if not sep or not head.endswith(";base64"):
            raise _refuse(f"{param}.image_url", "a data URL must be base64-encoded")
        media = head[5 : -len(";base64")]
        return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise _refuse(f"{param}.image_url", "the URL must be http(s) or a base64 data URL")


def _user_content(content: Any, param: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise TranslationError("content must be a string or a list of parts", param)
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            blocks.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "image_url":
            blocks.append(_image_block(part, f"{param}[{j}]"))
        else:
            raise _refuse(f"{param}[{j}]", f"content part type {kind!r} is not supported")
    return blocks


def _tool_use(call: Any, param: str) -> dict[str, Any]:
    if not isinstance(call, dict) or call.get("type", "function") != "function":
        raise _refuse(param, "only function tool calls are supported")
    fn = _obj(call.get("function"), f"{param}.function")
    raw = fn.get("arguments") or "{}"
    try:
        args = orjson.loads(raw) if isinstance(raw, str) else None
    except orjson.JSONDecodeError:
        args = None
    if not isinstance(args, dict):
        raise TranslationError(
            "tool call arguments must be a JSON object", f"{param}.function.arguments"
        )
    return {
        "type": "tool_use",
        "id": str(call.get("id", "")),
        "name": str(fn.get("name", "")),
        "input": args,
    }


def _messages_to_anthropic(
    messages: Any,
) -> tuple[list[str], list[dict[str, Any]]]:
    if not isinstance(messages, list) or not messages:
        raise TranslationError("messages must be a non-empty list", "messages")
    system: list[str] = []
    out: list[dict[str, Any]] = []
    results: list[dict[str, Any]] | None = None  # the open user turn of tool results
    for i, m in enumerate(messages):
        param = f"messages[{i}]"
        if not isinstance(m, dict):
            raise TranslationError("each message must be an object", param)
        role = m.get("role")
        open_results = results
        if role != "tool":
            results = None
        if role in ("system", "developer"):
            system.append(_text_of(m.get("content"), f"{param}.content"))
        elif role == "user":
            content = _user_content(m.get("content"), param + ".content")
            if open_results is not None:  # one user turn: the tool results, then the text
                if isinstance(content, str):
                    content = [{"type": "text", "text": content}]
                open_results.extend(content)
            else:
                out.append({"role": "user", "content": content})
        elif role == "assistant":
            said = m.get("content")
            calls = m.get("tool_calls") or []
            if not isinstance(calls, list):
                raise TranslationError("tool_calls must be an array", f"{param}.tool_calls")
            if m.get("refusal") is not None:
                raise _refuse(f"{param}.refusal", "assistant refusals cannot be replayed")
            text = None if said is None else _text_of(said, f"{param}.content")
            if not calls:
                out.append({"role": "assistant", "content": text or ""})
                continue
            blocks: list[dict[str, Any]] = []
            if text:
                blocks.append({"type": "text", "text": text})
            for j, call in enumerate(calls):
                blocks.append(_tool_use(call, f"{param}.tool_calls[{j}]"))
            out.append({"role": "assistant", "content": blocks})
        elif role == "tool":
            block = {
                "type": "tool_result",
                "tool_use_id": str(m.get("tool_call_id", "")),
                "content": _text_of(m.get("content"), f"{param}.content"),
            }
            if results is None:
                results = []
                out.append({"role": "user", "content": results})
            results.append(block)
        else:
            raise _refuse(f"{param}.role", f"message role {role!r} is not supported")
    return system, out


def _tools_to_anthropic(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise TranslationError("tools must be a list", "tools")
    out = []
    for i, t in enumerate(tools):
        if not isinstance(t, dict) or t.get("type", "function") != "function":
            raise _refuse(f"tools[{i}]", "only function tools are supported")
        fn = _obj(t.get("function"), f"tools[{i}].function")
        tool: dict[str, Any] = {"name": str(fn.get("name", ""))}
        if fn.get("description") is not None:
            tool["description"] = fn["description"]
        tool["input_schema"] = fn.get("parameters") or {"type": "object", "properties": {}}
        out.append(tool)
    return out


def _tool_choice_to_anthropic(choice: Any) -> dict[str, Any]:
    if choice == "auto":
        return {"type": "auto"}
    if choice == "none":
        return {"type": "none"}
    if choice == "required":
        return {"type": "any"}
    if isinstance(choice, dict) and choice.get("type") == "function":
        fn = choice.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
        if isinstance(name, str):
            return {"type": "tool", "name": name}
    raise _refuse("tool_choice", "use auto, none, required or a named function")


def openai_chat_to_anthropic(body: dict[str, Any], default_max_tokens: int) -> dict[str, Any]:
    """An OpenAI chat completions body as an Anthropic Messages body.

    default_max_tokens: Anthropic requires max_tokens; this is sent when the client gave
    neither max_tokens nor max_completion_tokens (a per-target setting).
    """
    if not isinstance(body, dict):
        raise TranslationError("the request body must be a JSON object")
    for key, value in body.items():
        if key in OPENAI_MAPPED or key in OPENAI_DROPPED:
            continue
        if key in _NEUTRAL:
            if not _neutral(key, value):
                raise _refuse(key, _REFUSAL_REASON[key])
            continue
        raise TranslationError(
            f"Unrecognized request argument supplied: {key}", key, code="unknown_parameter"
        )
    if "model" not in body:
        raise TranslationError(
            "Missing required parameter: 'model'.", "model", code="missing_required_parameter"
        )
    _check_types(body, _OPENAI_TYPES)
    system, messages = _messages_to_anthropic(body.get("messages"))
    out: dict[str, Any] = {"model": body["model"]}
    if len(system) == 1:
        out["system"] = system[0]
    elif system:
        out["system"] = [{"type": "text", "text": s} for s in system]
    out["messages"] = messages
    limit = body.get("max_completion_tokens")
    if limit is None:
        limit = body.get("max_tokens")
    out["max_tokens"] = default_max_tokens if limit is None else limit
    stop = body.get("stop")
    if stop is not None:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    for key in ("temperature", "top_p", "top_k"):
        if body.get(key) is not None:
            out[key] = body[key]
    temperature = out.get("temperature")
    if isinstance(temperature, int | float) and temperature > 1:
        raise _refuse("temperature", "Anthropic models take a temperature between 0 and 1")
    if body.get("stream") is not None:
        out["stream"] = bool(body["stream"])
    if body.get("tools"):
        out["tools"] = _tools_to_anthropic(body["tools"])
    choice = body.get("tool_choice")
    if choice is not None:
        out["tool_choice"] = _tool_choice_to_anthropic(choice)
    if body.get("parallel_tool_calls") is False:
        tc = out.setdefault("tool_choice", {"type": "auto"})
        if tc["type"] != "none":
            tc["disable_parallel_tool_use"] = True
    if body.get("user") is not None:
        out["metadata"] = {"user_id": body["user"]}
    return out


# -- Anthropic Messages → OpenAI chat -------------------------------------------------

ANTHROPIC_MAPPED = frozenset(
    {
        "model",
        "messages",
        "system",
        "max_tokens",
        "stop_sequences",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "tools",
        "tool_choice",
        "metadata",
        "thinking",
    }
)
ANTHROPIC_DROPPED = frozenset(
    {
        "service_tier",  # Anthropic's priority tiers; the OpenAI-dialect target has its own
    }
)
ANTHROPIC_REFUSED = {
    "container": "code-execution containers are not available on this model",
    "mcp_servers": "MCP servers are not available on this model",
    "context_management": "context management is not available on this model",
}

ThinkingPolicy = Literal["drop", "refuse"]
TopKPolicy = Literal["pass", "drop"]


def _a_refuse(param: str, reason: str) -> TranslationError:
    return TranslationError(f"{reason}", param)


def _data_url(source: dict[str, Any], param: str) -> str:
    source = _obj(source, f"{param}.source")
    kind = source.get("type")
    if kind == "base64":
        return f"data:{source.get('media_type', '')};base64,{source.get('data', '')}"
    if kind == "url":
        return str(source.get("url", ""))
    raise _a_refuse(f"{param}.source", f"image source type {kind!r} is not supported")


def _result_content(content: Any, param: str) -> str | list[dict[str, Any]]:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for j, b in enumerate(content):
            if not isinstance(b, dict) or b.get("type") != "text":
                raise _a_refuse(f"{param}[{j}]", "tool results can hold text only on this model")
            parts.append({"type": "text", "text": str(b.get("text", ""))})
        return parts
    raise _a_refuse(param, "tool_result content must be a string or a list of blocks")


def _user_turn(content: Any, param: str, thinking: ThinkingPolicy) -> list[dict[str, Any]]:
    """One Anthropic user turn: its tool results as tool messages (they come first, as
    Anthropic requires), then the rest as one user message."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    if not isinstance(content, list):
        raise _a_refuse(param, "content must be a string or a list of blocks")
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, b in enumerate(content):
        kind = b.get("type") if isinstance(b, dict) else None
        where = f"{param}.{j}"
        if kind == "text":
            parts.append({"type": "text", "text": str(b.get("text", ""))})
        elif kind == "image":
            parts.append(
                {"type": "image_url", "image_url": {"url": _data_url(b.get("source"), where)}}
            )
        elif kind == "tool_result":
            out.append(
                {
                    "role": "tool",
                    "tool_call_id": str(b.get("tool_use_id", "")),
                    "content": _result_content(b.get("content"), f"{where}.content"),
                }
            )
        else:
            raise _a_refuse(where, f"content block type {kind!r} is not supported on this model")
    if parts:
        out.append({"role": "user", "content": parts})
    return out


def _assistant_turn(content: Any, param: str, thinking: ThinkingPolicy) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    if not isinstance(content, list):
        raise _a_refuse(param, "content must be a string or a list of blocks")
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, b in enumerate(content):
        kind = b.get("type") if isinstance(b, dict) else None
        if kind == "text":
            text.append(str(b.get("text", "")))
        elif kind == "tool_use":
            calls.append(
                {
                    "id": str(b.get("id", "")),
                    "type": "function",
                    "function": {
                        "name": str(b.get("name", "")),
                        "arguments": orjson.dumps(b.get("input") or {}).decode(),
                    },
                }
            )
        elif kind in ("thinking", "redacted_thinking"):
            if thinking == "refuse":
                raise _a_refuse(f"{param}.{j}", "thinking is not available on this model")
        else:
            raise _a_refuse(
                f"{param}.{j}", f"content block type {kind!r} is not supported on this model"
            )
    msg: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text else None}
    if calls:
        msg["tool_calls"] = calls
    return msg


def anthropic_to_openai_chat(
    body: dict[str, Any], thinking: ThinkingPolicy = "drop", top_k: TopKPolicy = "pass"
) -> dict[str, Any]:
    """An Anthropic Messages body as an OpenAI chat completions body (for OpenAI-dialect
    targets such as vLLM).

    thinking: a `thinking` request (and thinking blocks in the history) is dropped, or
        refused with a 400. top_k: passed on as vLLM's `top_k` extra, or dropped (for
        targets that refuse unknown fields, such as OpenAI's API).
    A stream asks for `stream_options.include_usage`: Anthropic's `message_delta` needs it.
    """
    if not isinstance(body, dict):
        raise TranslationError("the request body must be a JSON object")
    for key in body:
        if key in ANTHROPIC_REFUSED:
            raise _a_refuse(key, ANTHROPIC_REFUSED[key])
        if key not in ANTHROPIC_MAPPED and key not in ANTHROPIC_DROPPED:
            raise _a_refuse(key, "Extra inputs are not permitted")
    for key in ("model", "messages", "max_tokens"):
        if key not in body:
            raise _a_refuse(key, "Field required")
    _check_types(body, _ANTHROPIC_TYPES)
    wants_thinking = (body.get("thinking") or {"type": "disabled"}).get("type") != "disabled"
    if wants_thinking and thinking == "refuse":
        raise _a_refuse("thinking", "thinking is not available on this model")
    out: dict[str, Any] = {"model": body["model"]}
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if isinstance(system, str):
        messages.append({"role": "system", "content": system})
    elif isinstance(system, list):
        for j, b in enumerate(system):
            if not isinstance(b, dict) or b.get("type") != "text":
                raise _a_refuse(f"system.{j}", "system blocks must be text")
            messages.append({"role": "system", "content": str(b.get("text", ""))})
    elif system is not None:
        raise _a_refuse("system", "system must be a string or a list of text blocks")
    turns = body["messages"]
    if not isinstance(turns, list):
        raise _a_refuse("messages", "messages must be a list")
    for i, m in enumerate(turns):
        param = f"messages.{i}"
        role = m.get("role") if isinstance(m, dict) else None
        if role == "user":
            messages.extend(_user_turn(m.get("content"), f"{param}.content", thinking))
        elif role == "assistant":
            messages.append(_assistant_turn(m.get("content"), f"{param}.content", thinking))
        else:
            raise _a_refuse(f"{param}.role", f"role {role!r} is not one of user, assistant")
    out["messages"] = messages
    out["max_tokens"] = body["max_tokens"]
    if body.get("stop_sequences") is not None:
        out["stop"] = list(body["stop_sequences"])
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    if body.get("top_k") is not None and top_k == "pass":
        out["top_k"] = body["top_k"]
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    elif body.get("stream") is not None:
        out["stream"] = False
    tools = body.get("tools")
    if tools:
        out["tools"] = [_tool_to_openai(t, i) for i, t in enumerate(tools)]
    choice = body.get("tool_choice")
    if choice is not None:
        kind = choice.get("type") if isinstance(choice, dict) else None
        if kind == "auto":
            out["tool_choice"] = "auto"
        elif kind == "any":
            out["tool_choice"] = "required"
        elif kind == "none":
            out["tool_choice"] = "none"
        elif kind == "tool":
            out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
        else:
            raise _a_refuse("tool_choice", f"tool_choice type {kind!r} is not supported")
        if choice.get("disable_parallel_tool_use"):
            out["parallel_tool_calls"] = False
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and metadata.get("user_id") is not None:
        out["user"] = metadata["user_id"]
    return out


def _tool_to_openai(tool: Any, i: int) -> dict[str, Any]:
    if not isinstance(tool, dict) or tool.get("type", "custom") != "custom":
        kind = tool.get("type") if isinstance(tool, dict) else None
        raise _a_refuse(f"tools.{i}", f"server tool {kind!r} is not available on this model")
    fn: dict[str, Any] = {"name": tool.get("name")}
    if tool.get("description") is not None:
        fn["description"] = tool["description"]
    fn["parameters"] = tool.get("input_schema") or {"type": "object", "properties": {}}
    return {"type": "function", "function": fn}
