"""Response and error bodies, shaped like vLLM's OpenAI server or like OpenAI's API.

Everything here is plain dicts; the server serialises them with orjson. A `Reply`
describes one request's output (ids, model, token counts, tool call); a `Dialect`
turns it into a body, stream chunks or an error, so the server never knows which
upstream it is pretending to be.
"""

from __future__ import annotations

import base64
import hashlib
import random
import secrets
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from simulator.tokens import filler_text, filler_token

# Ids need to be unique, not secret: a seeded-from-urandom PRNG is ~30x cheaper per id.
_rng = random.Random(secrets.randbits(64))


def random_hex() -> str:
    return f"{_rng.getrandbits(128):032x}"


def random_alnum(n: int) -> str:
    """n lowercase hex characters: alphanumeric, like OpenAI's ids, at a fraction of the cost."""
    return f"{_rng.getrandbits(4 * n):0{n}x}"


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text

    def piece(self, i: int, total: int) -> str:
        """The i-th of `total` slices of the arguments, one per generated token."""
        size = len(self.arguments)
        return self.arguments[i * size // total : (i + 1) * size // total]


@dataclass
class Reply:
    """What one request produced; counts are exact and predictable (see tokens.py)."""

    kind: str  # "chat" | "completion" | "embedding"
    id: str
    model: str
    prompt_tokens: int
    max_tokens: int  # per choice
    n: int = 1
    cached_tokens: int = 0  # vLLM's prefix cache hits; Anthropic's cache read
    cache_creation_tokens: int = 0  # Anthropic's cache write
    finish_reason: str = "length"
    tool_call: ToolCall | None = None
    include_usage: bool = False
    continuous_usage: bool = False
    created: int = field(default_factory=lambda: int(time.time()))

    def text(self, tokens: int) -> str:
        return filler_text(tokens)


class Dialect:
    """Shapes shared by both upstreams; subclasses differ where the real servers do."""

    name = "base"
    show_token_details = False
    done: bytes | None = b"data: [DONE]\n\n"  # the stream's last event, if the API sends one

    # -- ids ---------------------------------------------------------------------------
    def chat_id(self) -> str:
        raise NotImplementedError

    def completion_id(self) -> str:
        raise NotImplementedError

    def embedding_id(self) -> str:
        raise NotImplementedError

    def tool_call_id(self) -> str:
        raise NotImplementedError

    # -- usage -------------------------------------------------------------------------
    def usage(self, r: Reply, completion_tokens: int) -> dict[str, Any]:
        raise NotImplementedError

    # -- non-streaming bodies ------------------------------------------------------------
    def chat_message(self, r: Reply, generated: int) -> dict[str, Any]:
        raise NotImplementedError

    def chat_completion(self, r: Reply, generated: int) -> dict[str, Any]:
        choices = [
            {
                "index": i,
                "message": self.chat_message(r, generated),
                "logprobs": None,
                "finish_reason": r.finish_reason,
                **self._choice_extra(r),
            }
            for i in range(r.n)
        ]
        return {
            "id": r.id,
            "object": "chat.completion",
            "created": r.created,
            "model": r.model,
            "choices": choices,
            "usage": self.usage(r, generated * r.n),
            **self._body_extra(r),
        }

    def completion(self, r: Reply, generated: int) -> dict[str, Any]:
        text = r.text(generated)
        choices = [
            {
                "index": i,
                "text": text,
                "logprobs": None,
                "finish_reason": r.finish_reason,
                **self._choice_extra(r),
            }
            for i in range(r.n)
        ]
        return {
            "id": r.id,
            "object": "text_completion",
            "created": r.created,
            "model": r.model,
            "choices": choices,
            "usage": self.usage(r, generated * r.n),
            **self._body_extra(r),
        }

    def embeddings(self, r: Reply, inputs: list[str], dim: int, b64: bool) -> dict[str, Any]:
        data = [
            {"index": i, "object": "embedding", "embedding": embedding(text, dim, b64)}
            for i, text in enumerate(inputs)
        ]
        return {"object": "list", "data": data, "model": r.model, "usage": self.usage(r, 0)}

    def _choice_extra(self, r: Reply) -> dict[str, Any]:
        return {}

    def _body_extra(self, r: Reply) -> dict[str, Any]:
        return {}

    # -- streaming ----------------------------------------------------------------------
    def chunk(self, r: Reply, choices: list[dict[str, Any]], usage: Any = None) -> dict[str, Any]:
        raise NotImplementedError

    def stream_head(self, r: Reply) -> list[dict[str, Any]]:
        """Chunks before the first token (sent when the first token is ready)."""
        return []

    def stream_token(self, r: Reply, i: int) -> list[dict[str, Any]]:
        """Chunks for token i (0-based) of every choice."""
        raise NotImplementedError

    def stream_tail(self, r: Reply, generated: int) -> list[dict[str, Any]]:
        """Chunks after the last token: the usage-only chunk when asked for."""
        if r.include_usage:
            return [self.chunk(r, [], self.usage(r, generated * r.n))]
        return []

    def _delta(self, r: Reply, i: int) -> dict[str, Any]:
        if r.tool_call is None:
            return {"content": filler_token(i)}
        piece = r.tool_call.piece(i, r.max_tokens)
        if i == 0:
            call = {
                "index": 0,
                "id": r.tool_call.id,
                "type": "function",
                "function": {"name": r.tool_call.name, "arguments": piece},
            }
        else:
            call = {"index": 0, "function": {"arguments": piece}}
        return {"tool_calls": [call]}

    # -- errors -------------------------------------------------------------------------
    def error(
        self,
        status: int,
        message: str,
        type_: str | None = None,
        code: str | int | None = None,
        param: str | None = None,
    ) -> dict[str, Any]:
        raise NotImplementedError

    def models(self, names: list[str], max_model_len: int) -> dict[str, Any]:
        raise NotImplementedError


VLLM_ERROR_TYPES = {
    400: "BadRequestError",
    401: "Unauthorized",
    404: "NotFoundError",
    408: "RequestTimeout",
    422: "UnprocessableEntityError",
    429: "TooManyRequests",
    500: "InternalServerError",
    501: "NotImplementedError",
    503: "ServiceUnavailableError",
}


class VllmDialect(Dialect):
    """vLLM's OpenAI-compatible server, as 0.32.0 answers (tests/e2e/test_vllm_contract.py
    sends the same requests to the real one and compares every key)."""

    name = "vllm"
    fingerprint = "vllm-0.32.0-sim"

    def __init__(self, flat_errors: bool = False, token_details: bool = False) -> None:
        self.flat_errors = flat_errors
        self.show_token_details = token_details

    def chat_id(self) -> str:
        return f"chatcmpl-{random_hex()}"

    def completion_id(self) -> str:
        return f"cmpl-{random_hex()}"

    def embedding_id(self) -> str:
        return f"embd-{random_hex()}"

    def tool_call_id(self) -> str:
        return f"chatcmpl-tool-{random_hex()}"

    def _details(self, r: Reply) -> dict[str, int] | None:
        return {"cached_tokens": r.cached_tokens} if self.show_token_details else None

    def usage(self, r: Reply, completion_tokens: int) -> dict[str, Any]:
        """A whole answer's usage: both details keys, null unless there are details."""
        return {
            "prompt_tokens": r.prompt_tokens,
            "total_tokens": r.prompt_tokens + completion_tokens,
            "completion_tokens": completion_tokens,
            "prompt_tokens_details": self._details(r),
            "completion_tokens_details": None,
        }

    def stream_usage(self, r: Reply, completion_tokens: int) -> dict[str, Any]:
        """The usage-only chunk's usage: the three counts (details only when there are)."""
        out: dict[str, Any] = {
            "prompt_tokens": r.prompt_tokens,
            "total_tokens": r.prompt_tokens + completion_tokens,
            "completion_tokens": completion_tokens,
        }
        details = self._details(r)
        if details is not None:
            out["prompt_tokens_details"] = details
        return out

    def chat_message(self, r: Reply, generated: int) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None if r.tool_call is not None else r.text(generated),
            "refusal": None,
            "annotations": None,
            "audio": None,
            "function_call": None,
        }
        if r.tool_call is not None:  # vLLM leaves the key out when there is no call
            message["tool_calls"] = [
                {
                    "id": r.tool_call.id,
                    "type": "function",
                    "function": {"name": r.tool_call.name, "arguments": r.tool_call.arguments},
                }
            ]
        message["reasoning"] = None
        return message

    def _choice_extra(self, r: Reply) -> dict[str, Any]:
        if r.kind == "chat":
            return {"stop_reason": None, "token_ids": None, "routed_experts": None}
        return {
            "stop_reason": None,
            "token_ids": None,
            "prompt_logprobs": None,
            "prompt_token_ids": None,
            "routed_experts": None,
        }

    def _body_extra(self, r: Reply) -> dict[str, Any]:
        out: dict[str, Any] = {"service_tier": None, "system_fingerprint": self.fingerprint}
        if r.kind == "chat":
            out |= {"prompt_logprobs": None, "prompt_token_ids": None, "prompt_text": None}
        return out | {"kv_transfer_params": None, "ec_transfer_params": None, "metrics": None}

    def embeddings(self, r: Reply, inputs: list[str], dim: int, b64: bool) -> dict[str, Any]:
        body = super().embeddings(r, inputs, dim, b64)
        return {"id": r.id, "object": "list", "created": r.created, **body}

    def chunk(self, r: Reply, choices: list[dict[str, Any]], usage: Any = None) -> dict[str, Any]:
        obj = "chat.completion.chunk" if r.kind == "chat" else "text_completion"
        out: dict[str, Any] = {
            "id": r.id,
            "object": obj,
            "created": r.created,
            "model": r.model,
            "choices": choices,
        }
        if usage is not None:
            out["usage"] = usage
        return out

    def _running_usage(self, r: Reply, completion_tokens: int) -> dict[str, Any] | None:
        # vLLM honours continuous_usage_stats only together with include_usage; a chat
        # chunk's running usage has completion_tokens_details (null), a completion's not.
        if not (r.include_usage and r.continuous_usage):
            return None
        usage = self.stream_usage(r, completion_tokens)
        if r.kind == "chat":
            usage["completion_tokens_details"] = None
        return usage

    def stream_head(self, r: Reply) -> list[dict[str, Any]]:
        if r.kind != "chat":
            return []
        out = []
        for i in range(r.n):
            choice = {
                "index": i,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": None,
                "finish_reason": None,
            }
            chunk = self.chunk(r, [choice], self._running_usage(r, 0))
            out.append(chunk | {"prompt_token_ids": None, "prompt_text": None})
        return out

    def stream_token(self, r: Reply, i: int) -> list[dict[str, Any]]:
        last = i + 1 >= r.max_tokens
        finish = r.finish_reason if last else None
        usage = self._running_usage(r, (i + 1) * r.n)
        out = []
        for c in range(r.n):
            choice: dict[str, Any]
            if r.kind == "chat":
                choice = {
                    "index": c,
                    "delta": self._delta(r, i),
                    "logprobs": None,
                    "finish_reason": finish,
                }
                if last:
                    choice["stop_reason"] = None
                choice["token_ids"] = None
            else:
                choice = {
                    "index": c,
                    "text": filler_token(i),
                    "logprobs": None,
                    "finish_reason": finish,
                    "stop_reason": None,
                    "prompt_token_ids": None,
                    "token_ids": None,
                }
            out.append(self.chunk(r, [choice], usage))
        if last and not r.include_usage:  # the stream's last chunk carries the fingerprint
            out[-1]["system_fingerprint"] = self.fingerprint
        return out

    def stream_tail(self, r: Reply, generated: int) -> list[dict[str, Any]]:
        if not r.include_usage:
            return []
        chunk = self.chunk(r, [], self.stream_usage(r, generated * r.n))
        return [chunk | {"system_fingerprint": self.fingerprint}]

    def error(
        self,
        status: int,
        message: str,
        type_: str | None = None,
        code: str | int | None = None,
        param: str | None = None,
    ) -> dict[str, Any]:
        err = {
            "message": message,
            "type": type_ or VLLM_ERROR_TYPES.get(status, "InternalServerError"),
            "param": param,
            "code": status if code is None else code,
        }
        if self.flat_errors:
            return {"object": "error", **err}
        return {"error": err}

    def models(self, names: list[str], max_model_len: int) -> dict[str, Any]:
        created = int(time.time())
        return {
            "object": "list",
            "data": [
                {
                    "id": name,
                    "object": "model",
                    "created": created,
                    "owned_by": "vllm",
                    "root": names[0],
                    "parent": None,
                    "max_model_len": max_model_len,
                    "permission": [
                        {
                            "id": f"modelperm-{random_hex()}",
                            "object": "model_permission",
                            "created": created,
                            "allow_create_engine": False,
                            "allow_sampling": True,
                            "allow_logprobs": True,
                            "allow_search_indices": False,
                            "allow_view": True,
                            "allow_fine_tuning": False,
                            "organization": "*",
                            "group": None,
                            "is_blocking": False,
                        }
                    ],
                }
                for name in names
            ],
        }


