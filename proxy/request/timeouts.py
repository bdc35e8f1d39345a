"""Timeouts that almost never fire, for less than an event-loop timer each: the one timer
mechanism of the request path (docs/architecture.md, "Timers").

The request path arms two per request (the request deadline, the upstream read timeout)
and cancels both moments later. An event-loop timer under uvloop is a libuv handle,
allocated, started, stopped and closed each time: about 5 µs per timeout on this project's
bench machine, 3-4% of the proxy's CPU per request. Here a timeout is an entry in a heap,
and one loop timer waits for the earliest entry still live. A timeout fires no earlier
than its time and as late as the loop's own timers would fire it.

Two kinds of entry:
- `Timeout` (`Timeouts.at`): one shot, cancelled when what it guards is done; `Deadline`
  (`asyncio.timeout_at` for a task) is one.
- `Timer` (`Timeouts.timer`): re-armable, for what has a deadline most of its life and
  moves it often (a client connection: its head, body and keep-alive deadlines). Moving it
  later or disarming it is an attribute write; the heap is touched only when it moves
  earlier than its entry, and when its entry surfaces before its deadline (pushed again
  at the deadline).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from types import TracebackType

log = logging.getLogger("hybridgate")

# Stale entries (cancelled timeouts, timers' superseded entries) are left in the heap until
# they surface or until they are this many and half of it: then the heap is rebuilt from
# the live ones.
_COMPACT_AT = 64


class Timeout:
    """One armed timeout; `cancel()` it when what it guards is done."""

    __slots__ = ("_owner", "arg", "callback", "live")

    def __init__(self, owner: Timeouts, callback: Callable[[Any], None], arg: Any) -> None:
        self._owner = owner
        self.callback = callback
        self.arg = arg
        self.live = True

    def cancel(self) -> None:
        if self.live:
            self.live = False
            self.arg = None  # what it guards is released now, not when the entry surfaces
            self._owner._cancelled()


class Timer:
    """A re-armable timeout: `callback(arg)` at `when` once armed, unless moved or disarmed
    first. `arm` and `disarm` are O(1), but for an `arm` earlier than the timer's entry in
    the heap (O(log n)). `cancel()` it for good when what it guards is gone."""

    __slots__ = ("_owner", "_queued", "_seq", "arg", "callback", "when")

    def __init__(self, owner: Timeouts, callback: Callable[[Any], None], arg: Any) -> None:
        self._owner = owner
        self.callback = callback
        self.arg = arg
        self.when: float | None = None  # the deadline; None while disarmed (and once fired)
        self._queued = math.inf  # its entry's time (inf: no entry; -inf: cancelled)
        self._seq = -1  # its entry's sequence number; other entries of it are stale

    def arm(self, when: float) -> None:
        """Due at loop time `when`, earlier or later than before."""
        self.when = when
        if when < self._queued:
            self._owner._queue(self, when)

    def disarm(self) -> None:
        """Not due until armed again (its entry is dropped, or reused, when it surfaces)."""
        self.when = None

    def cancel(self) -> None:
        """Never due again, and what it guards released now."""
        self.when = None
        self.arg = None
        self._queued = -math.inf  # `arm` never queues it again
        if self._seq >= 0:
            self._seq = -1
            self._owner._cancelled()


class Timeouts:
    """The timeouts of one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)  # held by the registry below, keyed weakly by the loop
        self._heap: list[tuple[float, int, Timeout | Timer]] = []
        self._order = itertools.count()
        self._dead = 0
        self._timer: asyncio.TimerHandle | None = None
        self._armed_for = math.inf  # -inf while _run runs: it arms the loop timer at its end

    def at(self, when: float, callback: Callable[[Any], None], arg: Any) -> Timeout:
        """`callback(arg)` at loop time `when`, unless cancelled first."""
        timeout = Timeout(self, callback, arg)
        heapq.heappush(self._heap, (when, next(self._order), timeout))
        if when < self._armed_for:
            self._arm(when)
        return timeout

    def timer(self, callback: Callable[[Any], None], arg: Any) -> Timer:
        """A `Timer` calling `callback(arg)`, disarmed."""
        return Timer(self, callback, arg)

    def __len__(self) -> int:
        """Entries still live (a timer's while it has one, armed or not)."""
        return len(self._heap) - self._dead

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop().call_at(when, self._run)  # type: ignore[union-attr]
        self._armed_for = when

    def _queue(self, timer: Timer, when: float) -> None:
        """A timer's entry at `when`; the one it had, if any, is stale from now on."""
        seq = next(self._order)
        heapq.heappush(self._heap, (when, seq, timer))
        stale = timer._seq >= 0
        timer._seq = seq
        timer._queued = when
        if when < self._armed_for:
            self._arm(when)
        if stale:
            self._cancelled()

    def _cancelled(self) -> None:
        self._dead += 1
        heap = self._heap
        if self._dead >= _COMPACT_AT and self._dead * 2 >= len(heap):
            heap[:] = [entry for entry in heap if _live(entry)]  # in place: _run holds it
            heapq.heapify(heap)
            self._dead = 0

    def _run(self) -> None:
        self._timer = None
        self._armed_for = -math.inf  # a callback arming a timeout does not arm the loop timer
        heap = self._heap
        now = self._loop().time()  # type: ignore[union-attr]
        try:
            while heap:
                when, _, entry = heap[0]
                if not _live(heap[0]):  # cancelled, or a timer's superseded entry
                    heapq.heappop(heap)
                    self._dead -= 1
                    continue
                if when > now:
                    break
                heapq.heappop(heap)
                if entry.__class__ is Timer:
                    timer = entry
                    timer._seq = -1
                    timer._queued = math.inf
                    due = timer.when
                    if due is None:  # disarmed since
                        continue
                    if due > when:  # moved later since: queued again at its deadline
                        self._queue(timer, due)
                        continue
                    timer.when = None
                    callback, arg = timer.callback, timer.arg
                else:
                    timeout: Timeout = entry  # type: ignore[assignment]
                    timeout.live = False
                    callback, arg = timeout.callback, timeout.arg
                    timeout.arg = None
                try:
                    callback(arg)
                except Exception:  # one broken callback must not strand the timeouts after it
                    log.exception("timeout callback failed")
        finally:
            self._armed_for = math.inf
            if heap:
                self._arm(heap[0][0])


