"""The demo's day of traffic with a batch job beside it: what the batch saved.

Starts what `hybridgate demo` starts (a simulated vLLM on a rented H100, a simulated
commercial API that also serves the Batch API, the proxy with the demo's config), drives
the demo's day of traffic, and submits a batch of `--lines` chat lines (official openai
SDK) at the start of the day. When the batch is done it prints the live report's `batch`
section: the busy GPU-seconds the batch filled, the idle cost it absorbed, where its
lines ran, and what the same lines would have cost at the API's batch and regular prices.
The README's "Batch jobs on idle GPUs" quotes its output.

    PYTHONPATH=. python bench/batch_demo.py --duration 60 --rps 10 --lines 500
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
import threading
import time
from importlib import resources
from pathlib import Path

import httpx
import openai

from proxy.demo.run import GPU_BACKENDS, SELF_HOSTED_MODEL, Processes, wait_ready
from proxy.demo.traffic import Plan, TrafficStats, drive
from proxy.ports import free_port


def lines(n: int) -> bytes:
    out = []
    for i in range(n):
        body = {
            "model": "chat",
            "max_tokens": 200,
            "messages": [
                {"role": "system", "content": "Summarise the ticket in two sentences."},
                {"role": "user", "content": f"Ticket {i}: the customer reports " + "x " * 150},
            ],
        }
        line = {"custom_id": f"t{i}", "method": "POST", "url": "/v1/chat/completions"}
        out.append(json.dumps({**line, "body": body}))
    return "\n".join(out).encode()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--rps", type=float, default=10.0)
    ap.add_argument("--lines", type=int, default=500)
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="hybridgate-batch-demo-"))
    procs = Processes(workdir)
    py = sys.executable
    try:
        vllm_port, api_port, proxy_port = free_port(), free_port(), free_port()
        vllm = ["--mode", "vllm", "--port", str(vllm_port), "--model", SELF_HOSTED_MODEL]
        api = ["--mode", "api", "--port", str(api_port), "--ttft-ms", "350", "--itl-ms", "6"]
        procs.spawn("vllm-sim", [py, "-m", "simulator", *vllm, "--seed", "1"])
        procs.spawn("api-sim", [py, "-m", "simulator", *api])
        wait_ready(f"http://127.0.0.1:{vllm_port}/health", procs)
        wait_ready(f"http://127.0.0.1:{api_port}/health", procs)
        admin, key = "admin-" + secrets.token_hex(8), "demo-" + secrets.token_hex(8)
        env = {
            "HYBRIDGATE_ADMIN_KEY": admin,
            "HYBRIDGATE_DEMO_KEY": key,
            "HYBRIDGATE_DEMO_VLLM_URL": f"http://127.0.0.1:{vllm_port}/v1",
            "HYBRIDGATE_DEMO_API_URL": f"http://127.0.0.1:{api_port}/v1",
            "HYBRIDGATE_DEMO_BATCH_DIR": str(workdir / "batch"),
        }
        config = workdir / "demo.yaml"
        config.write_bytes(resources.files("proxy.demo").joinpath("config.yaml").read_bytes())
        procs.spawn("proxy", [py, "-m", "proxy", "serve", "-c", str(config), "--port",
                              str(proxy_port)], env=env)  # fmt: skip
        url = f"http://127.0.0.1:{proxy_port}"
        wait_ready(f"{url}/health/live", procs)
        c = openai.OpenAI(base_url=f"{url}/v1", api_key=key)
        b = None
        if args.lines:  # --lines 0: the same day without a batch, the baseline
            f = c.files.create(file=("tickets.jsonl", lines(args.lines)), purpose="batch")
            b = c.batches.create(
                input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
        stats: list[TrafficStats] = []
        plan = Plan(duration_s=args.duration, mean_rps=args.rps)

        def traffic() -> None:
            stats.append(asyncio.run(drive(f"{url}/v1", key, plan, None, GPU_BACKENDS)))

        t = threading.Thread(target=traffic)
        t.start()
        t.join()
        while b is not None and b.status not in ("completed", "failed", "expired", "cancelled"):
            time.sleep(0.5)
            b = c.batches.retrieve(b.id)
        time.sleep(0.3)
        report = httpx.get(
            f"{url}/costs/report", params={"window": "all"},
            headers={"Authorization": f"Bearer {admin}"}, timeout=30,
        ).json()  # fmt: skip
        s = stats[0]
        print(json.dumps({
            "traffic": {"sent": s.sent, "ok": s.ok, "by_backend": dict(s.by_backend)},
            "batch": None if b is None else {
                "status": b.status,
                "counts": b.request_counts.model_dump() if b.request_counts else None,
            },
            "spend_usd": report.get("spend"),
            "books": report["batch"],
            "pools": report.get("pools"),
        }, indent=2, default=str))  # fmt: skip
        return 0
    finally:
        procs.stop_all()
        if os.environ.get("KEEP") is None:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
