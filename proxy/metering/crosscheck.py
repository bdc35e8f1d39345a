"""Our token counts beside the engine's own, so traffic that bypasses the proxy shows.

The engine metrics reader (proxy/routing/engine_metrics.py) scrapes each self-hosted engine's
token counters in the background. Every time a new engine reading appears, this pairs
it with the proxy's own metered tokens for that backend at that moment. The first pair
is the baseline; the gauge is how many more tokens the engine processed since then than
the proxy metered: ~0 when all traffic goes through the proxy, growing when something
calls the engine directly (or when the engine restarted: its counters reset, and the
baseline is taken again).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from proxy.routing.engine_metrics import EngineMetricsReader

KINDS = (("prompt", 0), ("completion", 1))


class EngineCrossCheck(Collector):
    def __init__(
        self,
        engines: Callable[[], EngineMetricsReader | None],
        metered: Callable[[str, str], float],
        engine_kind: Callable[[str], str],
        interval_s: float = 1.0,
    ) -> None:
        self._engines = engines  # () -> EngineMetricsReader of the current runtime
        self._engine_kind = engine_kind
        self._metered = metered  # (backend, kind) -> tokens the proxy metered so far
        self._interval = interval_s
        self._seen: dict[str, float] = {}  # backend -> time of the last reading paired
        self._base: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {}
        self._last: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {}
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        """Pair each new engine reading with our own counts (call often; O(backends))."""
        reader = self._engines()
        if reader is None:
            return
        for name, snap in list(reader.snapshots.items()):
            if snap.at == self._seen.get(name):
                continue
            self._seen[name] = snap.at
            if snap.prompt_tokens_total is None or snap.generation_tokens_total is None:
                continue
            engine = (snap.prompt_tokens_total, snap.generation_tokens_total)
            prompt = self._metered(name, "prompt")
            if self._engine_kind(name) == "llamacpp":
                # llama.cpp's prompt counter leaves out prompt-cache hits; usage includes them.
                prompt -= self._metered(name, "cached_prompt")
            ours = (prompt, self._metered(name, "completion"))
            base = self._base.get(name)
            if base is None or engine[0] < base[0][0] or engine[1] < base[0][1]:
                self._base[name] = (engine, ours)  # first reading, or the engine restarted
            self._last[name] = (engine, ours)

    def unmetered(self, backend: str) -> tuple[float, float] | None:
        """(prompt, completion) tokens the engine saw since the baseline beyond ours."""
        base, last = self._base.get(backend), self._last.get(backend)
        if base is None or last is None:
            return None
        (engine, ours), (engine0, ours0) = last, base
        prompt = (engine[0] - engine0[0]) - (ours[0] - ours0[0])
        completion = (engine[1] - engine0[1]) - (ours[1] - ours0[1])
        return prompt, completion

    def collect(self) -> Iterable[Metric]:
        self.sample()
        engine = GaugeMetricFamily(
            "hybridgate_engine_tokens",
            "Tokens the self-hosted engine itself reports (its own cumulative counters, "
            "as last scraped), by kind (prompt | completion).",
            labels=["backend", "kind"],
        )
        gap = GaugeMetricFamily(
            "hybridgate_engine_unmetered_tokens",
            "Tokens the engine processed since the proxy's first reading of it that the "
            "proxy did not meter: traffic bypassing the proxy (~0 when all goes through it).",
            labels=["backend", "kind"],
        )
        for name, (eng, _ours) in self._last.items():
            diff = self.unmetered(name)
            for kind, i in KINDS:
                engine.add_metric([name, kind], eng[i])
                if diff is not None:
                    gap.add_metric([name, kind], diff[i])
        yield engine
        yield gap

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self._interval)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
