"""The simulator's step loop: batching, queueing, cancellation and exact GPU accounting."""

from __future__ import annotations

import asyncio
import math

import pytest

from simulator.engine import FINISHED, Engine, FixedLatencyEngine, Sequence, StepModel

FAST = StepModel(speed=20.0)  # a 12 ms decode step becomes 0.6 ms


def make_engine(**kw) -> Engine:
    eng = Engine(kw.pop("model", FAST), **kw)
    eng.start()
    return eng


def test_step_cost_formula():
    m = StepModel(
        step_overhead_ms=10, prefill_overhead_ms=20, prefill_ms_per_token=0.5,
        decode_ms_per_seq=1.0, speed=2.0,
    )  # fmt: skip
    assert m.seconds(0, 4) == pytest.approx((10 + 4) / 1000 / 2)
    assert m.seconds(100, 1) == pytest.approx((10 + 1 + 20 + 50) / 1000 / 2)


async def test_one_sequence_generates_exactly_max_tokens_and_owns_all_busy_time():
    eng = make_engine()
    try:
        seq = Sequence("a", prompt_tokens=40, max_tokens=5)
        eng.submit(seq)
        await seq.wait_finished()
        assert seq.generated == 5 and seq.completion_tokens == 5
        assert eng.steps == 5  # prefill step yields the first token, then 4 decode steps
        assert seq.first_token is not None and seq.started <= seq.first_token <= seq.finished
        assert seq.gpu_seconds == pytest.approx(eng.busy_seconds, rel=1e-12)
        assert eng.prompt_tokens_total == 40 and eng.generation_tokens_total == 5
    finally:
        await eng.stop()


async def test_prefill_only_sequence_finishes_after_one_step():
    eng = make_engine()
    try:
        seq = Sequence("e", prompt_tokens=12, max_tokens=0)
        eng.submit(seq)
        await seq.wait_finished()
        assert seq.generated == 0 and seq.first_token is None and eng.steps == 1
        assert seq.gpu_seconds > 0
    finally:
        await eng.stop()


async def test_batch_limit_queues_fifo_and_latency_grows():
    eng = make_engine(max_num_seqs=2)
    try:
        seqs = [Sequence(str(i), prompt_tokens=20, max_tokens=8) for i in range(6)]
        for s in seqs:
            eng.submit(s)
        await asyncio.sleep(0)
        peak_waiting = 0
        while not all(s.done for s in seqs):
            assert eng.num_running <= 2
            peak_waiting = max(peak_waiting, eng.num_waiting)
            await asyncio.sleep(0.0002)
        assert peak_waiting >= 3
        starts = [s.started for s in seqs]
        assert starts == sorted(starts)  # FIFO admission
        # A pair starts only when the pair before it has finished: the later ones wait.
        for earlier, later in ((0, 2), (1, 3), (2, 4), (3, 5)):
            assert seqs[later].started >= seqs[earlier].finished
        # Submitted together, so latency from the common submission grows along the queue.
        # (Not each sequence's own `arrived`: those are stamped while the list is built, and
        # a loaded machine can pause between two of them for longer than a step.)
        submitted = seqs[0].arrived
        e2e = [s.finished - submitted for s in seqs]
        assert e2e[5] > e2e[3] > e2e[1]
    finally:
        await eng.stop()


async def test_gpu_shares_sum_to_busy_time_with_cancels():
    eng = make_engine(max_num_seqs=3)
    try:
        seqs = [Sequence(str(i), prompt_tokens=5 + 7 * i, max_tokens=3 + i % 5) for i in range(12)]
        for s in seqs:
            eng.submit(s)
        await asyncio.sleep(0.002)
        running = next(s for s in seqs if s.state == "running")
        waiting = seqs[-1]
        eng.cancel(running)
        eng.cancel(waiting)
        for s in seqs:
            await s.wait_finished()
        assert waiting.gpu_seconds == 0.0 and waiting.cancelled
        assert running.cancelled and running.gpu_seconds > 0
        assert running.generated < running.max_tokens
        total = math.fsum(s.gpu_seconds for s in seqs)
        assert total == pytest.approx(eng.busy_seconds, rel=1e-9, abs=1e-12)
        assert eng.num_running == 0 and eng.num_waiting == 0 and eng.kv_usage == 0.0
    finally:
        await eng.stop()


async def test_parallel_choices_weigh_as_sequences():
    eng = make_engine()
    try:
        one = Sequence("one", prompt_tokens=10, max_tokens=4)
        three = Sequence("three", prompt_tokens=10, max_tokens=4, n=3)
        eng.submit(one)
        eng.submit(three)
        await three.wait_finished()
        await one.wait_finished()
        assert three.completion_tokens == 12
        assert three.gpu_seconds == pytest.approx(3 * one.gpu_seconds, rel=1e-9)
    finally:
        await eng.stop()


async def test_reset_accounting_keeps_shares_consistent():
    eng = make_engine()
    try:
        seq = Sequence("r", prompt_tokens=10, max_tokens=30)
        eng.submit(seq)
        await seq.wait_beyond(5)
        eng.reset_accounting()
        await seq.wait_finished()
        assert seq.gpu_seconds == pytest.approx(eng.busy_seconds, rel=1e-12)
    finally:
        await eng.stop()


async def test_fixed_latency_engine_streams_tokens_and_cancels():
    eng = FixedLatencyEngine(ttft_s=0.01, itl_s=0.002)
    seq = Sequence("s", prompt_tokens=3, max_tokens=5)
    eng.submit(seq, stream=True)
    await seq.wait_beyond(0)
    assert 1 <= seq.generated < 5
    await seq.wait_finished()
    assert seq.generated == 5 and seq.finished - seq.first_token >= 0.006

    slow = Sequence("c", prompt_tokens=3, max_tokens=5)
    eng.submit(slow, stream=False)
    eng.cancel(slow)
    await slow.wait_finished()
    assert slow.cancelled and slow.state == FINISHED and eng.num_running == 0


async def test_fixed_latency_zero_is_immediate():
    eng = FixedLatencyEngine(0.0, 0.0)
    seq = Sequence("z", prompt_tokens=3, max_tokens=7)
    eng.submit(seq)
    assert seq.done and seq.generated == 7
