"""A Responses API request (`POST /v1/responses`) as an OpenAI chat completions request.

For targets that speak chat only (vLLM, llama.cpp, LiteLLM) and, chained through
`openai_chat_to_anthropic`, for Anthropic targets. Every top-level field is in exactly one
of: mapped, dropped (no chat counterpart, and the answer means the same without it: listed
with why) or refused with a `TranslationError` naming it; unknown fields are refused, as
OpenAI does. `history` is the stored conversation of a `previous_response_id` (its input
and output items), replayed before this request's `input`. docs/dialects.md has the table.
"""

from __future__ import annotations

from typing import Any, Literal

from proxy.dialects import TranslationError

RESPONSES_MAPPED = frozenset(
    {
        "model",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "text",
        "max_output_tokens",
        "temperature",
        "top_p",
        "parallel_tool_calls",
        "reasoning",
        "stream",
        "user",
    }
)
# Dropped from the upstream body: no chat counterpart, or kept by the proxy itself.
RESPONSES_DROPPED = frozenset(
    {
        "metadata",  # echoed in the response object; chat's metadata needs OpenAI's store
        "store",  # the proxy's state store keeps the response (the route reads it)
        "previous_response_id",  # resolved by the route into `history`
        "include",  # extra data of built-in tools' outputs: none are produced here
        "truncation",  # echoed; a context overflow is the target's 400 (failover may help)
        "service_tier",  # a different tier vocabulary; the target's default applies
        "safety_identifier",  # OpenAI's abuse-monitoring id; no chat engine takes it
        "prompt_cache_key",  # OpenAI's cache routing hint; engines cache by prefix anyway
        "prompt_cache_retention",  # the same
        "stream_options",  # Responses' include_obfuscation; the translated stream has none
    }
)
# Accepted at their neutral value only.
_NEUTRAL_RESPONSES: dict[str, str] = {
    "background": "background responses are not supported for this model",
    "conversation": "conversations are not supported here: use previous_response_id",
    "prompt": "stored prompt templates are not supported for this model",
    "max_tool_calls": "max_tool_calls is not supported for this model",
    "top_logprobs": "log probabilities are not supported through this translation",
}
# Responses' hosted tools: executed by OpenAI's platform, which a chat target is not.
BUILTIN_TOOLS = frozenset(
    {
        "web_search",
        "web_search_preview",
        "web_search_2025_08_26",
        "web_search_preview_2025_03_11",
        "file_search",
        "computer",
        "computer_use",
        "computer_use_preview",
        "code_interpreter",
        "image_generation",
        "mcp",
        "local_shell",
        "shell",
        "apply_patch",
        "tool_search",
        "custom",
        "namespace",
    }
)

MaxTokensField = Literal["max_tokens", "max_completion_tokens"]
ReasoningPolicy = Literal["pass", "drop"]

_NUMBER = (int, float)
_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "model": ((str,), "a string"),
    "input": ((str, list), "a string or an array"),
    "instructions": ((str,), "a string"),
    "tools": ((list,), "an array"),
    "tool_choice": ((str, dict), "a string or an object"),
    "text": ((dict,), "an object"),
    "max_output_tokens": ((int,), "an integer"),
    "temperature": (_NUMBER, "a number"),
    "top_p": (_NUMBER, "a number"),
    "parallel_tool_calls": ((bool,), "a boolean"),
    "reasoning": ((dict,), "an object"),
    "stream": ((bool,), "a boolean"),
    "user": ((str,), "a string"),
    "metadata": ((dict,), "an object"),
    "store": ((bool,), "a boolean"),
    "previous_response_id": ((str,), "a string"),
    "include": ((list,), "an array"),
    "truncation": ((str,), "a string"),
}


def _invalid(param: str, what: str) -> TranslationError:
    return TranslationError(
        f"Invalid type for '{param}': expected {what}.", param, code="invalid_type"
    )


def _refuse(param: str, reason: str) -> TranslationError:
    return TranslationError(f"Unsupported parameter '{param}': {reason}.", param)


def _check_types(body: dict[str, Any]) -> None:
    for key, (kinds, what) in _TYPES.items():
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise _invalid(key, what)


