"""A circuit breaker per backend: stop sending to a backend that keeps failing.

closed ─(N consecutive failures, or failure ratio over a window)─► open
open ─(cooldown elapsed)─► half_open: exactly one probe request is let through
half_open ─probe succeeds─► closed;  ─probe fails─► open (a fresh cooldown)

Two questions are asked of it, and they differ on purpose: `available()` (may the
router plan this backend? no side effect) and `allow()` (may this attempt go now? takes
the half-open probe slot). A request plans several targets but tries only some; only
the one it actually tries may take the probe.

Everything is O(1) per event and synchronous: the request path calls it inline.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from proxy.config import Breaker as BreakerConfig

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"

_BUCKETS = 10  # the ratio window is kept as this many time buckets

# Failures that are the client's or nobody's: they say nothing about the backend's health.
NOT_BACKEND_FAULTS = frozenset({"context_length"})


class CircuitBreaker:
    __slots__ = (
        "_buckets",
        "_clock",
        "_on_change",
        "_opened_at",
        "_probe_at",
        "_state",
        "cfg",
        "consecutive_failures",
        "name",
        "opened_total",
    )

    def __init__(
        self,
        name: str,
        cfg: BreakerConfig,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str, str], None] | None = None,
    ) -> None:
        self.name = name
        self.cfg = cfg
        self._clock = clock
        self._on_change = on_change
        self._state = CLOSED
        self._opened_at = 0.0
        self._probe_at: float | None = None  # when the half-open probe went out
        self.consecutive_failures = 0
        self.opened_total = 0
        # [bucket index, successes, failures] per slot of the ratio window.
        self._buckets: list[list[int]] = [[-1, 0, 0] for _ in range(_BUCKETS)]

    def configure(self, cfg: BreakerConfig, on_change: Callable[[str, str], None] | None) -> None:
        """A reload: new thresholds and a new listener; the state (open or not) carries on."""
        self.cfg = cfg
        self._on_change = on_change

    # ------------------------------------------------------------ questions

    @property
    def state(self) -> str:
        """closed | open | half_open (open turns half_open once the cooldown is over)."""
        if self._state == OPEN and self._clock() - self._opened_at >= self.cfg.cooldown_s:
            return HALF_OPEN
        return self._state

    def available(self) -> bool:
        """Could an attempt go now? No side effect (for planning)."""
        state = self.state
        if state == CLOSED:
            return True
        if state == OPEN:
            return False
        return self._probe_free()

    def allow(self) -> bool:
        """May this attempt go now? In half_open, takes the one probe slot."""
        if self._state == CLOSED:
            return True
        state = self.state
        if state == OPEN or not self._probe_free():
            return False
        if self._state == OPEN:
            self._set(HALF_OPEN)
        self._probe_at = self._clock()
        return True

    def retry_after(self) -> float:
        """Seconds until the breaker lets a probe through (0 if it would now)."""
        if self._state != OPEN:
            return 0.0
        return max(0.0, self.cfg.cooldown_s - (self._clock() - self._opened_at))

    def _probe_free(self) -> bool:
        # A probe that never reported back (client went away, process hiccup) must not
        # wedge the breaker: after another cooldown the slot is free again.
        return self._probe_at is None or self._clock() - self._probe_at >= self.cfg.cooldown_s

    # ------------------------------------------------------------ reports

    def record_success(self) -> None:
        self._count(ok=True)
        self.consecutive_failures = 0
        if self._state == HALF_OPEN:
            self._probe_at = None
            self._set(CLOSED)

    def record_failure(self) -> None:
        if self._state == OPEN:
            return  # late reports from requests sent before it opened change nothing
        self._count(ok=False)
        self.consecutive_failures += 1
        if self._state == HALF_OPEN:
            self._open()
            return
        if self.consecutive_failures >= self.cfg.failure_threshold or self._ratio_tripped():
            self._open()

    # ------------------------------------------------------------ internals

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._probe_at = None
        self.opened_total += 1
        self._set(OPEN)

    def _set(self, state: str) -> None:
        if state == self._state:
            return
        self._state = state
        if state == CLOSED:
            self.consecutive_failures = 0
            for b in self._buckets:
                b[0] = -1
        if self._on_change is not None:
            self._on_change(self.name, state)

    def _count(self, ok: bool) -> None:
        if self.cfg.failure_ratio is None:
            return
        width = self.cfg.window_s / _BUCKETS
        idx = int(self._clock() / width)
        b = self._buckets[idx % _BUCKETS]
        if b[0] != idx:
            b[0], b[1], b[2] = idx, 0, 0
        b[1 if ok else 2] += 1

    def _ratio_tripped(self) -> bool:
        ratio = self.cfg.failure_ratio
        if ratio is None:
            return False
        idx = int(self._clock() / (self.cfg.window_s / _BUCKETS))
        ok = failed = 0
        for b in self._buckets:
            if idx - _BUCKETS < b[0] <= idx:
                ok += b[1]
                failed += b[2]
        total = ok + failed
        return total >= self.cfg.min_requests and failed / total >= ratio
