"""Fault knobs: merge, validation, count and probability semantics."""

from __future__ import annotations

import argparse

import pytest

from simulator.config import add_arguments, from_args
from simulator.faults import FaultError, FaultState


def test_count_fault_hits_exactly_n_requests_then_clears():
    state = FaultState()
    state.update({"status": 503, "count": 2, "retry_after": 1})
    hits = [state.pick_error() for _ in range(4)]
    assert [h.status if h else None for h in hits] == [503, 503, None, None]
    assert hits[0].retry_after == 1
    assert state.current.status is None and state.current.count is None


def test_probability_is_seeded_and_roughly_right():
    a, b = FaultState(seed=7), FaultState(seed=7)
    for s in (a, b):
        s.update({"status": 429, "probability": 0.3})
    seq_a = [a.pick_error() is not None for _ in range(2000)]
    seq_b = [b.pick_error() is not None for _ in range(2000)]
    assert seq_a == seq_b
    assert 450 < sum(seq_a) < 750


def test_updates_merge_and_null_removes_a_key():
    state = FaultState()
    state.update({"status": 500, "health_503": True})
    state.update({"cut_stream_after": 3})
    assert state.current.status == 500 and state.current.health_503
    state.update({"status": None})
    assert state.current.status is None and state.current.cut_stream_after == 3
    state.clear()
    assert state.current.to_json() == FaultState().current.to_json()


@pytest.mark.parametrize(
    "bad, words",
    [
        ({"stauts": 500}, "unknown fault keys: stauts"),
        ({"status": "500"}, "status: expected int"),
        ({"status": 700}, "not an HTTP status"),
        ({"probability": 2}, "probability"),
        ({"health_503": 1}, "health_503: expected bool"),
        ({"count": True}, "count: expected int, got a boolean"),
        ({"error_shape": "xml"}, "error_shape"),
    ],
)
def test_bad_faults_are_rejected_with_the_reason(bad, words):
    state = FaultState()
    with pytest.raises(FaultError, match=words):
        state.update(bad)
    assert state.current.status is None


def test_fault_flags_at_start_use_the_same_keys_as_post_sim_faults():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    cfg = from_args(
        parser.parse_args(
            ["--fault-status", "429", "--fault-count", "3", "--fault-code", "529",
             "--fault-type", "insufficient_quota", "--cut-stream-after", "2", "--health-503",
             "--model", "a", "--model", "b"]
        )
    )  # fmt: skip
    assert cfg.faults == {
        "status": 429, "count": 3, "error_code": 529, "error_type": "insufficient_quota",
        "cut_stream_after": 2, "health_503": True,
    }  # fmt: skip
    assert cfg.served_models == ["a", "b"]
    state = FaultState()
    state.update(cfg.faults)  # accepted as-is
    assert state.current.count == 3
