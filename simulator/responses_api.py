"""OpenAI's Responses API in the simulator's `api` mode: `POST /v1/responses` (JSON and
SSE), `GET`/`DELETE /v1/responses/{id}`, `POST /v1/responses/{id}/cancel`,
`GET /v1/responses/{id}/input_items`, with `store`, `previous_response_id` (its own ids)
and `background`, shaped as OpenAI's so the official SDKs parse it.

Token arithmetic is the simulator's (tokens.py): the prompt is the text of the
conversation's items (the previous responses' input and output, then this input) and
the instructions; the answer is `max_output_tokens` filler tokens (status `incomplete`,
reason `max_output_tokens`, as OpenAI reports a cut answer) or the default count
(`completed`). With function tools (and `--tool-calls` not `never`) the answer is a
`function_call` of the first (or the named) tool, until the input ends with a
`function_call_output` (so agent loops end).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from simulator.parse import RequestError
from simulator.responses import random_alnum, tool_arguments
from simulator.tokens import count_text, filler_text, filler_token, message_text


def _item_text(item: Any) -> str:
    """An input or output item's text (message content, call arguments, call output)."""
    if not isinstance(item, dict):
        return ""
    text = message_text(item)
    for key in ("arguments", "output"):
        value = item.get(key)
        if isinstance(value, str):
            text += value
    return text


@dataclass
class ResponseJob:
    """What one POST /v1/responses asks for."""

    model: str
    items: list[dict[str, Any]]  # this request's input, as items
    history: list[dict[str, Any]]  # the previous responses' input and output
    prompt_tokens: int
    max_tokens: int
    explicit_max: bool
    stream: bool
    store: bool
    background: bool
    body: dict[str, Any]
    tool: tuple[str, str] | None = None
    previous_id: str | None = None
    reasoning: int = 0  # output tokens reported as reasoning (--reasoning-tokens)


@dataclass
class Stored:
    response: dict[str, Any]
    input: list[dict[str, Any]]  # the whole conversation's input, this turn's last
    turn: int  # where this turn's input begins in `input`
    task: Any = None  # a background response still running
    extra: dict[str, Any] = field(default_factory=dict)