def _live(entry: tuple[float, int, Timeout | Timer]) -> bool:
    item = entry[2]
    if isinstance(item, Timer):
        return entry[1] == item._seq
    return item.live


_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Timeouts] = (
    weakref.WeakKeyDictionary()
)
_last: Timeouts | None = None


def timeouts_for(loop: asyncio.AbstractEventLoop) -> Timeouts:
    """The loop's Timeouts (a process serves from one loop: the last one is at hand)."""
    global _last
    last = _last
    if last is not None and last._loop() is loop:
        return last
    timeouts = _by_loop.get(loop)
    if timeouts is None:
        timeouts = _by_loop[loop] = Timeouts(loop)
    _last = timeouts
    return timeouts


class Deadline:
    """`asyncio.timeout_at` for the request path, for less: one entry in the loop's
    Timeouts (proxy/request/timeouts.py) and a flag (asyncio's state machine and rescheduling were
    ~7% of the proxy's CPU per request). TimeoutError at `when`; a cancellation from
    elsewhere still propagates as such."""

    __slots__ = ("_fired", "_handle", "_task", "_when")

    def __init__(self, when: float, task: asyncio.Task[Any]) -> None:
        self._when = when
        self._task = task
        self._fired = False

    async def __aenter__(self) -> None:
        self._handle = timeouts_for(self._task.get_loop()).at(self._when, Deadline._fire, self)

    def _fire(self) -> None:
        self._fired = True
        self._task.cancel()

    @property
    def fired(self) -> bool:
        return self._fired

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._handle.cancel()
        if self._fired and exc_type is asyncio.CancelledError and self._task.uncancel() == 0:
            raise TimeoutError from exc


def deadline_in(delay_s: float) -> Deadline:
    """A `Deadline` `delay_s` from now for the running task: `asyncio.timeout(delay_s)` on
    the loop's Timeouts."""
    task = asyncio.current_task()
    if task is None:
        raise RuntimeError("deadline_in() needs a running task")
    return Deadline(task.get_loop().time() + delay_s, task)
