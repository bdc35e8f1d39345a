"""LiveCosts: the window model, the live report and the gauges, for one running proxy.

Created once by the app (it outlives config reloads, like Metrics): the Meter feeds
`window.observe` as a fast sink; a background task samples the GPU pools into the window
every SAMPLE_S seconds and refreshes the TCO gauges every REFRESH_S seconds from the
GAUGE_WINDOW report, computed in a worker thread so the event loop (and the request
path) never waits on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Iterator
from typing import Any, Final

from proxy.live.compare import SCENARIOS, Context
from proxy.live.report import build_report
from proxy.live.window import Window

log = logging.getLogger("hybridgate.live")

REFRESH_S: Final[float] = 5.0
REUSE_S: Final[float] = 2.0
SAMPLE_S: Final[float] = 1.0
"""GPU pools are sampled into the window this often (utilization charts per second)."""
GAUGE_WINDOW: Final[str] = "24h"
"""The TCO, breakeven and projected-volume gauges use this window (min(24 h, uptime))."""
UTILIZATION_WINDOW_S: Final[int] = 300
"""hybridgate_gpu_utilization_ratio{pool}: busy / provisioned over the trailing 5 minutes."""


class LiveCosts:
    def __init__(self, gate: Any, window: Window | None = None) -> None:
        self._gate = gate
        self.window = window or Window(
            pool_inflight=self._pool_inflight,
            backend_pool=lambda backend: self._gate.runtime.meter.backend_pool.get(backend),
        )
        self._task: asyncio.Task[None] | None = None
        self.last_refresh: dict[str, Any] | None = None
        # (window, series, chart) -> (events seen, runtime, monotonic time, report)
        self._cache: dict[tuple[str, bool, bool], tuple[int, Any, float, dict[str, Any]]] = {}

    def _pool_inflight(self, pool: str) -> int:
        acct = self._gate.runtime.meter.pools.get(pool)
        return acct.inflight if acct is not None else 0

    # ------------------------------------------------------------ reading

    def sample(self) -> list[dict[str, Any]]:
        """Record the pools' cumulative figures in the window; returns the snapshot rows."""
        rows = list(self._gate.runtime.meter.pool_snapshot())
        self.window.sample_pools(rows)
        return rows

    def pool_rows(self) -> Iterator[dict[str, Any]]:
        """The Meter's pool snapshot with `utilization` over the trailing
        UTILIZATION_WINDOW_S (since start until a sample exists): what the PoolCollector
        exports as hybridgate_gpu_utilization_ratio."""
        for row in self.sample():
            trailing = self.window.utilization(row["pool"], UTILIZATION_WINDOW_S)
            if trailing is not None:
                row = {**row, "utilization": trailing}
            yield row

    async def report(
        self, window: str, *, series: bool = True, chart: bool = True
    ) -> dict[str, Any]:
        """The live report (proxy/live/report.py), computed off the event loop.

        Several dashboards polling at once share one computation: a report is reused for
        REUSE_S seconds while no event arrived and the config did not change.
        """
        key = (window, series, chart)
        rt = self._gate.runtime
        cached = self._cache.get(key)
        now = time.monotonic()
        if (
            cached is not None
            and cached[0] == self.window.events_seen
            and cached[1] is rt
            and now - cached[2] < REUSE_S
        ):
            return cached[3]
        self.sample()
        view = self.window.view(window)
        ctx = Context.from_runtime(rt)
        seen = self.window.events_seen
        report = await asyncio.to_thread(build_report, view, ctx, series=series, chart=chart)
        # How each pool's books are kept (this process, or one set shared by the replicas)
        # and whether they are approximate: the store away, not reconciled yet.
        report["gpu_books"] = rt.meter.books_report()
        self._cache[key] = (seen, rt, now, report)
        return report

    # ------------------------------------------------------------ gauges

    async def refresh(self) -> None:
        report = await self.report(GAUGE_WINDOW, series=False, chart=False)
        metrics = self._gate.metrics
        for name in SCENARIOS:
            value = report["scenarios"].get(name)
            if value is None:
                with contextlib.suppress(KeyError):
                    metrics.tco.remove(name)
            else:
                metrics.tco.labels(name).set(value)
        primary = next(
            (c for c in report["comparisons"] if c["pool"] == report["primary_pool"]), None
        )
        if primary is None or primary["breakeven"] is None:
            be = math.nan
        else:
            volume = primary["breakeven"]["requests_per_month"]
            be = math.inf if volume is None else float(volume)
        metrics.breakeven.set(be)
        metrics.projected.set(report["today_requests_per_month"])
        self.last_refresh = report

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._refresh_forever(), name="hybridgate-live")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _refresh_forever(self) -> None:
        loop = asyncio.get_running_loop()
        next_refresh = loop.time()
        while True:
            try:
                self.sample()
                if loop.time() >= next_refresh:
                    next_refresh = loop.time() + REFRESH_S
                    await self.refresh()
            except Exception:  # a bad tick must not stop the next
                log.exception("refreshing the live cost gauges failed")
            await asyncio.sleep(SAMPLE_S)