def _items(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if not isinstance(value, list):
        raise RequestError(
            400,
            "Invalid type for 'input': expected one of a string or an array of input items.",
            param="input",
            code="invalid_type",
        )
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise RequestError(
                400,
                f"Invalid type for 'input[{i}]': expected an object.",
                param=f"input[{i}]",
                code="invalid_type",
            )
        kind = item.get("type", "message")
        if kind == "message" and item.get("role") not in (
            "user",
            "assistant",
            "system",
            "developer",
        ):
            raise RequestError(
                400,
                f"Invalid value for 'input[{i}].role': expected one of user, assistant, "
                "system or developer.",
                param=f"input[{i}].role",
                code="invalid_value",
            )
    return value


def _pick_tool(
    body: dict[str, Any], items: list[dict[str, Any]], mode: str
) -> tuple[str, str] | None:
    tools = [
        t for t in body.get("tools") or () if isinstance(t, dict) and t.get("type") == "function"
    ]
    if mode == "never" or not tools:
        return None
    choice = body.get("tool_choice", "auto")
    if choice == "none":
        return None
    tool = tools[0]
    if isinstance(choice, dict) and choice.get("name"):
        tool = next((t for t in tools if t.get("name") == choice["name"]), tools[0])
    elif (
        mode == "auto"
        and choice == "auto"
        and items
        and items[-1].get("type") == "function_call_output"
    ):
        return None
    return str(tool.get("name", "tool")), tool_arguments(tool.get("parameters"))


def parse_response_request(
    body: Any, store: dict[str, Stored], default_max: int, tool_mode: str
) -> ResponseJob:
    if not isinstance(body, dict):
        raise RequestError(400, "request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError(
            400, "Missing required parameter: 'model'.", "model", "missing_required_parameter"
        )
    if "input" not in body:
        raise RequestError(
            400, "Missing required parameter: 'input'.", "input", "missing_required_parameter"
        )
    items = _items(body["input"])
    for i, t in enumerate(body.get("tools") or ()):
        if not isinstance(t, dict) or not isinstance(t.get("type"), str):
            raise RequestError(
                400, f"Invalid 'tools[{i}]': expected an object with a 'type'.", f"tools[{i}]"
            )
    history: list[dict[str, Any]] = []
    prev_id = body.get("previous_response_id")
    if prev_id is not None:
        prev = store.get(prev_id) if isinstance(prev_id, str) else None
        if prev is None:
            raise RequestError(
                400,
                f"Previous response with id '{prev_id}' not found.",
                "previous_response_id",
                "previous_response_not_found",
            )
        history = [*prev.input, *prev.response["output"]]
    max_out = body.get("max_output_tokens")
    if max_out is not None and (
        isinstance(max_out, bool) or not isinstance(max_out, int) or max_out < 16
    ):
        raise RequestError(
            400,
            "Invalid 'max_output_tokens': integer below minimum value. Expected a value "
            f">= 16, but got {max_out} instead.",
            "max_output_tokens",
            "integer_below_min_value",
        )
    instructions = body.get("instructions")
    prompt = sum(count_text(_item_text(i)) for i in [*history, *items])
    if isinstance(instructions, str) and instructions:
        prompt += count_text(instructions)
    tools = body.get("tools")
    if tools:
        prompt += count_text(orjson.dumps(tools).decode())
    return ResponseJob(
        model=model,
        items=items,
        history=history,
        prompt_tokens=prompt,
        max_tokens=max_out if max_out is not None else default_max,
        explicit_max=max_out is not None,
        stream=bool(body.get("stream")),
        store=body.get("store", True) is not False,
        background=bool(body.get("background")),
        body=body,
        tool=_pick_tool(body, items, tool_mode),
        previous_id=prev_id,
    )


class ResponsesShape:
    """OpenAI's response objects and stream events for one job."""

    def __init__(self, job: ResponseJob) -> None:
        self.job = job
        self.id = f"resp_{random_alnum(48)}"
        self.created = int(time.time())
        self.seq = 0
        if job.tool is not None:
            self.item_id = f"fc_{random_alnum(48)}"
            self.call_id = f"call_{random_alnum(24)}"
        else:
            self.item_id = f"msg_{random_alnum(48)}"
            self.call_id = ""

    def usage(self, generated: int) -> dict[str, Any]:
        p = self.job.prompt_tokens
        return {
            "input_tokens": p,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": generated,
            "output_tokens_details": {"reasoning_tokens": min(self.job.reasoning, generated)},
            "total_tokens": p + generated,
        }

    def final_status(self, generated: int) -> str:
        if self.job.tool is None and self.job.explicit_max and generated >= self.job.max_tokens:
            return "incomplete"
        return "completed"

    def item(self, generated: int, done: bool) -> dict[str, Any]:
        status = "completed" if done else "in_progress"
        if self.job.tool is not None:
            name, args = self.job.tool
            return {
                "id": self.item_id,
                "type": "function_call",
                "status": status,
                "arguments": args if done else "",
                "call_id": self.call_id,
                "name": name,
            }
        content = [self.part(generated)] if done else []
        if done and self.final_status(generated) == "incomplete":
            status = "incomplete"
        return {
            "id": self.item_id,
            "type": "message",
            "status": status,
            "content": content,
            "role": "assistant",
        }

    def part(self, generated: int) -> dict[str, Any]:
        return {
            "type": "output_text",
            "annotations": [],
            "logprobs": [],
            "text": filler_text(generated) if generated else "",
        }

    def response(self, status: str, generated: int | None) -> dict[str, Any]:
        body = self.job.body
        final = generated is not None and status in ("completed", "incomplete")
        text = (
            body.get("text") if isinstance(body.get("text"), dict) else {"format": {"type": "text"}}
        )
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "background": self.job.background,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"}
            if status == "incomplete"
            else None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "max_tool_calls": None,
            "model": self.job.model,
            "output": [self.item(generated or 0, True)] if final else [],
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": self.job.previous_id,
            "reasoning": {"effort": None, "summary": None},
            "service_tier": "default",
            "store": self.job.store,
            "temperature": body.get("temperature", 1.0),
            "text": text,
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "top_logprobs": 0,
            "top_p": body.get("top_p", 1.0),
            "truncation": "disabled",
            "usage": self.usage(generated) if final and generated is not None else None,
            "user": None,
            "metadata": body.get("metadata") or {},
        }

    def event(self, kind: str, **fields: Any) -> dict[str, Any]:
        ev = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return ev

    def head(self) -> list[dict[str, Any]]:
        return [
            self.event("response.created", response=self.response("in_progress", None)),
            self.event("response.in_progress", response=self.response("in_progress", None)),
            self.event("response.output_item.added", output_index=0, item=self.item(0, False)),
            *(
                []
                if self.job.tool is not None
                else [
                    self.event(
                        "response.content_part.added",
                        item_id=self.item_id,
                        output_index=0,
                        content_index=0,
                        part=self.part(0),
                    )
                ]
            ),
        ]

    def token(self, i: int, total: int) -> dict[str, Any]:
        if self.job.tool is not None:
            args = self.job.tool[1]
            piece = args[i * len(args) // total : (i + 1) * len(args) // total]
            return self.event(
                "response.function_call_arguments.delta",
                item_id=self.item_id,
                output_index=0,
                delta=piece,
            )
        return self.event(
            "response.output_text.delta",
            item_id=self.item_id,
            output_index=0,
            content_index=0,
            delta=filler_token(i),
            logprobs=[],
        )

    def tail(self, generated: int) -> list[dict[str, Any]]:
        out = []
        if self.job.tool is not None:
            out.append(
                self.event(
                    "response.function_call_arguments.done",
                    item_id=self.item_id,
                    output_index=0,
                    arguments=self.job.tool[1],
                )
            )
        else:
            part = self.part(generated)
            out += [
                self.event(
                    "response.output_text.done",
                    item_id=self.item_id,
                    output_index=0,
                    content_index=0,
                    text=part["text"],
                    logprobs=[],
                ),
                self.event(
                    "response.content_part.done",
                    item_id=self.item_id,
                    output_index=0,
                    content_index=0,
                    part=part,
                ),
            ]
        out.append(
            self.event("response.output_item.done", output_index=0, item=self.item(generated, True))
        )
        status = self.final_status(generated)
        out.append(self.event(f"response.{status}", response=self.response(status, generated)))
        return out

    # -- the server's stream loop (server.py `_stream`) reads these, as a Dialect's

    done = None

    def stream_head(self, reply: Any) -> list[bytes]:
        return [_sse(e) for e in self.head()]

    def stream_token(self, reply: Any, i: int) -> list[bytes]:
        return [_sse(self.token(i, max(1, self.job.max_tokens)))]

    def stream_tail(self, reply: Any, generated: int) -> list[bytes]:
        return [_sse(e) for e in self.tail(generated)]


def _sse(event: dict[str, Any]) -> bytes:
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


def input_items_page(stored: Stored, order: str, limit: int) -> dict[str, Any]:
    items = [
        {"id": item.get("id") or f"msg_{random_alnum(48)}", **item}
        for item in stored.input[stored.turn :]
    ]
    if order != "asc":
        items.reverse()
    items = items[:limit]
    return {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
        "has_more": False,
    }
