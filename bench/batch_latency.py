"""Live latency with and without a batch job on the same self-hosted pool, in one run.

A vLLM-like simulator (real process) behind a real `hybridgate serve`; live clients send
chat requests back to back while a 500-line batch (official openai SDK, `client.files` and
`client.batches`) fills the pool's idle slots. Three phases in the same run: live traffic
alone, live traffic with the batch running, live traffic alone again, so the baseline's
own spread is known. Not a test: it prints figures (and `--json`), it asserts nothing.

    PYTHONPATH=. python bench/batch_latency.py --clients 4 --lines 500
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import openai

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.proxy import run_proxy
from tests.support.sim import run_simulator

KEY, ADMIN = "sk-bench-batch", "sk-bench-admin"


def live_phase(base_url: str, clients: int, seconds: float) -> list[float]:
    """Latencies (s) of live requests sent back to back by `clients` for `seconds`."""
    out: list[float] = []
    errors: list[int] = []
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def loop() -> None:
        with httpx.Client(timeout=60) as h:
            while time.monotonic() < end:
                t0 = time.perf_counter()
                r = h.post(
                    f"{base_url}/chat/completions",
                    headers={"Authorization": f"Bearer {KEY}"},
                    json={
                        "model": "chat",
                        "max_tokens": 32,
                        "messages": [{"role": "user", "content": "live request"}],
                    },
                )
                dt = time.perf_counter() - t0
                with lock:
                    if r.status_code == 200:
                        out.append(dt)
                    else:
                        errors.append(r.status_code)

    threads = [threading.Thread(target=loop) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:  # a benchmark of failures would flatter the latency
        raise SystemExit(f"live requests failed: {sorted(set(errors))} ({len(errors)})")
    return out


def summary(lat: list[float]) -> dict[str, float]:
    q = statistics.quantiles(lat, n=100)
    return {
        "requests": len(lat),
        "p50_ms": q[49] * 1000,
        "p95_ms": q[94] * 1000,
        "p99_ms": q[98] * 1000,
        "mean_ms": statistics.fmean(lat) * 1000,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--lines", type=int, default=500)
    ap.add_argument("--seconds", type=float, default=8.0, help="length of each baseline")
    ap.add_argument("--speed", type=float, default=10.0, help="the simulator's --speed")
    ap.add_argument("--slots", type=int, default=16, help="the backend's max_concurrency")
    ap.add_argument("--threshold", type=float, default=0.75)
    ap.add_argument("--max-inflight", type=int, default=8)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        with run_simulator(tmp, "vllm", args=["--speed", str(args.speed)]) as sim:
            cfg = {
                "auth": {"admin_key": ADMIN, "keys": [{"key": KEY, "tenant": "bench"}]},
                "gpu_pools": {"p": {"gpus": 1, "billing": "rental", "usd_per_gpu_hour": 2.0}},
                "backends": {
                    "local": {"base_url": sim.base_url, "pool": "p", "max_concurrency": args.slots}
                },
                "models": {
                    "chat": {
                        "targets": [{"backend": "local", "model": "sim-model"}],
                        "compare_to": {"model": "gpt-4o-mini"},
                    }
                },
                "health_checks": {"interval_s": 60},
                "batch": {
                    "dir": str(tmp / "batch"),
                    "aliases": {
                        "chat": {
                            "utilization_threshold": args.threshold,
                            "max_inflight": args.max_inflight,
                        }
                    },
                },
            }
            with run_proxy(tmp, cfg) as proxy:
                live_phase(proxy.base_url, args.clients, 1.0)  # warm up
                before = live_phase(proxy.base_url, args.clients, args.seconds)
                c = openai.OpenAI(base_url=proxy.base_url, api_key=KEY)
                lines = "\n".join(
                    json.dumps(
                        {
                            "custom_id": f"b{i}",
                            "method": "POST",
                            "url": "/v1/chat/completions",
                            "body": {
                                "model": "chat",
                                "max_tokens": 64,
                                "messages": [{"role": "user", "content": f"batch line {i}"}],
                            },
                        }
                    )
                    for i in range(args.lines)
                )
                f = c.files.create(file=("bench.jsonl", lines.encode()), purpose="batch")
                t0 = time.monotonic()
                b = c.batches.create(
                    input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
                )
                during: list[float] = []
                while b.status not in ("completed", "failed", "expired", "cancelled"):
                    during += live_phase(proxy.base_url, args.clients, 1.0)
                    b = c.batches.retrieve(b.id)
                batch_s = time.monotonic() - t0
                after = live_phase(proxy.base_url, args.clients, args.seconds)
                report = httpx.get(
                    f"{proxy.url}/costs/report",
                    headers={"Authorization": f"Bearer {ADMIN}"},
                    timeout=30,
                ).json()
    result: dict[str, Any] = {
        "config": vars(args),
        "batch": {
            "status": b.status,
            "lines": b.request_counts.total if b.request_counts else 0,
            "completed": b.request_counts.completed if b.request_counts else 0,
            "seconds": batch_s,
            "books": report["batch"],
        },
        "live_before": summary(before),
        "live_during_batch": summary(during),
        "live_after": summary(after),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"batch: {result['batch']['completed']}/{result['batch']['lines']} lines "
          f"{b.status} in {batch_s:.1f} s")  # fmt: skip
    print(f"{'phase':<20}{'requests':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
    for name in ("live_before", "live_during_batch", "live_after"):
        s = result[name]
        print(
            f"{name:<20}{s['requests']:>9}{s['p50_ms']:>9.1f}{s['p95_ms']:>9.1f}{s['p99_ms']:>9.1f}"
        )
    books = report["batch"]
    print(
        f"batch filled {books['busy_gpu_seconds_filled']:.2f} busy GPU-s "
        f"(idle cost absorbed ${books['idle_cost_absorbed_usd']:.6f}); the same lines at the "
        f"API: ${books['same_lines_at_api_batch_usd']:.6f} batch, "
        f"${books['same_lines_at_api_regular_usd']:.6f} regular"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
