"""GPU-seconds under batching: per-request shares add up to busy GPU-seconds exactly."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.metering.gpu import PoolAccount


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


# An op: (kind, dt) where kind 0 = start, 1 = first token of some request, 2 = end of some.
ops = st.lists(
    st.tuples(st.integers(0, 2), st.floats(0, 5, allow_nan=False), st.integers(0, 10_000)),
    max_size=200,
)


@settings(max_examples=300, deadline=None)
@given(ops=ops, gpus=st.integers(1, 8), prefill=st.sampled_from([1.0, 0.5, 2.0, 3.7]))
def test_shares_sum_to_busy_and_are_non_negative(
    ops: list[tuple[int, float, int]], gpus: int, prefill: float
) -> None:
    clock = Clock()
    pool = PoolAccount(gpus, prefill, clock)
    live = []
    finished = []
    for kind, dt, pick in ops:
        clock.t += dt
        if kind == 0 or not live:
            live.append(pool.start())
        elif kind == 1:
            live[pick % len(live)].first_token()
        else:
            share = live.pop(pick % len(live))
            finished.append(share.end())
    clock.t += 1.0
    finished.extend(s.end() for s in live)
    assert all(x >= 0 for x in finished)
    busy = pool.busy_gpu_seconds
    assert math.isclose(sum(finished), busy, rel_tol=1e-9, abs_tol=1e-9)
    assert pool.inflight == 0
    assert busy <= pool.provisioned_gpu_seconds + 1e-9


def test_equal_split_of_a_shared_interval() -> None:
    clock = Clock()
    pool = PoolAccount(2, 1.0, clock)
    a = pool.start()
    clock.t += 1.0  # a alone: 2 GPU-seconds to a
    b = pool.start()
    clock.t += 1.0  # shared: 1 each
    ga = a.end()
    clock.t += 3.0  # b alone: 6
    gb = b.end()
    clock.t += 10.0  # idle
    assert math.isclose(ga, 3.0) and math.isclose(gb, 7.0)
    assert math.isclose(pool.busy_gpu_seconds, 10.0)
    assert math.isclose(pool.provisioned_gpu_seconds, 30.0)
    assert math.isclose(pool.utilization(), 1 / 3)


def test_prefill_weight_shifts_share_not_total() -> None:
    clock = Clock()
    pool = PoolAccount(1, 3.0, clock)
    decoding = pool.start()
    decoding.first_token()
    prefilling = pool.start()  # weight 3 against 1
    clock.t += 4.0
    prefilling.first_token()
    gp = prefilling.end()
    gd = decoding.end()
    assert math.isclose(gp, 3.0) and math.isclose(gd, 1.0)
    assert decoding.end() == gd  # idempotent
