"""What the self-hosted engines say about themselves, scraped in the background.

Spillover needs to know whether the GPU has headroom; the engine knows better than
the proxy (requests from other clients, KV-cache pressure). A task per self-hosted
backend reads its Prometheus `/metrics` every `engine_metrics.interval_s` and keeps
the latest figures; the router only ever reads a field. Never on the request path.

vLLM: `vllm:num_requests_running`, `vllm:num_requests_waiting`,
`vllm:kv_cache_usage_perc` (older releases: `vllm:gpu_cache_usage_perc`),
`vllm:prompt_tokens_total`, `vllm:generation_tokens_total`.
llama.cpp's server: `llamacpp:requests_processing`, `llamacpp:requests_deferred`,
`llamacpp:kv_cache_usage_ratio` (where the build still has it),
`llamacpp:prompt_tokens_total`, `llamacpp:tokens_predicted_total`.
Several series of one name (data-parallel engines, several models) are summed; the
KV-cache figure takes the fullest engine.

The context window of each served model is read too (vLLM: `max_model_len` in
`/v1/models`; llama.cpp: `n_ctx` in `/props`), so routing can skip a target whose
window a prompt does not fit, without it being written in the config.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

from proxy.config import Backend as BackendConfig
from proxy.config import EngineMetrics
from proxy.routing.periodic import PerBackendLoops

# metric name -> (snapshot field, how several series combine)
_VLLM = {
    "vllm:num_requests_running": ("running", "sum"),
    "vllm:num_requests_waiting": ("waiting", "sum"),
    "vllm:kv_cache_usage_perc": ("kv_cache", "max"),
    "vllm:gpu_cache_usage_perc": ("kv_cache_old", "max"),
    "vllm:prompt_tokens_total": ("prompt_tokens_total", "sum"),
    "vllm:generation_tokens_total": ("generation_tokens_total", "sum"),
}
_LLAMACPP = {
    "llamacpp:requests_processing": ("running", "sum"),
    "llamacpp:requests_deferred": ("waiting", "sum"),
    "llamacpp:kv_cache_usage_ratio": ("kv_cache", "max"),
    "llamacpp:prompt_tokens_total": ("prompt_tokens_total", "sum"),
    "llamacpp:tokens_predicted_total": ("generation_tokens_total", "sum"),
}
NAMES = {"vllm": _VLLM, "llamacpp": _LLAMACPP}
_PREFIXES = {engine: tuple(names) for engine, names in NAMES.items()}


@dataclass(slots=True)
class EngineSnapshot:
    """The latest figures of one engine; None where the engine did not say."""

    running: float | None = None
    waiting: float | None = None
    kv_cache: float | None = None  # fraction of the KV cache in use, 0..1
    prompt_tokens_total: float | None = None  # the engine's own counters (monotonic)
    generation_tokens_total: float | None = None
    at: float = 0.0  # time.monotonic() of the scrape
    took: float = 0.0  # seconds the engine took to answer it

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "running": self.running,
            "waiting": self.waiting,
            "kv_cache_usage": self.kv_cache,
            "prompt_tokens_total": self.prompt_tokens_total,
            "generation_tokens_total": self.generation_tokens_total,
            "age_s": round(now - self.at, 3),
            "scrape_s": round(self.took, 3),
        }


def parse_engine_metrics(text: str, engine: str) -> EngineSnapshot:
    """The figures of interest from a Prometheus text exposition.

    prometheus_client's parser reads each sample (names with colons, quoted labels
    holding braces or spaces, timestamps). It is pure Python and slow per line, and an
    engine's page is mostly histograms we never read, so only lines that start with a
    wanted name reach it (a C-level `startswith` per line). Each such line is parsed on
    its own, so one malformed sample is skipped instead of losing the whole scrape.
    """
    wanted = NAMES[engine]
    prefixes = _PREFIXES[engine]
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith(prefixes):
            continue
        try:
            samples = [s for family in text_string_to_metric_families(line) for s in family.samples]
        except ValueError:
            continue
        for sample in samples:
            spec = wanted.get(sample.name)
            if spec is None:
                continue
            field, how = spec
            value = sample.value
            if field in values:
                values[field] = values[field] + value if how == "sum" else max(values[field], value)
            else:
                values[field] = value
    old = values.pop("kv_cache_old", None)
    if "kv_cache" not in values and old is not None:
        values["kv_cache"] = old
    return EngineSnapshot(**values)


def context_windows(engine: str, body: bytes) -> dict[str, int]:
    """model -> context window (tokens) from vLLM's /v1/models or llama.cpp's /props.

    llama.cpp serves one model per server; its window is keyed "*" (any model name).
    """
    data = orjson.loads(body)
    out: dict[str, int] = {}
    if engine == "vllm":
        for m in data.get("data") or []:
            if isinstance(m, dict) and isinstance(m.get("id"), str):
                n = m.get("max_model_len")
                if isinstance(n, int) and n > 0:
                    out[m["id"]] = n
    else:
        settings = data.get("default_generation_settings") or {}
        n = settings.get("n_ctx") or data.get("n_ctx")
        if isinstance(n, int) and n > 0:
            out["*"] = n
    return out


class EngineMetricsReader:
    def __init__(
        self,
        cfg: EngineMetrics,
        backends: dict[str, Any],
        configs: dict[str, BackendConfig],
        previous: EngineMetricsReader | None = None,
    ) -> None:
        self.cfg = cfg
        self._backends = backends
        self.targets: dict[str, tuple[str, str]] = {}  # backend -> (engine, metrics url)
        for name, bcfg in configs.items():
            engine = bcfg.engine_kind
            b = backends[name]
            if not (cfg.enabled and bcfg.self_hosted and engine in NAMES and hasattr(b, "get")):
                continue
            self.targets[name] = (engine, bcfg.metrics_url or b.root_url + "/metrics")
        self.snapshots: dict[str, EngineSnapshot] = {}
        self.windows: dict[str, dict[str, int]] = {}
        self.min_window: float = math.inf  # the smallest window read from any engine
        if previous is not None:
            for name, target in self.targets.items():
                if previous.targets.get(name) == target:
                    if name in previous.snapshots:
                        self.snapshots[name] = previous.snapshots[name]
                    if name in previous.windows:
                        self.set_windows(name, previous.windows[name])
        self.errors: dict[str, str] = {}
        self._loops = PerBackendLoops("engine metrics scrape", cfg.interval_s, self.scrape)

    # ------------------------------------------------------------ reading (router)

    def fresh(self, backend: str) -> EngineSnapshot | None:
        """The latest figures if recent enough to route on, else None.

        Recent means within three scrape cycles, a cycle being the interval plus the time
        the engine took to answer the last scrape: a busy engine serves its metrics page
        slowly, and its queue figures must not be thrown away exactly when it is full."""
        snap = self.snapshots.get(backend)
        if snap is None or time.monotonic() - snap.at > 3 * (self.cfg.interval_s + snap.took):
            return None
        return snap

    def context_window(self, backend: str, model: str) -> int | None:
        w = self.windows.get(backend)
        if not w:
            return None
        return w.get(model) or w.get("*")

    def token_totals(self) -> dict[str, tuple[float | None, float | None]]:
        """backend -> (prompt, generation) tokens as the engine itself counts them."""
        return {
            name: (s.prompt_tokens_total, s.generation_tokens_total)
            for name, s in self.snapshots.items()
        }

    def details(self, backend: str) -> dict[str, Any] | None:
        if backend not in self.targets:
            return None
        snap = self.snapshots.get(backend)
        out: dict[str, Any] = snap.to_json(time.monotonic()) if snap else {}
        if backend in self.errors:
            out["error"] = self.errors[backend]
        if backend in self.windows:
            out["context_windows"] = self.windows[backend]
        return out

    # ------------------------------------------------------------ scraping

    async def start(self) -> None:
        self._loops.start(self.targets)

    async def stop(self) -> None:
        await self._loops.stop()

    async def scrape(self, name: str) -> bool:
        """Read the engine's metrics (and its context windows until known) once."""
        engine, url = self.targets[name]
        backend = self._backends[name]
        began = time.monotonic()
        try:
            status, body = await backend.get(url, self.cfg.timeout_s)
            if status != 200:
                raise ValueError(f"HTTP {status}")
            snap = parse_engine_metrics(body.decode("utf-8", "replace"), engine)
        except Exception as exc:
            self.errors[name] = str(exc) or type(exc).__name__
            return False
        snap.at = time.monotonic()
        snap.took = snap.at - began
        self.snapshots[name] = snap
        self.errors.pop(name, None)
        if name not in self.windows:
            await self._read_windows(name, engine, backend)
        return True

    async def _read_windows(self, name: str, engine: str, backend: Any) -> None:
        path = backend.base_url + "/models" if engine == "vllm" else backend.root_url + "/props"
        with contextlib.suppress(Exception):
            status, body = await backend.get(path, self.cfg.timeout_s)
            if status == 200:
                windows = context_windows(engine, body)
                if windows:
                    self.set_windows(name, windows)

    def set_windows(self, name: str, windows: dict[str, int]) -> None:
        self.windows[name] = windows
        self.min_window = min(self.min_window, *windows.values())
