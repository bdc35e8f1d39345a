"""Anthropic's Messages API: request parsing, bodies, SSE events and errors, as the real
API shapes them (`--mode anthropic`).

Token rules (deterministic, like tokens.py): the prompt costs the tokens of the system
text, of each message's text (text blocks, tool_use inputs as JSON, tool_result text)
and of the JSON of `tools`; the answer is min(max_tokens, --default-max-tokens) tokens,
with stop_reason `max_tokens` when that is the client's limit, else `end_turn` (or
`tool_use`). `--cache-read-tokens` / `--cache-creation-tokens` report that many of the
prompt's tokens (capped by it) as read from / written to the prompt cache, so
input_tokens + cache read + cache creation is always the whole prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from simulator.config import SimConfig
from simulator.parse import RequestError
from simulator.responses import Dialect, Reply, anthropic_error, random_alnum, tool_arguments
from simulator.tokens import count_text, filler_token


def valid_version(version: str) -> bool:
    """An `anthropic-version` the simulator takes: any date, YYYY-MM-DD (the SDKs move it
    forward with their releases; the wire format here is that of 2023-06-01 onwards)."""
    y, m, d = [*version.split("-"), "", "", ""][:3]
    return len(version) == 10 and y.isdigit() and m.isdigit() and d.isdigit()


@dataclass
class MessagesJob:
    model: str
    prompt_tokens: int
    max_tokens: int  # planned output tokens
    requested_max: int
    stream: bool
    tool: tuple[str, str] | None  # (name, JSON input)
    cache_read: int = 0
    cache_creation: int = 0


def _block_text(block: Any) -> str:
    if not isinstance(block, dict):
        return ""
    kind = block.get("type")
    if kind == "text":
        return str(block.get("text", ""))
    if kind == "tool_use":
        return orjson.dumps(block.get("input") or {}).decode()
    if kind == "tool_result":
        content = block.get("content")
        if isinstance(content, list):
            return "".join(_block_text(b) for b in content)
        return str(content or "")
    return ""


def content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(_block_text(b) for b in content)
    return ""


def _invalid(message: str) -> RequestError:
    return RequestError(400, message)


def count_messages(body: Any) -> int:
    """Validate what count_tokens and messages share; the prompt's tokens."""
    if not isinstance(body, dict):
        raise _invalid("body: Input should be a valid dictionary")
    for key in ("model", "messages"):
        if key not in body:
            raise _invalid(f"{key}: Field required")
    messages = body["messages"]
    if not isinstance(messages, list):
        raise _invalid("messages: Input should be a valid list")
    if not messages:
        raise _invalid("messages: at least one message is required")
    total = 0
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            raise _invalid(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        if "content" not in m:
            raise _invalid(f"messages.{i}.content: Field required")
        total += count_text(content_text(m["content"]))
    system = body.get("system")
    if system:
        total += count_text(content_text(system))
    if body.get("tools"):
        total += count_text(orjson.dumps(body["tools"]).decode())
    return total


def _pick_tool(body: dict[str, Any], cfg: SimConfig) -> tuple[str, str] | None:
    tools = body.get("tools")
    if cfg.tool_calls == "never" or not isinstance(tools, list) or not tools:
        return None
    choice = body.get("tool_choice") or {"type": "auto"}
    kind = choice.get("type") if isinstance(choice, dict) else "auto"
    if kind == "none":
        return None
    tool = tools[0]
    if kind == "tool":
        tool = next((t for t in tools if t.get("name") == choice.get("name")), None)
        if tool is None:
            raise _invalid(f"tool_choice.name: no tool named {choice.get('name')!r} in tools")
    elif kind == "auto" and cfg.tool_calls == "auto":
        last = body["messages"][-1]
        content = last.get("content")
        if isinstance(content, list) and any(
            isinstance(b, dict) and b.get("type") == "tool_result" for b in content
        ):
            return None  # the tool answered: reply in text, so agent loops end
    return str(tool.get("name", "tool")), tool_arguments(tool.get("input_schema"))


def parse_messages(body: Any, cfg: SimConfig) -> MessagesJob:
    prompt = count_messages(body)
    if "max_tokens" not in body:
        raise _invalid("max_tokens: Field required")
    limit = body["max_tokens"]
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise _invalid("max_tokens: Input should be greater than or equal to 1")
    if prompt > cfg.max_model_len:
        raise _invalid(f"prompt is too long: {prompt} tokens > {cfg.max_model_len} maximum")
    temperature = body.get("temperature")
    if temperature is not None and not (
        isinstance(temperature, int | float) and 0 <= temperature <= 1
    ):
        raise _invalid("temperature: Input should be less than or equal to 1")
    read = min(cfg.cache_read_tokens, prompt)
    write = min(cfg.cache_creation_tokens, prompt - read)
    return MessagesJob(
        model=str(body["model"]),
        prompt_tokens=prompt,
        max_tokens=min(limit, cfg.default_max_tokens),
        requested_max=limit,
        stream=bool(body.get("stream")),
        tool=_pick_tool(body, cfg),
        cache_read=read,
        cache_creation=write,
    )


def _event(name: str, body: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(body) + b"\n\n"


class AnthropicDialect(Dialect):
    """Bodies and SSE events of Anthropic's Messages API. `Reply.cached_tokens` is the
    cache read, `Reply.cache_creation_tokens` the cache write, `Reply.finish_reason`
    Anthropic's stop_reason."""

    name = "anthropic"
    done = None  # no [DONE]: message_stop ends the stream

    def chat_id(self) -> str:
        return f"msg_01{random_alnum(22)}"

    def tool_call_id(self) -> str:
        return f"toolu_01{random_alnum(22)}"

    def usage(self, r: Reply, completion_tokens: int) -> dict[str, Any]:
        read, write = r.cached_tokens, r.cache_creation_tokens
        return {
            "input_tokens": r.prompt_tokens - read - write,
            "cache_creation_input_tokens": write,
            "cache_read_input_tokens": read,
            "cache_creation": {"ephemeral_5m_input_tokens": write, "ephemeral_1h_input_tokens": 0},
            "output_tokens": completion_tokens,
            "service_tier": "standard",
        }

    def _content(self, r: Reply, generated: int) -> list[dict[str, Any]]:
        if r.tool_call is not None:
            return [
                {
                    "type": "tool_use",
                    "id": r.tool_call.id,
                    "name": r.tool_call.name,
                    "input": orjson.loads(r.tool_call.arguments),
                }
            ]
        return [{"type": "text", "text": r.text(generated)}]

    def message(self, r: Reply, generated: int) -> dict[str, Any]:
        return {
            "id": r.id,
            "type": "message",
            "role": "assistant",
            "model": r.model,
            "content": self._content(r, generated),
            "stop_reason": r.finish_reason,
            "stop_sequence": None,
            "usage": self.usage(r, generated),
        }

    def stream_head(self, r: Reply) -> list[Any]:
        """message_start, the first content_block_start, then a ping, as the API sends."""
        start = self.message(r, 0)
        start["content"] = []
        start["stop_reason"] = None
        start["usage"]["output_tokens"] = 1  # Anthropic's message_start says 1
        if r.tool_call is not None:
            block = {
                "type": "tool_use",
                "id": r.tool_call.id,
                "name": r.tool_call.name,
                "input": {},
            }
        else:
            block = {"type": "text", "text": ""}
        return [
            _event("message_start", {"type": "message_start", "message": start}),
            _event(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": block},
            ),
            b'event: ping\ndata: {"type": "ping"}\n\n',
        ]

    def stream_token(self, r: Reply, i: int) -> list[Any]:
        if r.tool_call is not None:
            delta = {"type": "input_json_delta", "partial_json": r.tool_call.piece(i, r.max_tokens)}
        else:
            delta = {"type": "text_delta", "text": filler_token(i)}
        ev = {"type": "content_block_delta", "index": 0, "delta": delta}
        return [_event("content_block_delta", ev)]

    def stream_tail(self, r: Reply, generated: int) -> list[Any]:
        usage = self.usage(r, generated)
        del usage["cache_creation"], usage["service_tier"]
        return [
            _event("content_block_stop", {"type": "content_block_stop", "index": 0}),
            _event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": r.finish_reason, "stop_sequence": None},
                    "usage": usage,
                },
            ),
            _event("message_stop", {"type": "message_stop"}),
        ]

    def error(
        self,
        status: int,
        message: str,
        type_: str | None = None,
        code: str | int | None = None,
        param: str | None = None,
    ) -> dict[str, Any]:
        return anthropic_error(status, message, type_)

    def models(self, names: list[str], max_model_len: int) -> dict[str, Any]:
        data = [
            {"type": "model", "id": n, "display_name": n, "created_at": "2025-01-01T00:00:00Z"}
            for n in names
        ]
        return {
            "data": data,
            "has_more": False,
            "first_id": names[0] if names else None,
            "last_id": names[-1] if names else None,
        }
