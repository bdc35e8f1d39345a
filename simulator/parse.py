"""Turn an OpenAI request body into a `Job`: what to generate, and how many tokens.

Validation errors carry the status and the message the real server would give
(vLLM's or OpenAI's wording, by mode), so clients and proxies meet the same text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from simulator.config import SimConfig
from simulator.responses import tool_arguments
from simulator.tokens import count_chat, count_prompt, count_text


class RequestError(Exception):
    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code  # OpenAI's string code; vLLM uses the status


@dataclass
class Job:
    kind: str  # chat | completion | embedding
    model: str
    prompt_tokens: int
    max_tokens: int  # per choice
    n: int = 1
    stream: bool = False
    include_usage: bool = False
    continuous_usage: bool = False
    explicit_max: bool = False
    tool: tuple[str, str] | None = None  # (name, JSON arguments)
    messages: list[dict[str, Any]] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)  # embeddings
    base64: bool = False


def _require(body: Any, key: str, mode: str) -> Any:
    if not isinstance(body, dict):
        raise RequestError(400, "request body must be a JSON object")
    if key not in body:
        if mode == "vllm":
            msg = f"[{{'type': 'missing', 'loc': ('body', '{key}'), 'msg': 'Field required'}}]"
        else:
            msg = f"Missing required parameter: '{key}'."
        raise RequestError(400, msg, param=key, code="missing_required_parameter")
    return body[key]


def _int(body: dict[str, Any], key: str, minimum: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise RequestError(
            400,
            f"{key} must be an integer >= {minimum}, got {value!r}",
            param=key,
            code="invalid_value",
        )
    return value


def _stream_options(body: dict[str, Any], stream: bool, mode: str) -> tuple[bool, bool]:
    opts = body.get("stream_options")
    if opts is None:
        return False, False
    if not stream:
        if mode == "vllm":
            raise RequestError(400, "Stream options can only be defined when `stream=True`.")
        raise RequestError(
            400,
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
            code="invalid_value",
        )
    if not isinstance(opts, dict):
        raise RequestError(400, "stream_options must be an object", param="stream_options")
    return bool(opts.get("include_usage")), bool(opts.get("continuous_usage_stats"))


def _check_context(prompt: int, max_tokens: int, explicit: bool, cfg: SimConfig) -> int:
    """The completion length the engine will run, or the engine's 400 for this request.

    vLLM (0.32, checked by tests/e2e/test_vllm_contract.py): max_tokens over the window is
    refused first; then a prompt over the window (vLLM stops tokenizing at window + 1, so it
    quotes that); a prompt that fills the window exactly leaves 0 tokens to generate; a prompt
    that fits with a max_tokens that does not is run with max_tokens cut to what is left.
    """
    limit = cfg.max_model_len
    if cfg.mode == "vllm":
        if explicit and max_tokens > limit:
            raise RequestError(
                400,
                f"max_tokens={max_tokens} cannot be greater than max_model_len={limit}. Please "
                f"request fewer output tokens. (parameter=max_tokens, value={max_tokens})",
                param="max_tokens",
            )
        if prompt > limit:
            raise RequestError(
                400,
                f"This model's maximum context length is {limit} tokens. However, your prompt "
                f"contains at least {limit + 1} input tokens, which exceeds this limit even "
                "without any output tokens. Please reduce the length of the input prompt. "
                f"(parameter=input_tokens, value={limit + 1})",
                param="input_tokens",
            )
        if prompt == limit:
            raise RequestError(
                400,
                "max_tokens must be at least 1, got 0. (parameter=max_tokens, value=0)",
                param="max_tokens",
            )
        return min(max_tokens, limit - prompt)
    if prompt + (max_tokens if explicit else 0) > limit:
        raise RequestError(
            400,
            f"This model's maximum context length is {limit} tokens. However, your messages "
            f"resulted in {prompt + (max_tokens if explicit else 0)} tokens. Please reduce "
            "the length of the messages.",
            param="messages",
            code="context_length_exceeded",
        )
    return max_tokens


def _completion_length(body: dict[str, Any], prompt: int, cfg: SimConfig) -> tuple[int, bool]:
    explicit = _int(body, "max_completion_tokens", 1)
    if explicit is None:
        explicit = _int(body, "max_tokens", 1)
    if explicit is not None:
        return explicit, True
    # Like vLLM, never plan to run past the context window.
    return max(1, min(cfg.default_max_tokens, cfg.max_model_len - prompt)), False


def _pick_tool(body: dict[str, Any], messages: list[Any], cfg: SimConfig) -> tuple[str, str] | None:
    tools = body.get("tools")
    if cfg.tool_calls == "never" or not tools or not isinstance(tools, list):
        return None
    choice = body.get("tool_choice", "auto")
    if choice == "none":
        return None
    tool = tools[0]
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name")
        tool = next((t for t in tools if (t.get("function") or {}).get("name") == wanted), tools[0])
    elif (
        cfg.tool_calls == "auto"
        and choice == "auto"
        and messages
        and isinstance(messages[-1], dict)
        and messages[-1].get("role") == "tool"
    ):
        # The tool already answered: reply in text, so agent loops terminate.
        return None
    fn = tool.get("function") or {}
    return str(fn.get("name", "tool")), tool_arguments(fn.get("parameters"))


def parse_chat(body: Any, cfg: SimConfig) -> Job:
    model = _require(body, "model", cfg.mode)
    messages = _require(body, "messages", cfg.mode)
    if (
        not isinstance(messages, list)
        or not messages
        or not all(isinstance(m, dict) for m in messages)
    ):
        raise RequestError(400, "messages must be a non-empty list of objects", param="messages")
    stream = bool(body.get("stream"))
    include_usage, continuous = _stream_options(body, stream, cfg.mode)
    prompt = count_chat(messages, body.get("tools"))
    max_tokens, explicit = _completion_length(body, prompt, cfg)
    max_tokens = _check_context(prompt, max_tokens, explicit, cfg)
    return Job(
        kind="chat",
        model=str(model),
        prompt_tokens=prompt,
        max_tokens=max_tokens,
        n=_int(body, "n", 1) or 1,
        stream=stream,
        include_usage=include_usage,
        continuous_usage=continuous,
        explicit_max=explicit,
        tool=_pick_tool(body, messages, cfg),
        messages=messages,
    )


def parse_completion(body: Any, cfg: SimConfig) -> Job:
    model = _require(body, "model", cfg.mode)
    prompt = _require(body, "prompt", cfg.mode)
    # A list of prompts (strings or token lists) is a batch: one choice per prompt.
    batch = (
        prompt
        if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int)
        else [prompt]
    )
    try:
        counts = [count_prompt(p) for p in batch]
    except ValueError as exc:
        raise RequestError(400, str(exc), param="prompt") from None
    stream = bool(body.get("stream"))
    include_usage, continuous = _stream_options(body, stream, cfg.mode)
    max_tokens, explicit = _completion_length(body, max(counts), cfg)
    max_tokens = min(_check_context(c, max_tokens, explicit, cfg) for c in counts)
    return Job(
        kind="completion",
        model=str(model),
        prompt_tokens=sum(counts),
        max_tokens=max_tokens,
        n=(_int(body, "n", 1) or 1) * len(batch),
        stream=stream,
        include_usage=include_usage,
        continuous_usage=continuous,
        explicit_max=explicit,
    )


def parse_embedding(body: Any, cfg: SimConfig) -> Job:
    model = _require(body, "model", cfg.mode)
    raw = _require(body, "input", cfg.mode)
    items = raw if isinstance(raw, list) and raw and not isinstance(raw[0], int) else [raw]
    inputs: list[str] = []
    total = 0
    for item in items:
        if isinstance(item, str):
            tokens, text = count_text(item), item
        elif isinstance(item, list) and all(isinstance(t, int) for t in item):
            tokens, text = max(1, len(item)), ",".join(map(str, item))
        else:
            raise RequestError(
                400, "input must be a string, a list of strings or token ids", param="input"
            )
        if tokens > cfg.max_model_len:
            if cfg.mode == "vllm":
                msg = (
                    f"This model's maximum context length is {cfg.max_model_len} tokens. "
                    f"However, you requested {tokens} tokens in the input for embedding "
                    "generation. Please reduce the length of the input."
                )
            else:
                msg = (
                    f"This model's maximum context length is {cfg.max_model_len} tokens, "
                    f"however you requested {tokens} tokens. Please reduce your prompt."
                )
            raise RequestError(400, msg, param="input", code="context_length_exceeded")
        inputs.append(text)
        total += tokens
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise RequestError(400, f"unsupported encoding_format {fmt!r}", param="encoding_format")
    return Job(
        kind="embedding",
        model=str(model),
        prompt_tokens=total,
        max_tokens=0,
        inputs=inputs,
        base64=fmt == "base64",
    )
