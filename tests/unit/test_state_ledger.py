"""The ledger's bookkeeping and the month arithmetic budgets rely on."""

from __future__ import annotations

import calendar

from proxy.state.budgets import iso_utc, month_bounds, month_key, to_nano
from proxy.state.ledger import Ledger


def test_value_is_cache_plus_unacknowledged_deltas() -> None:
    led = Ledger()
    led.add("h", "a", 5)
    assert led.value("h", "a") == 5
    seq, batch = led.take() or (0, {})
    assert seq == 1 and batch == {"h": {"a": 5}}
    led.add("h", "a", 2)  # arrives while the batch is in flight
    assert led.value("h", "a") == 7
    # The store applied the batch: its answer includes it (and 100 from other replicas).
    led.ack({"h": {"a": 105}})
    assert led.value("h", "a") == 107  # 105 acknowledged + 2 still pending
    assert led.local == {"h": {"a": 2}}


def test_unacknowledged_batch_is_resent_unchanged_with_the_same_seq() -> None:
    led = Ledger()
    led.add("h", "a", 1)
    led.events_unsynced += 1
    first = led.take()
    led.add("h", "a", 10)
    led.events_unsynced += 1
    again = led.take()  # the flush failed: the same batch, not merged with new deltas
    assert first == again == (1, {"h": {"a": 1}})
    assert led.unsynced == 2
    led.ack({"h": {"a": 1}})
    assert led.take() == (2, {"h": {"a": 10}})
    led.ack({"h": {"a": 11}})
    assert led.take() is None
    assert led.value("h", "a") == 11 and led.local == {} and led.unsynced == 0


def test_zero_adds_are_not_sent_and_prune_drops_dead_hashes() -> None:
    led = Ledger()
    led.add("h", "a", 0)
    assert led.take() is None
    led.ack({"old": {"x": 1}, "new": {"y": 2}})
    led.prune({"new"})
    assert led.cache == {"new": {"y": 2}}


def test_utc_months() -> None:
    ts = calendar.timegm((2026, 12, 31, 23, 59, 59))
    assert month_key(ts) == "2026-12"
    start, end = month_bounds(ts)
    assert iso_utc(start) == "2026-12-01T00:00:00Z"
    assert iso_utc(end) == "2027-01-01T00:00:00Z"
    assert month_key(end) == "2027-01"
    assert month_bounds(end)[0] == end
    assert month_bounds(calendar.timegm((2028, 2, 10, 0, 0, 0)))[1] == calendar.timegm(
        (2028, 3, 1, 0, 0, 0)
    )


def test_nano_usd_is_exact_for_cent_prices() -> None:
    assert to_nano(0.01) == 10_000_000
    assert sum(to_nano(0.01) for _ in range(50)) == to_nano(0.5)
    assert to_nano(1.23456789012) == 1_234_567_890


def test_drop_pending_takes_the_deltas_out_of_the_local_view() -> None:
    led = Ledger()
    led.add("w1", "k|req", 3)
    led.take()
    led.add("w1", "k|req", 2)
    led.drop_pending("w1")
    assert led.value("w1", "k|req") == 3  # the inflight part stays until acknowledged
    led.ack({})
    assert led.local == {} and led.pending == {}