def _str(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise _invalid(param, "a string")
    return value


# -- input items ----------------------------------------------------------------------------
def _image_part(part: dict[str, Any], param: str) -> dict[str, Any]:
    url = part.get("image_url")
    if not isinstance(url, str):
        if part.get("file_id") is not None:
            raise _refuse(f"{param}.file_id", "uploaded files are not available to this model")
        raise _invalid(f"{param}.image_url", "a string")
    image: dict[str, Any] = {"url": url}
    detail = part.get("detail")
    if isinstance(detail, str) and detail != "auto":
        image["detail"] = detail
    return {"type": "image_url", "image_url": image}


def _file_part(part: dict[str, Any], param: str) -> dict[str, Any]:
    if part.get("file_url") is not None:
        raise _refuse(f"{param}.file_url", "files by URL are not available to this model")
    file = {k: part[k] for k in ("file_data", "file_id", "filename") if part.get(k) is not None}
    return {"type": "file", "file": file}


def _input_content(content: Any, param: str) -> str | list[dict[str, Any]]:
    """A user/system/developer message's content: a string, or input parts as chat parts."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _invalid(param, "a string or an array of content parts")
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        where = f"{param}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": _str(part.get("text", ""), f"{where}.text")})
        elif kind == "input_image":
            parts.append(_image_part(part, where))
        elif kind == "input_file":
            parts.append(_file_part(part, where))
        else:
            raise _refuse(f"{where}.type", f"content part type {kind!r} is not supported here")
    return parts


def _only_text(parts: str | list[dict[str, Any]]) -> str | None:
    """The content as one string when it is text only (what every chat role takes)."""
    if isinstance(parts, str):
        return parts
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return None


def _assistant_text(content: Any, param: str) -> str:
    """An assistant message's content as chat's string: output_text parts joined, a refusal
    replayed as what the assistant said."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _invalid(param, "a string or an array of content parts")
    out = []
    for j, part in enumerate(content):
        where = f"{param}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("output_text", "input_text", "text"):
            out.append(_str(part.get("text", ""), f"{where}.text"))
        elif kind == "refusal":
            out.append(_str(part.get("refusal", ""), f"{where}.refusal"))
        else:
            raise _refuse(f"{where}.type", f"content part type {kind!r} is not supported here")
    return "".join(out)


def _tool_output(output: Any, param: str) -> str | list[dict[str, Any]]:
    if isinstance(output, str):
        return output
    if not isinstance(output, list):
        raise _invalid(param, "a string or an array of content parts")
    parts = []
    for j, part in enumerate(output):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in ("input_text", "output_text", "text"):
            raise _refuse(f"{param}[{j}]", "tool outputs can hold text only on this model")
        parts.append({"type": "text", "text": _str(part.get("text", ""), f"{param}[{j}].text")})
    return parts


class _Messages:
    """Chat messages built from Responses items, with the Responses place of each one (so an
    error the next translation raises about `messages[i]` can name the client's item)."""

    __slots__ = ("messages", "places")

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.places: list[str] = []  # per message: the item it came from
        # (function calls merged into one assistant message keep the first call's place)

    def add(self, message: dict[str, Any], place: str) -> None:
        self.messages.append(message)
        self.places.append(place)

    def item(self, item: Any, param: str) -> None:
        if isinstance(item, str):  # not in the API, but harmless: a user turn
            self.add({"role": "user", "content": item}, param)
            return
        if not isinstance(item, dict):
            raise _invalid(param, "an object")
        kind = item.get("type")
        if kind is None and "role" in item:
            kind = "message"
        if kind == "message":
            self._message(item, param)
        elif kind == "function_call":
            self._call(item, param)
        elif kind == "function_call_output":
            call_id = _str(item.get("call_id", ""), f"{param}.call_id")
            content = _tool_output(item.get("output", ""), f"{param}.output")
            self.add({"role": "tool", "tool_call_id": call_id, "content": content}, param)
        elif kind == "reasoning":
            pass  # a chat target cannot replay reasoning (nor verify encrypted content)
        elif kind == "item_reference":
            raise _refuse(f"{param}.type", "item references are not supported: send the item")
        else:
            raise _refuse(f"{param}.type", f"input item type {kind!r} is not supported here")

    def _message(self, item: dict[str, Any], param: str) -> None:
        role = item.get("role")
        where = f"{param}.content"
        if role == "assistant":
            self.add(
                {"role": "assistant", "content": _assistant_text(item.get("content"), where)}, param
            )
        elif role == "user":
            self.add({"role": "user", "content": _input_content(item.get("content"), where)}, param)
        elif role in ("system", "developer"):
            text = _only_text(_input_content(item.get("content"), where))
            if text is None:
                raise _refuse(where, f"a {role} message can hold text only")
            self.add({"role": "system", "content": text}, param)
        else:
            raise _refuse(f"{param}.role", f"message role {role!r} is not supported")

    def _call(self, item: dict[str, Any], param: str) -> None:
        args = item.get("arguments", "")
        call = {
            "id": _str(item.get("call_id", ""), f"{param}.call_id"),
            "type": "function",
            "function": {
                "name": _str(item.get("name", ""), f"{param}.name"),
                "arguments": _str(args, f"{param}.arguments") or "{}",
            },
        }
        last = self.messages[-1] if self.messages else None
        if last is not None and last["role"] == "assistant":
            # Parallel calls, or a call right after the text of the same turn: one message.
            last.setdefault("tool_calls", []).append(call)
            if last["content"] == "":
                last["content"] = None
        else:
            self.add({"role": "assistant", "content": None, "tool_calls": [call]}, param)


# -- tools ---------------------------------------------------------------------------------
def _tools(tools: list[Any]) -> list[dict[str, Any]]:
    out = []
    for i, t in enumerate(tools):
        where = f"tools[{i}]"
        kind = t.get("type") if isinstance(t, dict) else None
        if kind != "function":
            if kind in BUILTIN_TOOLS or isinstance(kind, str):
                raise TranslationError(
                    f"The built-in tool {kind!r} is not available on this model: it runs on "
                    "OpenAI's platform, and this model is served through chat completions.",
                    f"{where}.type",
                    code="unsupported_tool",
                )
            raise _invalid(where, "a tool object with a type")
        assert isinstance(t, dict)
        fn: dict[str, Any] = {"name": _str(t.get("name"), f"{where}.name")}
        if t.get("description") is not None:
            fn["description"] = _str(t["description"], f"{where}.description")
        params = t.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise _invalid(f"{where}.parameters", "an object")
        fn["parameters"] = params or {"type": "object", "properties": {}}
        if isinstance(t.get("strict"), bool):
            fn["strict"] = t["strict"]
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: Any, tools: list[dict[str, Any]]) -> tuple[Any, list[dict[str, Any]]]:
    """Chat's tool_choice (and the tools it leaves: allowed_tools narrows them)."""
    if choice in ("auto", "none", "required"):
        return choice, tools
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}, tools
    if kind == "allowed_tools":
        mode = choice.get("mode", "auto")
        allowed = choice.get("tools")
        if mode not in ("auto", "required") or not isinstance(allowed, list):
            raise _refuse("tool_choice", "allowed_tools needs a mode (auto, required) and tools")
        names = set()
        for j, a in enumerate(allowed):
            if not isinstance(a, dict) or a.get("type") != "function":
                raise _refuse(f"tool_choice.tools[{j}]", "only function tools can be allowed")
            names.add(a.get("name"))
        return mode, [t for t in tools if t["function"]["name"] in names]
    raise _refuse("tool_choice", "use auto, none, required, a function or allowed_tools")


