"""Token estimates for upstreams that report no usage (the event is flagged `estimated`).

tiktoken's encodings are read from the files litellm ships (never downloaded), and
loaded lazily: most requests carry upstream usage and never need this.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tiktoken import Encoding


@functools.cache
def _encoding() -> Encoding | None:
    spec = importlib.util.find_spec("litellm")
    if spec is not None and spec.submodule_search_locations:
        bundled = (
            Path(next(iter(spec.submodule_search_locations))) / "litellm_core_utils" / "tokenizers"
        )
        if bundled.is_dir():
            os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(bundled))
    try:
        import tiktoken

        return tiktoken.get_encoding("cl100k_base")
    except Exception:  # no bundled file and no network: fall back to the heuristic
        return None


def count_text_tokens(text: str) -> int:
    enc = _encoding()
    if enc is None:
        return max(1, (len(text) + 3) // 4) if text else 0
    return len(enc.encode(text, disallowed_special=()))


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        out: list[str] = []
        for item in value:
            out.extend(_texts(item))
        return out
    if isinstance(value, dict):
        out = []
        for key in ("content", "text", "arguments", "name"):
            if key in value:
                out.extend(_texts(value[key]))
        if "tool_calls" in value:
            out.extend(_texts(value["tool_calls"]))
        if "function" in value:
            out.extend(_texts(value["function"]))
        return out
    return []


def estimate_prompt_tokens(request: dict[str, Any]) -> int:
    """Prompt tokens of a chat/completions/embeddings body, ~4 tokens overhead per message."""
    if "messages" in request and isinstance(request["messages"], list):
        msgs = request["messages"]
        return sum(count_text_tokens(t) for t in _texts(msgs)) + 4 * len(msgs) + 3
    for key in ("prompt", "input"):
        if key in request:
            return sum(count_text_tokens(t) for t in _texts(request[key]))
    return 0


def cheap_prompt_estimate(body_len: int) -> int:
    """For routing decisions on the hot path: ~4 bytes of JSON per token, no tokenizer."""
    return body_len // 4
