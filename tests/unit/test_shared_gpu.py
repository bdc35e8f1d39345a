"""Shared pool books (`serve --workers N`): shares from several workers add up to busy.

Each "worker" maps the same books file through its own SharedPoolAccount (its own
file descriptor, so its own flock), as the worker processes do. A naive model splits
every interval among the requests in flight by brute force; the O(1) integral must
agree with it share by share, and the shares must add up to the busy GPU-seconds.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import random
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.metering.gpu import PoolAccount
from proxy.metering.shared_gpu import SharedPoolAccount, pool_file, shared_pool_factory


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Naive:
    """Every interval split among the requests in flight by weight, O(n) per step."""

    def __init__(self, gpus: int) -> None:
        self.gpus = gpus
        self.weights: dict[int, float] = {}
        self.shares: dict[int, float] = {}
        self.busy = 0.0

    def elapse(self, dt: float) -> None:
        total = sum(self.weights.values())
        if total > 0 and dt > 0:
            self.busy += dt
            for rid, w in self.weights.items():
                self.shares[rid] += self.gpus * dt * w / total


ops = st.lists(
    st.tuples(
        st.integers(0, 2),  # which worker
        st.sampled_from(["start", "first", "end"]),
        st.integers(0, 9),  # which of that worker's requests
        st.floats(0.0, 3.0, allow_nan=False),  # time elapsed before the op
    ),
    max_size=80,
)


@settings(max_examples=150, deadline=None)
@given(ops=ops, gpus=st.integers(1, 8), prefill=st.sampled_from([1.0, 2.5]))
def test_interleavings_from_three_workers_split_busy_exactly(
    tmp_path_factory: pytest.TempPathFactory, ops: list, gpus: int, prefill: float
) -> None:
    path = tmp_path_factory.mktemp("books") / "pool.books"
    clock = Clock()
    t0 = clock.t
    workers = [SharedPoolAccount(path, gpus, prefill, clock) for _ in range(3)]
    naive = Naive(gpus)
    open_: dict[tuple[int, int], object] = {}
    done: dict[int, float] = {}
    rid_of: dict[tuple[int, int], int] = {}
    next_rid = 0
    for w, op, slot, dt in ops:
        clock.t += dt
        naive.elapse(dt)
        key = (w, slot)
        share = open_.get(key)
        if op == "start" and share is None:
            open_[key] = workers[w].start()
            rid_of[key] = next_rid
            naive.weights[next_rid] = prefill
            naive.shares[next_rid] = 0.0
            next_rid += 1
        elif op == "first" and share is not None:
            share.first_token()  # type: ignore[attr-defined]
            naive.weights[rid_of[key]] = 1.0
        elif op == "end" and share is not None:
            rid = rid_of.pop(key)
            done[rid] = share.end()  # type: ignore[attr-defined]
            del open_[key]
            del naive.weights[rid]
        assert workers[0].inflight == len(open_)
    clock.t += 1.0
    naive.elapse(1.0)
    for key, share in open_.items():  # end the rest, in whichever worker holds them
        done[rid_of[key]] = share.end()  # type: ignore[attr-defined]
    for rid, gpu_s in done.items():
        assert math.isclose(gpu_s, naive.shares[rid], rel_tol=1e-9, abs_tol=1e-9)
    for acct in workers:  # every worker reads the same books
        assert math.isclose(acct.busy_gpu_seconds, gpus * naive.busy, rel_tol=1e-12, abs_tol=1e-12)
        assert acct.provisioned_gpu_seconds == gpus * (clock.t - t0)  # once, not × workers
        assert acct.inflight == 0
    assert math.isclose(math.fsum(done.values()), gpus * naive.busy, rel_tol=1e-9, abs_tol=1e-9)
    for acct in workers:
        acct.close()


def test_same_figures_as_the_single_process_account(tmp_path: Path) -> None:
    clock = Clock()
    local = PoolAccount(2, 2.0, clock)
    shared = SharedPoolAccount(tmp_path / "p.books", 2, 2.0, clock)
    pairs = []
    for i in range(20):
        clock.t += 0.1 * (i % 3)
        pairs.append((local.start(), shared.start()))
        if i % 4 == 3:
            clock.t += 0.05
            for a, b in pairs[-3:]:
                a.first_token()
                b.first_token()
            a, b = pairs.pop(0)
            assert math.isclose(a.end(), b.end(), rel_tol=1e-12)
    clock.t += 0.5
    for a, b in pairs:
        assert math.isclose(a.end(), b.end(), rel_tol=1e-12)
    assert math.isclose(local.busy_gpu_seconds, shared.busy_gpu_seconds, rel_tol=1e-12)
    local.add_tokens(7)
    shared.add_tokens(7)
    assert shared.tokens_served == local.tokens_served == 7
    shared.close()


def test_a_second_mapping_with_another_gpu_count_is_refused(tmp_path: Path) -> None:
    first = shared_pool_factory(tmp_path)("h100", 2, 1.0, time.monotonic)
    assert pool_file(tmp_path, "h100").exists()
    with pytest.raises(ValueError, match="2 GPUs"):
        SharedPoolAccount(pool_file(tmp_path, "h100"), 4)
    first.close()


def _hammer(path: str, gpus: int, seed: int, n: int, out: multiprocessing.Queue) -> None:
    """A worker: n requests, a few in flight at once, real clock, random short holds."""
    acct = SharedPoolAccount(path, gpus, 1.5)
    rnd = random.Random(seed)
    held: list = []
    total = 0.0
    for _ in range(n):
        held.append(acct.start())
        if rnd.random() < 0.5:
            held[-1].first_token()
        time.sleep(rnd.random() * 0.0005)
        if len(held) > rnd.randint(0, 4):
            total += held.pop(rnd.randrange(len(held))).end()
    for s in held:
        total += s.end()
    out.put(total)
    acct.close()


@pytest.mark.parametrize("kind", ["processes", "threads"])
def test_real_concurrent_workers_shares_sum_to_busy(tmp_path: Path, kind: str) -> None:
    path = str(tmp_path / "pool.books")
    books = SharedPoolAccount(path, 2)  # the supervisor declares the pool up
    t0 = time.monotonic()
    if kind == "processes":
        q: multiprocessing.Queue = multiprocessing.get_context("spawn").Queue()
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=_hammer, args=(path, 2, i, 300, q)) for i in range(3)]
        for p in procs:
            p.start()
        totals = [q.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(timeout=30)
            assert p.exitcode == 0
    else:
        tq: multiprocessing.Queue = multiprocessing.Queue()  # any thread-safe queue will do
        threads = [threading.Thread(target=_hammer, args=(path, 2, i, 300, tq)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        totals = [tq.get(timeout=5) for _ in threads]
    elapsed = time.monotonic() - t0
    busy = books.busy_gpu_seconds
    assert books.inflight == 0
    assert busy > 0
    assert math.isclose(math.fsum(totals), busy, rel_tol=1e-9)
    assert busy <= 2 * elapsed  # busy wall time cannot exceed the wall time, × 2 GPUs
    books.close()


def _die_holding(path: str, n: int) -> None:
    """A worker killed mid-request: n shares started at t=100, never ended."""
    acct = SharedPoolAccount(path, 2, 2.0, clock=lambda: 100.0)
    shares = [acct.start() for _ in range(n)]
    shares[0].first_token()
    os._exit(0)


def test_a_dead_workers_shares_are_released_and_stop_diluting(tmp_path: Path) -> None:
    path = str(tmp_path / "pool.books")
    clock = Clock()
    clock.t = 100.0
    books = SharedPoolAccount(path, 2, 2.0, clock=clock)  # the supervisor's mapping
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=_die_holding, args=(path, 3))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    assert books.inflight == 3
    clock.t = 110.0
    assert books.busy_gpu_seconds == pytest.approx(2 * 10.0)  # working for them until now

    assert books.release(child.pid) == 3
    assert books.release(child.pid) == 0  # once
    assert books.inflight == 0
    clock.t = 150.0
    assert books.busy_gpu_seconds == pytest.approx(2 * 10.0)  # idle since the release
    share = books.start()  # a later request has the pool to itself, not a fraction
    share.first_token()
    clock.t = 160.0
    assert share.end() == pytest.approx(2 * 10.0)
    assert books.busy_gpu_seconds == pytest.approx(2 * 20.0)
    books.close()
