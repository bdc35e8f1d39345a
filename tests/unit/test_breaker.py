"""The circuit breaker's state machine, on a hand-driven clock."""

from __future__ import annotations

from proxy.config import Breaker
from proxy.routing.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make(clock: Clock, **cfg: float) -> tuple[CircuitBreaker, list[str]]:
    changes: list[str] = []
    b = CircuitBreaker(
        "local", Breaker(**cfg), clock=clock, on_change=lambda _, s: changes.append(s)
    )
    return b, changes


def test_opens_after_n_consecutive_failures_and_a_success_resets_the_count() -> None:
    clock = Clock()
    b, changes = make(clock, failure_threshold=3, cooldown_s=10)
    b.record_failure()
    b.record_failure()
    b.record_success()
    b.record_failure()
    b.record_failure()
    assert b.state == CLOSED and b.allow()
    b.record_failure()
    assert b.state == OPEN
    assert changes == [OPEN]
    assert not b.available() and not b.allow()
    assert b.retry_after() == 10


def test_half_open_lets_exactly_one_probe_through_then_closes_on_success() -> None:
    clock = Clock()
    b, changes = make(clock, failure_threshold=1, cooldown_s=10)
    b.record_failure()
    clock.t += 9.9
    assert not b.available()
    clock.t += 0.1
    assert b.state == HALF_OPEN and b.available()
    assert b.allow()  # the probe
    assert not b.available() and not b.allow()  # no second request while it is out
    b.record_success()
    assert b.state == CLOSED and b.allow() and b.allow()
    assert changes == [OPEN, HALF_OPEN, CLOSED]


def test_a_failed_probe_reopens_for_a_fresh_cooldown() -> None:
    clock = Clock()
    b, changes = make(clock, failure_threshold=2, cooldown_s=5)
    b.record_failure()
    b.record_failure()
    clock.t += 5
    assert b.allow()
    b.record_failure()
    assert b.state == OPEN and b.retry_after() == 5
    assert b.opened_total == 2
    assert changes == [OPEN, HALF_OPEN, OPEN]


def test_a_probe_that_never_reports_frees_its_slot_after_a_cooldown() -> None:
    clock = Clock()
    b, _ = make(clock, failure_threshold=1, cooldown_s=5)
    b.record_failure()
    clock.t += 5
    assert b.allow()
    clock.t += 4
    assert not b.allow()
    clock.t += 1
    assert b.allow()


def test_late_failures_while_open_do_not_extend_the_cooldown() -> None:
    clock = Clock()
    b, _ = make(clock, failure_threshold=1, cooldown_s=10)
    b.record_failure()
    clock.t += 6
    b.record_failure()  # a request sent before it opened
    assert b.retry_after() == 4


def test_failure_ratio_over_the_window_opens_it() -> None:
    clock = Clock()
    b, _ = make(
        clock, failure_threshold=100, failure_ratio=0.5, window_s=10, min_requests=10, cooldown_s=1
    )
    for _ in range(5):
        b.record_success()
        b.record_failure()
        clock.t += 0.5
    # 10 requests, half failed, but never 100 in a row.
    assert b.state == OPEN


def test_failure_ratio_needs_min_requests_and_forgets_old_buckets() -> None:
    clock = Clock()
    b, _ = make(
        clock, failure_threshold=100, failure_ratio=0.6, window_s=10, min_requests=10, cooldown_s=1
    )
    for _ in range(8):
        b.record_failure()
        b.record_success()  # keeps the consecutive count at 0
    assert b.state == CLOSED  # 50% < 60%
    clock.t += 20  # the window has moved on: those 16 no longer count
    for _ in range(3):
        b.record_failure()
    b.record_success()
    for _ in range(2):
        b.record_failure()
        b.record_success()
    assert b.state == CLOSED  # 75% failed, but only 8 recent requests < min_requests
    b.record_success()
    b.record_failure()
    assert b.state == OPEN  # 10 recent, 6 failed