OPENAI_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    408: ("timeout_error", None),
    409: ("invalid_request_error", None),
    422: ("invalid_request_error", None),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    500: ("server_error", None),
    502: ("server_error", None),
    503: ("server_error", "service_unavailable"),
    504: ("server_error", None),
    529: ("overloaded_error", "overloaded"),
}


class OpenAIDialect(Dialect):
    """OpenAI's public API (chat completions, legacy completions, embeddings)."""

    name = "openai"
    show_token_details = True

    def chat_id(self) -> str:
        return f"chatcmpl-{random_alnum(29)}"

    def completion_id(self) -> str:
        return f"cmpl-{random_alnum(29)}"

    def embedding_id(self) -> str:
        return ""

    def tool_call_id(self) -> str:
        return f"call_{random_alnum(24)}"

    def usage(self, r: Reply, completion_tokens: int) -> dict[str, Any]:
        if r.kind == "embedding":
            return {"prompt_tokens": r.prompt_tokens, "total_tokens": r.prompt_tokens}
        return {
            "prompt_tokens": r.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": r.prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": r.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def chat_message(self, r: Reply, generated: int) -> dict[str, Any]:
        msg: dict[str, Any] = {
            "role": "assistant",
            "content": None,
            "refusal": None,
            "annotations": [],
        }
        if r.tool_call is not None:
            msg["tool_calls"] = [
                {
                    "id": r.tool_call.id,
                    "type": "function",
                    "function": {"name": r.tool_call.name, "arguments": r.tool_call.arguments},
                }
            ]
        else:
            msg["content"] = r.text(generated)
        return msg

    def _body_extra(self, r: Reply) -> dict[str, Any]:
        return {"service_tier": "default", "system_fingerprint": "fp_sim0000001"}

    def chunk(self, r: Reply, choices: list[dict[str, Any]], usage: Any = None) -> dict[str, Any]:
        obj = "chat.completion.chunk" if r.kind == "chat" else "text_completion"
        out: dict[str, Any] = {
            "id": r.id,
            "object": obj,
            "created": r.created,
            "model": r.model,
            "service_tier": "default",
            "system_fingerprint": "fp_sim0000001",
            "choices": choices,
        }
        if r.include_usage:
            out["usage"] = usage
        return out

    def stream_head(self, r: Reply) -> list[dict[str, Any]]:
        if r.kind != "chat":
            return []
        delta: dict[str, Any] = {"role": "assistant", "content": "", "refusal": None}
        if r.tool_call is not None:
            delta["content"] = None
        return [
            self.chunk(r, [{"index": i, "delta": delta, "logprobs": None, "finish_reason": None}])
            for i in range(r.n)
        ]

    def stream_token(self, r: Reply, i: int) -> list[dict[str, Any]]:
        out = []
        for c in range(r.n):
            if r.kind == "chat":
                choice = {
                    "index": c,
                    "delta": self._delta(r, i),
                    "logprobs": None,
                    "finish_reason": None,
                }
            else:
                choice = {
                    "index": c,
                    "text": filler_token(i),
                    "logprobs": None,
                    "finish_reason": None,
                }
            out.append(self.chunk(r, [choice]))
        return out

    def stream_tail(self, r: Reply, generated: int) -> list[dict[str, Any]]:
        out = []
        for c in range(r.n):
            if r.kind == "chat":
                choice = {
                    "index": c,
                    "delta": {},
                    "logprobs": None,
                    "finish_reason": r.finish_reason,
                }
            else:
                choice = {
                    "index": c,
                    "text": "",
                    "logprobs": None,
                    "finish_reason": r.finish_reason,
                }
            out.append(self.chunk(r, [choice]))
        return out + super().stream_tail(r, generated)

    def error(
        self,
        status: int,
        message: str,
        type_: str | None = None,
        code: str | int | None = None,
        param: str | None = None,
    ) -> dict[str, Any]:
        default_type, default_code = OPENAI_ERROR_TYPES.get(status, ("server_error", None))
        return {
            "error": {
                "message": message,
                "type": type_ or default_type,
                "param": param,
                "code": default_code if code is None else code,
            }
        }

    def models(self, names: list[str], max_model_len: int) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": 1715367049, "owned_by": "system"}
                for name in names
            ],
        }


