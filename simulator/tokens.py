"""Deterministic, cheap token arithmetic, so tests can predict `usage` exactly.

Rules (the contract tests rely on):
- a text costs ceil(len(text) / 4) tokens, at least 1 (len in characters);
- a chat prompt costs the sum over messages of the tokens of each message's text
  (string content, or its text parts joined, plus any tool-call arguments), plus the
  tokens of the JSON of `tools` when the request has tools;
- a completions prompt costs the tokens of its string, or its length if it is a list
  of token ids;
- the completion is exactly `max_tokens` (or `max_completion_tokens`) tokens per
  choice, else the configured default; each generated token is one filler word.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import lru_cache
from typing import Any

import orjson

# fmt: off
_WORDS = [
    "the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "seven",
    "busy", "GPUs", "hum", "along", "in", "the", "rack", "and", "the", "proxy", "counts",
    "every", "token", "it", "sees",
]
# fmt: on

BLOCK_SIZE = 16  # vLLM's KV block: prefix-cache hits are whole blocks


def count_text(text: str) -> int:
    return max(1, (len(text) + 3) // 4)


def message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        text = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    else:
        text = ""
    for call in message.get("tool_calls") or ():
        if isinstance(call, dict):
            text += str((call.get("function") or {}).get("arguments", ""))
    return text


def count_chat(messages: list[dict[str, Any]], tools: list[Any] | None = None) -> int:
    total = sum(count_text(message_text(m)) for m in messages)
    if tools:
        total += count_text(orjson.dumps(tools).decode())
    return total


def count_prompt(prompt: Any) -> int:
    """A completions prompt: a string, or a list of token ids."""
    if isinstance(prompt, str):
        return count_text(prompt)
    if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
        return max(1, len(prompt))
    raise ValueError("prompt must be a string or a list of token ids")


def filler_token(i: int) -> str:
    """The i-th generated token: a word with its leading space (the first has none)."""
    word = _WORDS[i % len(_WORDS)]
    return word if i == 0 else " " + word


@lru_cache(maxsize=1024)
def filler_text(n: int) -> str:
    return "".join(filler_token(i) for i in range(n))


class PrefixCache:
    """Which chat-message prefixes were seen before, like vLLM's automatic prefix caching.

    A hit is the longest earlier-seen prefix of whole messages, rounded down to KV
    blocks and never the full prompt (the last token is always computed).
    """

    def __init__(self, capacity: int = 50_000) -> None:
        self._seen: OrderedDict[int, None] = OrderedDict()
        self._capacity = capacity

    def lookup_and_insert(self, messages: list[dict[str, Any]], prompt_tokens: int) -> int:
        h = 0
        tokens = 0
        cached = 0
        for m in messages:
            h = hash((h, m.get("role"), message_text(m)))
            tokens += count_text(message_text(m))
            if h in self._seen:
                self._seen.move_to_end(h)
                cached = tokens
            else:
                self._seen[h] = None
        while len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        cached = min(cached, prompt_tokens - 1)
        return max(0, cached // BLOCK_SIZE * BLOCK_SIZE)

    def clear(self) -> None:
        self._seen.clear()
