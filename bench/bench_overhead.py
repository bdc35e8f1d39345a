"""Proxy overhead against a direct call to the same upstream, measured in one run.

Starts the simulator in API mode with zero latency (the upstream), `hybridgate serve` in
front of it (metering, Prometheus, the windowed cost model and auth all on, memory://
state), and three bare passthroughs (bench/bare_passthrough.py: a server and an upstream
client, nothing else) as the floor of any Python proxy: uvicorn + raw ASGI with aiohttp and
with hybridgate's own client (proxy/backends/h1client.py), so the client's share is measured
in the same run, and a raw httptools protocol with that client ("bare raw": no ASGI, as
hybridgate's fast path for the OpenAI routes). Then, for each target:

- sequential latency (one request at a time): median and p99, non-streaming and streaming
  (time to first chunk and to the end of a 20-chunk stream);
- closed-loop throughput with 32 connections, and the proxy's CPU seconds per 1,000 requests.

Every figure is printed beside the same-run baseline (direct) and the ratio or the
difference to it. Pin with `taskset` for steadier numbers:

    python bench/bench_overhead.py [--requests 2000] [--seconds 5] [--cpu 1]

The peer comparison (LiteLLM's proxy, Portkey's gateway) is `bench/peers/run.sh`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.servers import ManagedProcess, free_port, wait_http  # noqa: E402

KEY = "sk-bench-key"
BODY = {
    "model": "bench",
    "messages": [{"role": "user", "content": "hello there"}],
    "max_tokens": 20,
}


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its children, from /proc (seconds)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / ticks


async def sequential(
    url: str, headers: dict[str, str], n: int, stream: bool
) -> tuple[list[float], list[float]]:
    """Latency to first byte of the answer and to its end, one request at a time."""
    first: list[float] = []
    total: list[float] = []
    body = dict(BODY, stream=stream)
    async with aiohttp.ClientSession() as s:
        for i in range(n + 50):
            t0 = time.perf_counter()
            async with s.post(url, json=body, headers=headers) as r:
                assert r.status == 200, await r.text()
                t1 = None
                async for _ in r.content.iter_any():
                    if t1 is None:
                        t1 = time.perf_counter()
            t2 = time.perf_counter()
            if i >= 50:  # warm-up
                first.append((t1 or t2) - t0)
                total.append(t2 - t0)
    return first, total


async def closed_loop(url: str, headers: dict[str, str], seconds: float, conns: int) -> int:
    done = 0
    stop = time.monotonic() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=conns)) as s:

        async def worker() -> None:
            nonlocal done
            while time.monotonic() < stop:
                async with s.post(url, json=BODY, headers=headers) as r:
                    await r.read()
                    done += 1

        await asyncio.gather(*(worker() for _ in range(conns)))
    return done


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def measure(
    name: str, url: str, headers: dict[str, str], pid: int | None, args: Any
) -> dict[str, float]:
    out: dict[str, float] = {}
    _, tot = asyncio.run(sequential(url, headers, args.requests, stream=False))
    out["p50_ms"] = statistics.median(tot) * 1e3
    out["p99_ms"] = pct(tot, 0.99) * 1e3
    first, stot = asyncio.run(sequential(url, headers, args.requests // 2, stream=True))
    out["stream_first_p50_ms"] = statistics.median(first) * 1e3
    out["stream_total_p50_ms"] = statistics.median(stot) * 1e3
    c0 = cpu_seconds(pid) if pid else 0.0
    t0 = time.perf_counter()
    n = asyncio.run(closed_loop(url, headers, args.seconds, 32))
    elapsed = time.perf_counter() - t0
    out["rps"] = n / elapsed
    if pid:
        out["cpu_s_per_1k"] = (cpu_seconds(pid) - c0) / n * 1000
    print(f"  measured {name}", file=sys.stderr)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--cpu", default="1", help="CPU list for the proxies (taskset)")
    ap.add_argument("--upstream-cpu", default="0")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hg-bench-"))
    up_port, hg_port = free_port(), free_port()
    procs: list[ManagedProcess] = []
    try:
        up = ManagedProcess(
            [
                "taskset",
                "-c",
                args.upstream_cpu,
                sys.executable,
                "-m",
                "simulator",
                "--mode",
                "api",
                "--port",
                str(up_port),
                "--ttft-ms",
                "0",
                "--itl-ms",
                "0",
                "--default-max-tokens",
                "20",
            ],
            tmp / "up.log",
        )
        procs.append(up)
        upstream = f"http://127.0.0.1:{up_port}/v1"
        cfg = tmp / "hg.yaml"
        cfg.write_text(f"""
