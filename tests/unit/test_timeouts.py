"""The loop's Timeouts (proxy/request/timeouts.py): fired in time order, never early, never once
cancelled, and the cancelled ones do not pile up. Its re-armable Timers (a connection's
deadlines) and `deadline_in` are checked on a loop whose clock the test moves
(tests/support/clock.py): those tests never wait for time to pass."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from proxy.request.timeouts import Timeouts, Timer, deadline_in, timeouts_for
from tests.support.clock import ClockLoop, advance, on_clock

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


def recording(loop: ClockLoop) -> tuple[Timeouts, Timer, list[float]]:
    """A loop's Timeouts and a timer on them that records the times it fires at."""
    timeouts = Timeouts(loop)
    fired: list[float] = []
    return timeouts, timeouts.timer(lambda _: fired.append(loop.now), None), fired


def test_a_timer_fires_at_its_time_once() -> None:
    async def main(loop: ClockLoop) -> None:
        timeouts = Timeouts(loop)
        fired: list[float] = []
        timer = timeouts.timer(lambda arg: fired.append(arg.now), loop)
        await advance(loop, 50)
        assert fired == []  # disarmed until armed
        timer.arm(loop.now + 10)
        await advance(loop, 9.5)
        assert fired == []
        await advance(loop, 0.5)
        assert fired == [1060.0]
        assert timer.when is None  # fired: disarmed
        await advance(loop, 100)
        assert fired == [1060.0]
        assert len(timeouts) == 0 and timeouts._heap == []

    on_clock(main)


def test_a_timer_moved_later_keeps_one_entry_and_fires_at_the_new_time() -> None:
    """A connection moves its deadline on every request: moving it later is no heap push;
    its entry surfaces at the old time and is queued again at the new one."""

    async def main(loop: ClockLoop) -> None:
        timeouts, timer, fired = recording(loop)
        timer.arm(loop.now + 10)
        for step in range(1, 1001):  # 1,000 requests, each moving it later
            timer.arm(loop.now + 10 + step * 0.01)
        assert len(timeouts._heap) == 1
        await advance(loop, 10)  # the entry surfaces: queued again, not fired
        assert fired == [] and len(timeouts._heap) == 1
        await advance(loop, 10)
        assert fired == [1020.0]
        assert len(timeouts) == 0

    on_clock(main)


def test_a_timer_moved_earlier_fires_then_and_only_then() -> None:
    async def main(loop: ClockLoop) -> None:
        timeouts, timer, fired = recording(loop)
        timer.arm(loop.now + 30)
        timer.arm(loop.now + 5)  # earlier: a new entry, the first one stale
        assert len(timeouts) == 1
        await advance(loop, 5)
        assert fired == [1005.0]
        await advance(loop, 30)  # the stale entry surfaces: dropped, not fired
        assert fired == [1005.0]
        assert timeouts._heap == [] and len(timeouts) == 0

    on_clock(main)


def test_a_disarmed_timer_does_not_fire_and_can_be_armed_again() -> None:
    async def main(loop: ClockLoop) -> None:
        timeouts, timer, fired = recording(loop)
        timer.arm(loop.now + 10)
        timer.disarm()
        await advance(loop, 10)
        assert fired == [] and timeouts._heap == []  # its entry surfaced and was dropped
        timer.arm(loop.now + 10)
        timer.disarm()
        timer.arm(loop.now + 20)  # armed again while its entry waits: the same entry
        assert len(timeouts._heap) == 1
        await advance(loop, 10)
        assert fired == []
        await advance(loop, 10)
        assert fired == [1030.0]

    on_clock(main)


def test_a_cancelled_timer_never_fires_and_releases_what_it_guards() -> None:
    async def main(loop: ClockLoop) -> None:
        timeouts = Timeouts(loop)
        fired: list[object] = []
        guarded = loop.create_future()
        timer = timeouts.timer(fired.append, guarded)
        timer.arm(loop.now + 10)
        timer.cancel()
        assert timer.arg is None and len(timeouts) == 0
        timer.arm(loop.now + 5)  # after cancel (a late event on a closed connection): inert
        assert len(timeouts._heap) == 1  # only the stale entry, dropped when it surfaces
        await advance(loop, 20)
        assert fired == [] and timeouts._heap == []
        guarded.cancel()

    on_clock(main)


def test_cancelled_timers_do_not_pile_up() -> None:
    """Connections opened and closed: their entries are compacted away with the cancelled
    timeouts, long before they would surface."""

    async def main(loop: ClockLoop) -> None:
        timeouts = Timeouts(loop)
        keep = timeouts.timer(lambda _: None, None)
        keep.arm(loop.now + 60)
        for _ in range(1000):
            timer = timeouts.timer(lambda _: None, None)
            timer.arm(loop.now + 10)
            timer.arm(loop.now + 5)  # a stale entry too
            timer.cancel()
        assert len(timeouts) == 1
        assert len(timeouts._heap) < 200

    on_clock(main)


def test_timers_and_timeouts_fire_in_time_order() -> None:
    async def main(loop: ClockLoop) -> None:
        timeouts = Timeouts(loop)
        fired: list[str] = []
        t0 = loop.now
        late = timeouts.timer(fired.append, "timer-late")
        early = timeouts.timer(fired.append, "timer-early")
        late.arm(t0 + 1)
        late.arm(t0 + 4)  # moved later: surfaces at 1, queued at 4
        early.arm(t0 + 2)
        timeouts.at(t0 + 3, fired.append, "timeout")
        timeouts.at(t0 + 1.5, fired.append, "gone").cancel()
        await advance(loop, 10)  # all due at once: run in time order
        assert fired == ["timer-early", "timeout", "timer-late"]
        assert timeouts._heap == []

    on_clock(main)


def test_a_timer_rearmed_from_its_own_callback_fires_again() -> None:
    async def main(loop: ClockLoop) -> None:
        timeouts = Timeouts(loop)
        fired: list[float] = []

        def tick(_: object) -> None:
            fired.append(loop.now)
            if len(fired) < 3:
                timer.arm(loop.now + 1)

        timer = timeouts.timer(tick, None)
        timer.arm(loop.now + 1)
        for _ in range(5):
            await advance(loop, 1)
        assert fired == [1001.0, 1002.0, 1003.0]

    on_clock(main)


def test_deadline_in_times_out_then_and_leaves_the_task_uncancelled() -> None:
    async def main(loop: ClockLoop) -> None:
        never = loop.create_future()

        async def wait() -> str:
            try:
                async with deadline_in(5):
                    await never
            except TimeoutError:
                task = asyncio.current_task()
                assert task is not None and task.cancelling() == 0
                return f"timed out at {loop.now}"
            return "not timed out"

        waiting = loop.create_task(wait())
        await advance(loop, 0)  # (it starts: its deadline is 1005)
        await advance(loop, 4.5)
        assert not waiting.done()
        await advance(loop, 0.5)
        assert waiting.done() and waiting.result() == "timed out at 1005.0"
        assert len(timeouts_for(loop)) == 0

        async def finished() -> None:
            async with deadline_in(5):
                await asyncio.sleep(0)

        await finished()  # done in time: its entry cancelled with it
        assert len(timeouts_for(loop)) == 0

        cancelled = loop.create_task(wait())
        await advance(loop, 1)
        cancelled.cancel()  # a cancellation from elsewhere stays one
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        never.cancel()

    on_clock(main)
