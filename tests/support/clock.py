"""A real asyncio loop on a clock the test moves: timers checked to the second without
waiting for them (proxy/request/timeouts.py's Timeouts, a connection's deadlines)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class ClockLoop(asyncio.SelectorEventLoop):
    """An asyncio loop whose clock (`loop.time()`) stands still until `advance` moves it;
    sockets and callbacks run as on any loop."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0

    def time(self) -> float:
        return self.now


async def advance(loop: ClockLoop, seconds: float) -> None:
    """Moves the clock, then lets the loop run what became due (a few turns of it: a
    timeout that cancels a task, then that task's step)."""
    loop.now += seconds
    for _ in range(5):
        await asyncio.sleep(0)


def on_clock(main: Callable[[ClockLoop], Awaitable[None]]) -> None:
    """Runs `main(loop)` to its end on a fresh ClockLoop, closed afterwards."""
    loop = ClockLoop()
    try:
        loop.run_until_complete(main(loop))
    finally:
        loop.close()
