"""Timeouts that almost never fire, for less than an event-loop timer each.

The request path arms two per request (the request deadline, the upstream read timeout)
and cancels both moments later. An event-loop timer under uvloop is a libuv handle,
allocated, started, stopped and closed each time: about 5 µs per timeout on this project's
bench machine, 3-4% of the proxy's CPU per request. Here a timeout is an entry in a heap,
and one loop timer waits for the earliest entry still live. A timeout fires no earlier
than its time and as late as the loop's own timers would fire it.
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

# Cancelled entries are left in the heap until they surface or until they are this many
# and half of it: then the heap is rebuilt from the live ones.
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


class Timeouts:
    """The timeouts of one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)  # held by the registry below, keyed weakly by the loop
        self._heap: list[tuple[float, int, Timeout]] = []
        self._order = itertools.count()
        self._dead = 0
        self._timer: asyncio.TimerHandle | None = None
        self._armed_for = math.inf

    def at(self, when: float, callback: Callable[[Any], None], arg: Any) -> Timeout:
        """`callback(arg)` at loop time `when`, unless cancelled first."""
        timeout = Timeout(self, callback, arg)
        heapq.heappush(self._heap, (when, next(self._order), timeout))
        if when < self._armed_for:
            self._arm(when)
        return timeout

    def __len__(self) -> int:
        """Timeouts still live."""
        return len(self._heap) - self._dead

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop().call_at(when, self._run)  # type: ignore[union-attr]
        self._armed_for = when

    def _cancelled(self) -> None:
        self._dead += 1
        if self._dead >= _COMPACT_AT and self._dead * 2 >= len(self._heap):
            self._heap = [entry for entry in self._heap if entry[2].live]
            heapq.heapify(self._heap)
            self._dead = 0

    def _run(self) -> None:
        self._timer = None
        self._armed_for = math.inf
        heap = self._heap
        now = self._loop().time()  # type: ignore[union-attr]
        while heap:
            when, _, timeout = heap[0]
            if not timeout.live:
                heapq.heappop(heap)
                self._dead -= 1
                continue
            if when > now:
                self._arm(when)
                return
            heapq.heappop(heap)
            timeout.live = False
            callback, arg = timeout.callback, timeout.arg
            timeout.arg = None
            try:
                callback(arg)
            except Exception:  # one broken callback must not strand the timeouts after it
                log.exception("timeout callback failed")


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
