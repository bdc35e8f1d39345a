"""OpenAI-style request rate limit: the `x-ratelimit-*-requests` headers, enforced on demand.

A fixed one-minute window is enough to exercise a client's parsing of the headers
and its handling of 429s; OpenAI's exact algorithm is not observable anyway.
"""

from __future__ import annotations

import time

ADVERTISED_RPM = 30_000  # what the headers say when no limit is enforced


def format_reset(seconds: float) -> str:
    """OpenAI's duration format: `120ms`, `1s`, `6m0s`."""
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    whole = int(seconds)
    if whole < 60:
        return f"{seconds:.3g}s"
    return f"{whole // 60}m{whole % 60}s"


class RateWindow:
    def __init__(self, limit: int | None, clock=time.monotonic) -> None:
        self.enforced = limit is not None
        self.limit = limit if limit is not None else ADVERTISED_RPM
        self._clock = clock
        self._start = clock()
        self._used = 0

    def take(self) -> tuple[bool, dict[str, str]]:
        """Count one request; returns (allowed, headers)."""
        now = self._clock()
        if now - self._start >= 60.0:
            self._start = now
            self._used = 0
        allowed = not self.enforced or self._used < self.limit
        if allowed:
            self._used += 1
        reset = 60.0 - (now - self._start)
        headers = {
            "x-ratelimit-limit-requests": str(self.limit),
            "x-ratelimit-remaining-requests": str(max(0, self.limit - self._used)),
            "x-ratelimit-reset-requests": format_reset(reset),
        }
        return allowed, headers

    def seconds_to_reset(self) -> float:
        return max(0.0, 60.0 - (self._clock() - self._start))
