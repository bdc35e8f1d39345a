"""The windowed traffic model: exact bucket books, the window rule, bounded memory."""

from __future__ import annotations

import math

import pytest

from proxy.live.window import (
    BUSY,
    COMPLETION,
    COST,
    COUNTERFACTUAL,
    ERRORS,
    GPU_SECONDS,
    MINUTE_SLOTS,
    PEAK_INFLIGHT,
    PROMPT,
    PROVISIONED,
    REQUESTS,
    SECOND_SLOTS,
    Window,
)
from proxy.metering.events import Attempt, UsageEvent

T0 = 1_800_000_000.0  # a whole minute (and hour) in unix time


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def event(
    alias: str = "chat",
    backend: str | None = "vllm",
    pool: str | None = "gpu",
    prompt: int = 10,
    completion: int = 5,
    cost: float = 0.5,
    cf: float | None = 0.25,
    gpu_s: float = 0.125,
    outcome: str = "success",
) -> UsageEvent:
    return UsageEvent(
        request_id="r",
        started_at=0.0,
        endpoint="chat",
        alias=alias,
        backend=backend,
        model="m",
        pool=pool,
        outcome=outcome,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost_usd=cost,
        counterfactual_usd=cf,
        gpu_seconds=gpu_s,
    )


def test_events_land_in_their_minute_and_second_buckets() -> None:
    clock = Clock(T0 + 5.5)
    w = Window(clock)
    w.observe(event())
    clock.t = T0 + 5.9
    w.observe(event(outcome="error", cf=None))
    clock.t = T0 + 61.0  # next minute
    w.observe(event(alias="frontier", backend="api", pool=None, gpu_s=0.0, cf=None, cost=2.0))
    clock.t = T0 + 75.0
    view = w.view("1h")
    # The window: from the proxy's start (inside the first minute) to now.
    assert view.start == T0 + 5.5
    assert view.seconds == pytest.approx(69.5)
    chat = view.events[("chat", "vllm")]
    assert chat[REQUESTS] == 2 and chat[ERRORS] == 1
    assert chat[PROMPT] == 20 and chat[COMPLETION] == 10
    assert chat[COST] == 1.0 and chat[COUNTERFACTUAL] == 0.25 and chat[GPU_SECONDS] == 0.25
    assert view.events[("frontier", "api")][COST] == 2.0
    assert view.event_pool[("chat", "vllm")] == "gpu"
    assert view.event_pool[("frontier", "api")] is None
    # Minute buckets: both chat events in the first minute, frontier in the second.
    assert view.minutes.t0 == T0 and view.minutes.n == 2
    assert list(view.minutes.events[("chat", "vllm")][REQUESTS]) == [2.0, 0.0]
    assert list(view.minutes.events[("frontier", "api")][REQUESTS]) == [0.0, 1.0]
    # Second buckets cover the same time, one per second.
    fine = view.seconds_frame
    assert fine is not None and fine.t0 == T0 + 5 and fine.n == 71
    col = fine.events[("chat", "vllm")][REQUESTS]
    assert col[0] == 2.0 and math.fsum(col) == 2.0
    assert fine.events[("frontier", "api")][REQUESTS][56] == 1.0


def test_window_covers_whole_minutes_up_to_its_length() -> None:
    clock = Clock(T0)
    w = Window(clock)
    for minute in range(90):  # one event at second 30 of each minute for 90 minutes
        clock.t = T0 + minute * 60 + 30
        w.observe(event())
    clock.t = T0 + 89 * 60 + 45
    view = w.view("1h")
    # The current minute and the 59 whole ones before it: minutes 30..89.
    assert view.minutes.n == 60
    assert view.start == T0 + 30 * 60
    assert view.seconds == 59 * 60 + 45
    assert view.events[("chat", "vllm")][REQUESTS] == 60
    assert w.view("24h").events[("chat", "vllm")][REQUESTS] == 90
    assert w.view("24h").seconds == 89 * 60 + 45  # never more than the uptime
    assert w.view("all").events[("chat", "vllm")][REQUESTS] == 90
    fine = w.view("1h").seconds_frame  # the hour fits in the second ring, 90 minutes do not
    assert fine is not None and fine.n == 59 * 60 + 46 and fine.t0 == view.start
    assert w.view("24h").seconds_frame is None


