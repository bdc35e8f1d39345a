"""Request dialects and the translations between them.

A *dialect* is the wire format of one kind of request and its answer. Each ingress
route speaks one; each backend declares the ones it speaks natively. When the two
differ, the modules here translate: pure functions over dicts (requests, answers,
errors) and stateful objects over SSE bytes (streams), with no I/O, so they can be
tested by properties and benchmarked alone. See docs/dialects.md for the mapping table.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Dialect(StrEnum):
    OPENAI_CHAT = "openai-chat"
    OPENAI_COMPLETIONS = "openai-completions"
    OPENAI_EMBEDDINGS = "openai-embeddings"
    ANTHROPIC_MESSAGES = "anthropic-messages"
    OPENAI_RESPONSES = "openai-responses"


class TranslationError(Exception):
    """A request field the target dialect cannot express: refused, never silently lost.

    Carries what both error shapes need, so the ingress route answers in its own dialect
    (OpenAI's `{"error": {...}}` or Anthropic's `{"type": "error", ...}`).
    """

    def __init__(
        self,
        message: str,
        param: str | None = None,
        *,
        status: int = 400,
        code: str | None = "unsupported_parameter",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status
        self.code = code

    def openai_error(self) -> dict[str, Any]:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {
            "error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}
        }

    def anthropic_error(self) -> dict[str, Any]:
        kind = "invalid_request_error" if self.status < 500 else "api_error"
        where = f"{self.param}: " if self.param else ""
        return {"type": "error", "error": {"type": kind, "message": where + self.message}}


def malformed_answer(exc: Exception) -> TranslationError:
    """An upstream answer not of its dialect's shape: a 502, never the proxy's exception."""
    return TranslationError(
        f"the upstream's answer is malformed ({type(exc).__name__}: {exc})",
        status=502,
        code="bad_upstream_answer",
    )


@dataclass(slots=True)
class TokenUsage:
    """What one answer cost, in Anthropic's split (OpenAI's `prompt_tokens` is the sum of
    the three input kinds): the meter takes it whatever the dialect was."""

    input_tokens: int = 0  # not from or into a cache
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    reasoning_tokens: int = 0  # among output_tokens (OpenAI's completion_tokens_details)

    @property
    def prompt_tokens(self) -> int:
        return self.input_tokens + self.cache_read_tokens + self.cache_creation_tokens


__all__ = ["Dialect", "TokenUsage", "TranslationError", "malformed_answer"]