auth:
  admin_key: admin-bench
  keys: [{{key: {KEY}, tenant: bench}}]
tenants: {{bench: {{}}}}
prices: {{bench-upstream: {{input: 0.15, output: 0.6}}}}
backends:
  up: {{type: openai, base_url: "{upstream}", max_concurrency: 1024}}
models:
  bench: {{targets: [{{backend: up, model: bench-upstream}}]}}
""")
        hg = ManagedProcess(
            [
                "taskset",
                "-c",
                args.cpu,
                sys.executable,
                "-m",
                "proxy",
                "serve",
                "-c",
                str(cfg),
                "--port",
                str(hg_port),
            ],
            tmp / "hg.log",
        )
        procs.append(hg)
        bare: dict[str, tuple[ManagedProcess, int]] = {}
        for client, server in (("aiohttp", "uvicorn"), ("h1", "uvicorn"), ("h1", "raw")):
            port = free_port()
            name = client if server == "uvicorn" else server
            bare[name] = (
                ManagedProcess(
                    [
                        "taskset",
                        "-c",
                        args.cpu,
                        sys.executable,
                        str(ROOT / "bench" / "bare_passthrough.py"),
                        "--port",
                        str(port),
                        "--upstream",
                        upstream,
                        "--client",
                        client,
                        "--server",
                        server,
                    ],
                    tmp / f"bare-{name}.log",
                ),
                port,
            )
            procs.append(bare[name][0])
        wait_http(f"http://127.0.0.1:{up_port}/v1/models", 30, up.proc)
        wait_http(f"http://127.0.0.1:{hg_port}/health/live", 60, hg.proc)
        time.sleep(1.0)
        auth = {"Authorization": f"Bearer {KEY}"}
        results = {
            "direct": measure("direct", f"{upstream}/chat/completions", {}, None, args),
            **{
                f"bare {client}": measure(
                    f"bare-{client}",
                    f"http://127.0.0.1:{port}/v1/chat/completions",
                    {},
                    proc.pid,
                    args,
                )
                for client, (proc, port) in bare.items()
            },
            "hybridgate": measure(
                "hybridgate", f"http://127.0.0.1:{hg_port}/v1/chat/completions", auth, hg.pid, args
            ),
        }
    finally:
        for p in procs:
            p.stop()
    base = results["direct"]
    print(f"\n{'metric':<26}" + "".join(f"{k:>20}" for k in results))
    for metric in (
        "p50_ms",
        "p99_ms",
        "stream_first_p50_ms",
        "stream_total_p50_ms",
        "rps",
        "cpu_s_per_1k",
    ):
        row = f"{metric:<26}"
        for name, r in results.items():
            v = r.get(metric)
            if v is None:
                row += f"{'-':>20}"
            elif metric.endswith("_ms") and name != "direct":
                row += f"{v:>9.3f} (+{v - base[metric]:.3f})"
            elif metric == "rps" and name != "direct":
                row += f"{v:>10.0f} ({v / base['rps']:.2f}x)"
            else:
                row += f"{v:>20.3f}"
        print(row)
    print(
        "\n(+x) = added over direct in the same run; (n x) = ratio to direct. "
        "Direct's RPS is the harness ceiling, not a proxy figure."
    )
    subprocess.run(["cat", "/proc/loadavg"], check=False)


if __name__ == "__main__":
    main()
