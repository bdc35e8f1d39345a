"""Background loops, one per backend: run a step every interval until stopped.

Health probes and engine-metrics scrapes share this shape; a failing step is logged
and the loop goes on, so one bad answer never silences a backend's checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

log = logging.getLogger("hybridgate.control")


class PerBackendLoops:
    def __init__(self, kind: str, interval_s: float, step: Callable[[str], Awaitable[Any]]) -> None:
        self.kind = kind
        self.interval_s = interval_s
        self._step = step
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, names: Iterable[str]) -> None:
        for name in names:
            self._tasks.append(asyncio.create_task(self._loop(name), name=f"{self.kind}:{name}"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()

    async def _loop(self, name: str) -> None:
        while True:
            try:
                await self._step(name)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in one step must not end the loop
                log.exception("%s of backend %s failed unexpectedly", self.kind, name)
            await asyncio.sleep(self.interval_s)
