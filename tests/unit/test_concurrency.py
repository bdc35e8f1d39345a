"""Backend slots and tenant caps (proxy/request/concurrency.py) on a real event loop."""

from __future__ import annotations

import asyncio

import pytest

from proxy.request.concurrency import Slots, TenantCaps
from proxy.request.errors import ProxyError


def test_slots_are_taken_without_waiting_until_full() -> None:
    slots = Slots(2)
    assert slots.try_take() and slots.try_take()
    assert not slots.try_take()
    assert slots.in_use == 2
    slots.release()
    assert slots.in_use == 1 and slots.try_take()


async def test_a_released_slot_goes_to_the_oldest_waiter_not_a_newcomer() -> None:
    slots = Slots(1)
    assert slots.try_take()
    order: list[str] = []

    async def wait(name: str) -> None:
        await slots.take()
        order.append(name)

    first = asyncio.create_task(wait("first"))
    second = asyncio.create_task(wait("second"))
    await asyncio.sleep(0)  # both queued
    slots.release()
    assert not slots.try_take()  # handed to "first", not free for a newcomer
    await first
    assert order == ["first"]
    slots.release()
    await second
    assert order == ["first", "second"]
    slots.release()
    assert slots.in_use == 0


async def test_a_cancelled_waiter_leaves_no_slot_taken() -> None:
    slots = Slots(1)
    assert slots.try_take()
    waiter = asyncio.create_task(slots.take())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    slots.release()
    assert slots.in_use == 0 and slots.try_take()


async def test_a_slot_handed_over_as_the_waiter_is_cancelled_is_passed_on() -> None:
    slots = Slots(1)
    assert slots.try_take()
    late = asyncio.create_task(slots.take())
    nxt = asyncio.create_task(slots.take())
    await asyncio.sleep(0)
    slots.release()  # handed to `late`...
    late.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await late
    await nxt  # the slot went on to the next waiter
    assert slots.in_use == 1
    slots.release()
    assert slots.in_use == 0


def test_caps_refuse_past_the_limit_and_count_nothing_for_a_refusal() -> None:
    caps = TenantCaps()
    key = (("key|a", 2, "key 'a'"), ("tenant|t", 3, "tenant 't'"))
    other = (("tenant|t", 3, "tenant 't'"),)
    caps.take(key)
    caps.take(key)
    with pytest.raises(ProxyError) as err:
        caps.take(key)
    assert err.value.status == 429 and err.value.code == "concurrency_limit_exceeded"
    assert "key 'a'" in err.value.message and (b"retry-after", b"1") in err.value.headers
    assert caps.counts == {"key|a": 2, "tenant|t": 2}
    caps.take(other)
    with pytest.raises(ProxyError) as err:
        caps.take(other)
    assert "tenant 't'" in err.value.message
    for c in (key, key, other):
        caps.release(c)
    assert caps.counts == {"key|a": 0, "tenant|t": 0}