def anthropic_error(status: int, message: str | None, type_: str | None) -> dict[str, Any]:
    """Anthropic's error body, e.g. the 529 `overloaded_error`."""
    default = {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        500: "api_error",
        529: "overloaded_error",
    }.get(status, "api_error")
    return {
        "type": "error",
        "error": {"type": type_ or default, "message": message or "Overloaded"},
    }


def embedding(text: str, dim: int, b64: bool) -> list[float] | str:
    """A unit-ish vector derived from the text, so equal inputs embed equally."""
    seed = hashlib.blake2b(text.encode(), digest_size=32).digest()
    raw = (seed * (dim * 4 // len(seed) + 1))[:dim]
    values = [(b - 127.5) / 127.5 for b in raw]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    values = [v / norm for v in values]
    if b64:
        return base64.b64encode(struct.pack(f"<{dim}f", *values)).decode()
    return values


def tool_arguments(schema: Any) -> str:
    """JSON arguments that satisfy a tool's parameter schema in the simplest way."""
    return orjson.dumps(_fill(schema if isinstance(schema, dict) else {})).decode()


def _fill(schema: dict[str, Any]) -> Any:
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object":
        props = schema.get("properties") or {}
        names = schema.get("required") or list(props)
        return {name: _fill(props.get(name) or {}) for name in names}
    return {
        "string": "sim",
        "integer": 1,
        "number": 1.0,
        "boolean": True,
        "array": [],
        "null": None,
    }.get(kind, "sim")
