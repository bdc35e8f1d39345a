"""Which upstream answers move a request to its next target, and which go back to the client.

Failover triggers (docs/architecture.md, "The request path"): connect errors and timeouts
before the first byte, 408, 429 (not quota exhaustion), 500, 502, 503, 504, 529. Not other
4xx: those are the client's fault and go back unchanged. A context-length 400 may go to a
target with a larger window.
"""

from __future__ import annotations

import re

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504, 529})
QUOTA_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached", "quota_exceeded"})
_CONTEXT_RE = re.compile(
    rb"maximum context length|context_length_exceeded|exceed_context_size|context window|"
    rb"too many tokens|prompt is too long|exceeds the available context",
    re.IGNORECASE,
)


def is_context_length_error(status: int, body: bytes) -> bool:
    return status == 400 and _CONTEXT_RE.search(body[:4096]) is not None


def failover_reason(status: int, code: str | None, body: bytes) -> str | None:
    """A label-safe reason to try the next target, or None to answer the client now."""
    if status == 429 and code in QUOTA_CODES:
        return None
    if status in RETRYABLE_STATUS:
        return str(status)
    if is_context_length_error(status, body):
        return "context_length"
    return None
