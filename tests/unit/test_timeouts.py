"""The loop's Timeouts (proxy/request/timeouts.py): fired in time order, never early, never once
cancelled, and the cancelled ones do not pile up."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from proxy.request.timeouts import Timeouts, timeouts_for

pytestmark = pytest.mark.timeout(30)


def run(coro_fn, use_uvloop: bool) -> None:  # type: ignore[no-untyped-def]
    if use_uvloop:
        uvloop.run(coro_fn())
    else:
        asyncio.run(coro_fn())


@pytest.mark.parametrize("use_uvloop", [True, False])
def test_fired_in_time_order_not_early_and_not_when_cancelled(use_uvloop: bool) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        timeouts = timeouts_for(loop)
        assert timeouts_for(loop) is timeouts
        fired: list[tuple[str, float]] = []
        t0 = loop.time()

        def fire(name: str) -> None:
            fired.append((name, loop.time()))

        # Armed out of order: a later one first, then earlier ones (a failover attempt
        # keeps the request's deadline, older than the timeouts armed since).
        timeouts.at(t0 + 0.12, fire, "c")
        timeouts.at(t0 + 0.04, fire, "a")
        gone = timeouts.at(t0 + 0.06, fire, "never")
        timeouts.at(t0 + 0.08, fire, "b")
        gone.cancel()
        gone.cancel()  # twice is once
        assert len(timeouts) == 3
        await asyncio.sleep(0.2)
        assert [name for name, _ in fired] == ["a", "b", "c"]
        for (_, at), due in zip(fired, (0.04, 0.08, 0.12), strict=True):
            assert at >= t0 + due
        assert len(timeouts) == 0

    run(main, use_uvloop)


def test_cancelled_entries_are_dropped_and_what_they_held_released() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        timeouts = Timeouts(loop)
        keep = timeouts.at(loop.time() + 60, lambda _: None, "long")
        for _ in range(1000):
            guarded = loop.create_future()
            t = timeouts.at(loop.time() + 60, lambda _: None, guarded)
            t.cancel()
            assert t.arg is None  # the future is not held until the entry surfaces
        assert len(timeouts) == 1
        assert len(timeouts._heap) < 200  # rebuilt from the live ones as they pile up
        keep.cancel()

    uvloop.run(main())


def test_a_timeout_firing_from_another_timeouts_callback_arms_the_next() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        timeouts = Timeouts(loop)
        done = loop.create_future()

        def first(_: object) -> None:
            timeouts.at(loop.time() + 0.02, lambda _: done.set_result(loop.time()), None)

        timeouts.at(loop.time() + 0.02, first, None)
        await asyncio.wait_for(done, 2)

    uvloop.run(main())


def test_a_failing_callback_does_not_strand_the_ones_after_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        timeouts = Timeouts(loop)
        done = loop.create_future()

        def broken(_: object) -> None:
            raise RuntimeError("broken callback")

        timeouts.at(loop.time() + 0.01, broken, None)
        timeouts.at(loop.time() + 0.03, lambda _: done.set_result(True), None)
        assert await asyncio.wait_for(done, 2)

    uvloop.run(main())
    assert "timeout callback failed" in caplog.text