def _response_format(text: dict[str, Any]) -> dict[str, Any] | None:
    fmt = text.get("format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        assert isinstance(fmt, dict)
        schema = fmt.get("schema")
        if not isinstance(schema, dict):
            raise _invalid("text.format.schema", "an object")
        spec: dict[str, Any] = {"name": _str(fmt.get("name", "response"), "text.format.name")}
        spec["schema"] = schema
        if fmt.get("description") is not None:
            spec["description"] = fmt["description"]
        if isinstance(fmt.get("strict"), bool):
            spec["strict"] = fmt["strict"]
        return {"type": "json_schema", "json_schema": spec}
    raise _refuse("text.format", f"format type {kind!r} is not supported")


# -- the request ---------------------------------------------------------------------------
def responses_to_chat(
    body: dict[str, Any],
    history: list[Any] | None = None,
    *,
    max_tokens_field: MaxTokensField = "max_tokens",
    reasoning: ReasoningPolicy = "pass",
) -> dict[str, Any]:
    """A Responses request as a chat completions body.

    history: the items of the conversation `previous_response_id` names (the earlier
        inputs and outputs, in order), replayed after `instructions` and before `input`.
    max_tokens_field: where `max_output_tokens` goes: `max_tokens` (every engine takes it)
        or `max_completion_tokens` (OpenAI's API, whose reasoning models refuse the other).
    reasoning: `reasoning.effort` becomes `reasoning_effort` ("pass", for targets that take
        it: vLLM, OpenAI's API) or is dropped (Anthropic's Messages translation has none).
    A stream asks for `stream_options.include_usage`: response.completed needs the usage.
    """
    return _translate(body, history, max_tokens_field, reasoning).messages_body


class ChatRequest:
    """The chat body and, per message, the Responses place it came from."""

    __slots__ = ("messages_body", "places")

    def __init__(self, messages_body: dict[str, Any], places: list[str]) -> None:
        self.messages_body = messages_body
        self.places = places


def responses_to_chat_placed(
    body: dict[str, Any],
    history: list[Any] | None = None,
    *,
    max_tokens_field: MaxTokensField = "max_tokens",
    reasoning: ReasoningPolicy = "pass",
) -> ChatRequest:
    """`responses_to_chat`, with the place of each message for `responses_param`."""
    return _translate(body, history, max_tokens_field, reasoning)


def _translate(
    body: dict[str, Any],
    history: list[Any] | None,
    max_tokens_field: MaxTokensField,
    reasoning: ReasoningPolicy,
) -> ChatRequest:
    if not isinstance(body, dict):
        raise TranslationError("the request body must be a JSON object")
    for key, value in body.items():
        if key in RESPONSES_MAPPED or key in RESPONSES_DROPPED:
            continue
        if key in _NEUTRAL_RESPONSES:
            if value in (None, False, 0):
                continue
            raise _refuse(key, _NEUTRAL_RESPONSES[key])
        raise TranslationError(f"Unknown parameter: '{key}'.", key, code="unknown_parameter")
    if "model" not in body:
        raise TranslationError(
            "Missing required parameter: 'model'.", "model", code="missing_required_parameter"
        )
    _check_types(body)
    msgs = _Messages()
    instructions = body.get("instructions")
    if instructions:
        msgs.add({"role": "system", "content": instructions}, "instructions")
    for item in history or ():
        msgs.item(item, "previous_response_id")
    given = body.get("input")
    if isinstance(given, str):
        msgs.add({"role": "user", "content": given}, "input")
    elif isinstance(given, list):
        for i, item in enumerate(given):
            msgs.item(item, f"input[{i}]")
    if not msgs.messages or all(m["role"] == "system" for m in msgs.messages):
        raise TranslationError(
            "Missing required parameter: 'input'.", "input", code="missing_required_parameter"
        )
    out: dict[str, Any] = {"model": body["model"], "messages": msgs.messages}
    limit = body.get("max_output_tokens")
    if limit is not None:
        out[max_tokens_field] = limit
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    tools = _tools(body["tools"]) if body.get("tools") else []
    choice = body.get("tool_choice")
    if choice is not None:
        choice, tools = _tool_choice(choice, tools)
    if tools:
        out["tools"] = tools
        if choice is not None:
            out["tool_choice"] = choice
        if body.get("parallel_tool_calls") is not None:
            out["parallel_tool_calls"] = body["parallel_tool_calls"]
    elif choice == "required" or isinstance(choice, dict):
        raise _refuse("tool_choice", "no function tool is left to call")
    text = body.get("text")
    if text is not None:
        fmt = _response_format(text)
        if fmt is not None:
            out["response_format"] = fmt
    effort = (body.get("reasoning") or {}).get("effort")
    if effort is not None and reasoning == "pass":
        out["reasoning_effort"] = _str(effort, "reasoning.effort")
    if body.get("user") is not None:
        out["user"] = body["user"]
    return ChatRequest(out, msgs.places)


# Chat fields the next translation (chat → Anthropic) may name, as the Responses client
# knows them.
_CHAT_PARAM = {
    "max_tokens": "max_output_tokens",
    "max_completion_tokens": "max_output_tokens",
    "response_format": "text.format",
    "reasoning_effort": "reasoning.effort",
    "tool_choice": "tool_choice",
    "parallel_tool_calls": "parallel_tool_calls",
    "temperature": "temperature",
    "top_p": "top_p",
}


def responses_param(param: str | None, places: list[str]) -> str | None:
    """A chat-side `param` (from a later translation's error) as the Responses client's:
    `messages[3]…` → the item it came from, `tools[1].function…` → `tools[1]`, …"""
    if param is None:
        return None
    if param.startswith("messages[") and "]" in param:
        i = param[len("messages[") : param.index("]")]
        if i.isdigit() and int(i) < len(places):
            return places[int(i)]
        return "input"
    if param.startswith("tools["):
        return param.split(".", 1)[0]
    return _CHAT_PARAM.get(param, param)


def input_items(body: dict[str, Any]) -> list[Any]:
    """The request's `input` as items (a string is one user message), for the route to
    store with the answer's output items: the `history` of a later previous_response_id
    is the earlier turns' history + input_items + output, in order (`instructions` are
    not carried over, as OpenAI does not carry them)."""
    given = body.get("input")
    if isinstance(given, str):
        return [{"type": "message", "role": "user", "content": given}]
    return list(given) if isinstance(given, list) else []
