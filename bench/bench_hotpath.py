"""Micro-benchmarks of the request path's own pieces, each against a same-run baseline.

- per-chunk relay cost: UsageTap.feed on vLLM-shaped SSE chunks (with and without the
  continuous usage object to cut), against a bare `bytes` concatenation of the same chunks;
- metering cost per event: Meter.finish (pricing + the Prometheus sink + the windowed
  cost model) on a self-hosted and an API event, against calling an empty function;
- startup time to ready: `hybridgate serve` until /health/live answers, against
  `python -c pass` (the interpreter's own start).

    python bench/bench_hotpath.py [--reps 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from proxy.config import parse_config  # noqa: E402
from proxy.metering.events import Attempt, UsageEvent  # noqa: E402
from proxy.request.sse import UsageTap  # noqa: E402
from tests.support.servers import ManagedProcess, free_port, wait_http  # noqa: E402


def per_op_ns(fn: Any, n: int, reps: int) -> float:
    """Median over reps of the time per call, in ns."""
    times = []
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        fn(n)
        times.append((time.perf_counter_ns() - t0) / n)
    return statistics.median(times)


def chunk(i: int, usage: bool) -> bytes:
    obj: dict[str, Any] = {
        "id": "chatcmpl-0123456789abcdef",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "meta-llama/Llama-3.1-8B-Instruct",
        "choices": [
            {
                "index": 0,
                "delta": {"content": f" token{i}"},
                "logprobs": None,
                "finish_reason": None,
            }
        ],
    }
    if usage:
        obj["usage"] = {"prompt_tokens": 50, "total_tokens": 51 + i, "completion_tokens": i + 1}
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def bench_relay(reps: int) -> list[tuple[str, float, float]]:
    plain = [chunk(i, False) for i in range(1000)]
    cont = [chunk(i, True) for i in range(1000)]

    def baseline(n: int) -> None:
        for _ in range(n // 1000):
            out = b""
            for c in plain:
                out = c + b""
        del out

    def tap_plain(n: int) -> None:
        for _ in range(n // 1000):
            tap = UsageTap(strip_usage_chunk=True, strip_inline_usage=True)
            for c in plain:
                tap.feed(c)

    def tap_cut(n: int) -> None:
        for _ in range(n // 1000):
            tap = UsageTap(strip_usage_chunk=True, strip_inline_usage=True)
            for c in cont:
                tap.feed(c)
            tap.usage()

    base = per_op_ns(baseline, 200_000, reps)
    return [
        ("relay chunk, no usage", per_op_ns(tap_plain, 200_000, reps), base),
        ("relay chunk, cut continuous usage", per_op_ns(tap_cut, 200_000, reps), base),
    ]


def bench_metering(reps: int) -> list[tuple[str, float, float]]:
    from proxy.server.app import HybridGateApp

    cfg = parse_config("""
gpu_pools: {h100: {gpus: 1, billing: rental, usd_per_gpu_hour: 2.5}}
tenants: {t: {}}
backends:
  local: {type: openai, base_url: "http://127.0.0.1:9/v1", pool: h100}
  api: {type: openai, base_url: "http://127.0.0.1:9/v1"}
models:
  chat:
    targets: [{backend: local, model: m}, {backend: api, model: gpt-4o-mini}]
    compare_to: {model: gpt-4o-mini}
""")
    app = HybridGateApp(cfg)
    meter = app.runtime.meter

    def event(backend: str, model: str) -> UsageEvent:
        ev = UsageEvent(
            request_id="r",
            started_at=time.time(),
            endpoint="chat",
            tenant="t",
            alias="chat",
            backend=backend,
            model=model,
            status=200,
            prompt_tokens=120,
            completion_tokens=80,
            ttft_s=0.05,
            duration_s=0.4,
            overhead_s=0.0002,
        )
        ev.attempts.append(Attempt(backend, model, 200))
        return ev

    local = [event("local", "m") for _ in range(1000)]
    for e in local:
        e.gpu_seconds = e.attempts[0].gpu_seconds = 0.01
    api = [event("api", "gpt-4o-mini") for _ in range(1000)]

    def empty(ev: UsageEvent) -> None:
        return None

    def baseline(n: int) -> None:
        for _ in range(n // 1000):
            for ev in local:
                empty(ev)

    def finish(events: list[UsageEvent]) -> Any:
        def run(n: int) -> None:
            for _ in range(n // 1000):
                for ev in events:
                    meter.finish(ev)

        return run

    base = per_op_ns(baseline, 100_000, reps)
    return [
        ("metering, self-hosted event", per_op_ns(finish(local), 100_000, reps), base),
        ("metering, API event", per_op_ns(finish(api), 100_000, reps), base),
    ]


def bench_startup(reps: int) -> list[tuple[str, float, float]]:
    tmp = Path(tempfile.mkdtemp(prefix="hg-startup-"))
    cfg = tmp / "c.yaml"
    cfg.write_text(
        "backends:\n  b: {type: openai, base_url: 'http://127.0.0.1:9/v1'}\n"
        "models:\n  m: {targets: [{backend: b, model: gpt-4o-mini}]}\n"
    )
    serve, interp = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        interp.append(time.perf_counter() - t0)
        port = free_port()
        t0 = time.perf_counter()
        p = ManagedProcess(
            [sys.executable, "-m", "proxy", "serve", "-c", str(cfg), "--port", str(port)],
            tmp / "serve.log",
        )
        try:
            wait_http(f"http://127.0.0.1:{port}/health/live", 60, p.proc)
            serve.append(time.perf_counter() - t0)
        finally:
            p.stop()
    return [
        ("startup to ready (ns)", statistics.median(serve) * 1e9, statistics.median(interp) * 1e9)
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    rows = bench_relay(args.reps) + bench_metering(args.reps) + bench_startup(3)
    print(f"{'what':<38}{'median':>14}{'baseline':>14}{'ratio':>8}{'added':>14}")
    for name, v, b in rows:
        unit, div = ("ms", 1e6) if v > 1e6 else ("µs", 1e3)
        print(
            f"{name:<38}{v / div:>11.2f} {unit}{b / div:>11.2f} {unit}{v / b:>7.1f}x"
            f"{(v - b) / div:>11.2f} {unit}"
        )
    print(f"load average: {Path('/proc/loadavg').read_text().split()[:3]}")


if __name__ == "__main__":
    main()
