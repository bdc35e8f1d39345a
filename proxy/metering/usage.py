"""Usage of one answer as the upstream reported it, or estimated and flagged as such.

The request path hands every answer here (a JSON body, or the SSE tap of a relayed
stream); this is the one place that turns an upstream's `usage` into the UsageEvent's
token counts.
"""

from __future__ import annotations

from typing import Any

import orjson

from proxy.metering.events import UsageEvent
from proxy.metering.tokens import count_text_tokens, estimate_prompt_tokens
from proxy.request.sse import USAGE_OBJECT, UsageTap


def stream_usage(ev: UsageEvent, data: dict[str, Any] | None, tap: UsageTap) -> None:
    """Usage of a relayed stream: the upstream's, or an estimate flagged as such."""
    usage = tap.usage()
    if usage is not None:
        apply_usage(usage, ev)
        if tap.saw_done or ev.completion_tokens >= tap.content_events - 1:
            return
    estimate_usage(ev, data, tap, None)


def apply_usage(usage: dict[str, Any], ev: UsageEvent) -> None:
    p = usage.get("prompt_tokens")
    c = usage.get("completion_tokens")
    ev.prompt_tokens = p if isinstance(p, int) and p >= 0 else 0
    ev.completion_tokens = c if isinstance(c, int) and c >= 0 else 0
    details = usage.get("prompt_tokens_details")
    if isinstance(details, dict):
        cached = details.get("cached_tokens")
        if isinstance(cached, int) and cached >= 0:
            ev.cached_tokens = min(cached, ev.prompt_tokens)
    # Cache writes: no OpenAI field; Anthropic's count, as LiteLLM and our translation write it.
    written = usage.get("cache_creation_input_tokens")
    if isinstance(written, int) and written > 0:
        ev.cache_write_tokens = min(written, ev.prompt_tokens - ev.cached_tokens)


def usage_from_body(raw: bytes, ev: UsageEvent) -> None:
    i = raw.rfind(b'"usage"')
    if i < 0:
        return
    m = USAGE_OBJECT.match(raw, i)  # parsing the usage alone: cheaper than the answer whole
    try:
        if m is not None:
            usage = orjson.loads(m.group(1))
        else:  # another shape: parse the answer whole
            data = orjson.loads(raw)
            usage = data.get("usage") if isinstance(data, dict) else None
    except orjson.JSONDecodeError:
        return
    if isinstance(usage, dict):
        apply_usage(usage, ev)


def estimate_usage(
    ev: UsageEvent, data: dict[str, Any] | None, tap: UsageTap | None, raw: bytes | None
) -> None:
    """No usage from the upstream: count what we can and flag the event `estimated`.

    Prompt tokens come from the request (tiktoken, loaded lazily); completion tokens
    from the content events relayed (one token per event, as vLLM streams them) or
    the text of a non-streamed answer.
    """
    ev.estimated = True
    if ev.prompt_tokens == 0 and data is not None:
        ev.prompt_tokens = estimate_prompt_tokens(data)
    if tap is not None:
        ev.completion_tokens = max(ev.completion_tokens, tap.content_events)
    elif raw:
        try:
            data = orjson.loads(raw)
            texts = [
                c.get("message", {}).get("content") or c.get("text") or ""
                for c in data.get("choices", [])
                if isinstance(c, dict)
            ]
            ev.completion_tokens = sum(count_text_tokens(t) for t in texts if isinstance(t, str))
        except Exception:
            pass