def test_minute_buckets_equal_the_sum_of_their_seconds() -> None:
    clock = Clock(T0)
    w = Window(clock)
    for i in range(600):
        clock.t = T0 + i * 0.37
        w.observe(event(prompt=i % 7, completion=i % 3, cost=0.01 * (i % 5)))
    clock.t = T0 + 600 * 0.37
    view = w.view("1h")
    fine = view.seconds_frame
    assert fine is not None
    for f in (REQUESTS, PROMPT, COMPLETION, COST):
        per_minute = [0.0] * view.minutes.n
        for i, v in enumerate(fine.events[("chat", "vllm")][f]):
            per_minute[int((fine.t0 + i) // 60 - view.minutes.t0 // 60)] += v
        assert per_minute == pytest.approx(list(view.minutes.events[("chat", "vllm")][f]))
    assert view.events[("chat", "vllm")][REQUESTS] == 600
    assert view.events[("chat", "vllm")][PROMPT] == sum(i % 7 for i in range(600))


def test_pool_samples_become_deltas_and_trailing_utilization() -> None:
    clock = Clock(T0)
    w = Window(clock)

    def row(prov: float, busy: float, fixed: float) -> dict[str, object]:
        return {
            "pool": "gpu",
            "provisioned_gpu_seconds": prov,
            "busy_gpu_seconds": busy,
            "fixed_cost_usd": fixed,
        }

    for s in range(1, 601):  # 2 GPUs, busy a quarter of the time, sampled every second
        clock.t = T0 + s
        w.sample_pools([row(2.0 * s, 0.5 * s, 0.001 * s)])
    view = w.view("1h")
    gpu = view.pools["gpu"]
    assert gpu[PROVISIONED] == pytest.approx(1200.0)
    assert gpu[BUSY] == pytest.approx(300.0)
    assert w.utilization("gpu", 300) == pytest.approx(0.25)
    # An account rebuilt from zero starts a new baseline: its whole figure is the delta.
    clock.t = T0 + 601
    w.sample_pools([row(2.0, 2.0, 0.0)])
    assert w.view("1h").pools["gpu"][PROVISIONED] == pytest.approx(1202.0)
    assert w.view("1h").pools["gpu"][BUSY] == pytest.approx(302.0)
    assert w.utilization("unknown", 300) is None


def test_peak_inflight_is_a_maximum_not_a_sum() -> None:
    clock = Clock(T0)
    inflight = {"gpu": 0}
    w = Window(clock, pool_inflight=lambda pool: inflight[pool])
    for n in (3, 7, 2):
        inflight["gpu"] = n
        w.observe(event())
    clock.t = T0 + 61
    inflight["gpu"] = 4
    w.observe(event())
    view = w.view("1h")
    assert list(view.minutes.pools["gpu"][PEAK_INFLIGHT]) == [8.0, 5.0]  # n + the leaver
    assert view.pools["gpu"][PEAK_INFLIGHT] == 8.0
    assert w.view("all").pools["gpu"][PEAK_INFLIGHT] == 8.0


def test_failed_over_attempts_book_their_cost_to_their_own_backend() -> None:
    clock = Clock(T0)
    w = Window(clock, backend_pool={"vllm": "gpu", "api": None}.get)
    ev = event(backend="api", pool=None, cost=0.031, gpu_s=0.2, cf=0.0001)
    ev.attempts = [
        Attempt("vllm", "llama", status=503, gpu_seconds=0.2, cost_usd=0.001),
        Attempt("api", "api-model", status=200, cost_usd=0.03),
    ]
    w.observe(ev)
    view = w.view("1h")
    gpu, api = view.events[("chat", "vllm")], view.events[("chat", "api")]
    assert (gpu[REQUESTS], gpu[COST], gpu[GPU_SECONDS]) == (0, 0.001, 0.2)
    assert (api[REQUESTS], api[PROMPT], api[COST], api[GPU_SECONDS]) == (1, 10, 0.03, 0)
    assert api[COUNTERFACTUAL] == 0.0001
    assert view.event_pool[("chat", "vllm")] == "gpu"
    assert view.event_pool[("chat", "api")] is None


def test_clock_stepping_back_keeps_counting() -> None:
    clock = Clock(T0 + 100)
    w = Window(clock)
    w.observe(event())
    clock.t = T0 + 40  # NTP stepped the clock back
    w.observe(event())
    clock.t = T0 + 101
    assert w.view("all").events[("chat", "vllm")][REQUESTS] == 2
    assert w.view("1h").events[("chat", "vllm")][REQUESTS] == 2


def test_unknown_window_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown window"):
        Window(Clock(T0)).view("2h")


def test_a_million_events_over_nine_days_stay_in_fixed_memory() -> None:
    """1M events, 50 per 40 s step (9.26 days): the store never grows after its series
    exist, minutes older than 7 days are gone from `7d` yet kept in `all`."""
    clock = Clock(T0)
    inflight = {"gpu": 1}
    w = Window(clock, pool_inflight=lambda pool: inflight[pool])
    keys = [("chat", "vllm", "gpu"), ("chat", "api", None), ("frontier", "api", None)]
    events = [event(alias=a, backend=b, pool=p) for a, b, p in keys]
    w.sample_pools([{"pool": "gpu", "provisioned_gpu_seconds": 1.0, "busy_gpu_seconds": 0.5,
                     "fixed_cost_usd": 0.0}])  # fmt: skip
    total, step_s, per_step = 1_000_000, 40.0, 50
    minute_counts: dict[int, int] = {}
    size = series = None
    sent = 0
    observe = w.observe
    while sent < total:
        clock.t += step_s
        m = int(clock.t // 60)
        for i in range(per_step):
            observe(events[i % 3])
        minute_counts[m] = minute_counts.get(m, 0) + per_step
        sent += per_step
        if size is None:  # every series exists from here on
            size, series = w.nbytes, w.series_count
            # Each series holds both rings and its retired sums: nothing else.
            slots = MINUTE_SLOTS + SECOND_SLOTS
            assert size == 3 * (8 * slots + 8) * 8 + (4 * slots + 4) * 8
        elif sent % 100_000 == 0:
            assert w.nbytes == size and w.series_count == series
    assert w.nbytes == size and w.series_count == series
    assert w.events_seen == total
    everything = w.view("all")
    assert sum(v[REQUESTS] for v in everything.events.values()) == total
    assert everything.seconds == clock.t - T0 > 9 * 86400
    week = w.view("7d")
    now_minute = int(clock.t // 60)
    expected = sum(c for m, c in minute_counts.items() if m > now_minute - MINUTE_SLOTS)
    assert sum(v[REQUESTS] for v in week.events.values()) == expected < total
    assert week.minutes.n == MINUTE_SLOTS
    assert week.seconds == pytest.approx(clock.t - (now_minute - MINUTE_SLOTS + 1) * 60)
