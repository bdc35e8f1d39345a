"""GPU-second truth on a real engine: the proxy's meter against vLLM's own clocks.

Mixed concurrent load (chat and completions, streamed and not, short and long prompts,
4 to 32 output tokens) goes through the proxy to the real vLLM (scripts/vllm_engine.py).
Meanwhile vLLM's /metrics is sampled every ~20 ms. Then:

- **sum**: the pool's busy GPU-seconds (`hybridgate_gpu_busy_seconds_total`, the proxy's
  meter) against the time vLLM had requests running (`vllm:num_requests_running` > 0 in the
  samples), and against the union of the requests' engine intervals;
- **per request**: each request's GPU-seconds from the proxy's request log against the same
  attribution (the proxy's own `PoolAccount`, equal shares, prefill weight as configured)
  run on vLLM's timeline of that request: engine end = the proxy's end, engine start = end −
  `request_inference_time_seconds`, first token at start + `request_prefill_time_seconds`.
  vLLM gives those times only as histograms; a sample window in which exactly one request
  finished (count delta 1) gives that request's times exactly, and it is matched to the one
  request the proxy saw end in that window. Requests that finished together are left out of
  the per-request figures (they still count in the timeline, with their proxy interval).

    python bench/vllm_gpu_seconds.py                       # starts its own vLLM (~1 min)
    python bench/vllm_gpu_seconds.py --vllm-url http://127.0.0.1:PORT   # a running one
    python bench/vllm_gpu_seconds.py --requests 32 --concurrency 4 --json

Needs `python scripts/vllm_engine.py install`. Load is kept small (the machine is shared).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proxy.metering.gpu import GpuShare, PoolAccount
from tests.support.exposition import parse_samples
from tests.support.proxy import ProxyHandle, read_log, run_proxy
from tests.support.vllm import engine, run_vllm_server

HISTOGRAMS = ("inference", "prefill", "decode", "queue", "e2e")


@dataclass
class Sample:
    t: float  # unix seconds
    running: float
    waiting: float
    sums: dict[str, float]  # request_<kind>_time_seconds _sum
    count: float  # request_inference_time_seconds _count


def read_sample(client: httpx.Client, url: str) -> Sample:
    text = client.get(f"{url}/metrics").text
    t = time.time()
    running = waiting = count = 0.0
    sums = dict.fromkeys(HISTOGRAMS, 0.0)
    for name, _, value in parse_samples(text):
        if name == "vllm:num_requests_running":
            running += value
        elif name == "vllm:num_requests_waiting":
            waiting += value
        elif name == "vllm:request_inference_time_seconds_count":
            count += value
        elif name == "vllm:e2e_request_latency_seconds_sum":
            sums["e2e"] += value
        elif name.startswith("vllm:request_") and name.endswith("_time_seconds_sum"):
            kind = name[len("vllm:request_") : -len("_time_seconds_sum")]
            if kind in sums:
                sums[kind] += value
    return Sample(t, running, waiting, sums, count)


def mixed_specs(n: int, seed: int) -> list[dict[str, Any]]:
    """n mixed requests: chat and completions, streamed or not, short or long prompts."""
    rng = random.Random(seed)
    long_text = " ".join(f"item{i}" for i in range(300))
    specs = []
    for i in range(n):
        specs.append(
            {
                "id": f"bench-{seed}-{i}",
                "kind": rng.choice(["chat", "chat", "completions"]),
                "stream": rng.random() < 0.5,
                "prompt": long_text if rng.random() < 0.3 else f"Tell me about the number {i}.",
                "max_tokens": rng.choice([4, 8, 16, 32]),
            }
        )
    return specs


def send(base_url: str, model: str, spec: dict[str, Any]) -> dict[str, Any]:
    """One request of `spec`; its status, the answer's x-request-id and when it ended."""
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": spec["max_tokens"],
        "stream": spec["stream"],
        "ignore_eos": True,
    }
    if spec["kind"] == "chat":
        body["messages"] = [{"role": "user", "content": spec["prompt"]}]
        path = "/chat/completions"
    else:
        body["prompt"] = spec["prompt"]
        path = "/completions"
    with httpx.Client(timeout=300) as c:
        if spec["stream"]:
            with c.stream("POST", base_url + path, json=body) as r:
                for _ in r.iter_bytes():
                    pass
        else:
            r = c.post(base_url + path, json=body)
    rid = r.headers.get("x-request-id")
    return {**spec, "status": r.status_code, "rid": rid, "client_end": time.time()}


def load(proxy: ProxyHandle, specs: list[dict[str, Any]], concurrency: int) -> list[dict]:
    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(lambda spec: send(proxy.base_url, "local", spec), specs))


def solo(url: str, model: str, specs: list[dict[str, Any]]) -> dict[str, float]:
    """Each request alone on vLLM: its inference time (exact: one request per delta), the
    work it needs when it has the engine to itself."""
    out: dict[str, float] = {}
    with httpx.Client(timeout=5) as c:
        for spec in specs:
            before = read_sample(c, url)
            send(url + "/v1", model, spec)
            deadline = time.monotonic() + 30
            while True:
                after = read_sample(c, url)
                if after.count > before.count or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            out[spec["id"]] = after.sums["inference"] - before.sums["inference"]
    return out


def proxy_attribution(events: list[dict[str, Any]], weight: Any) -> dict[str, float]:
    """The proxy's attribution replayed on its own timeline (request log: start, first
    token, end) with another prefill weight; `weight(event)` gives each request's."""
    now = [0.0]
    marks: list[tuple[float, int, int]] = []
    for i, e in enumerate(events):
        start = e["started_at"]
        marks += [(start, 0, i), (start + (e["ttft_s"] or 0.0), 1, i)]
        marks.append((start + e["duration_s"], 2, i))
    marks.sort()
    now[0] = marks[0][0]
    pool = PoolAccount(1, 1.0, clock=lambda: now[0])
    shares: dict[int, GpuShare] = {}
    out: dict[str, float] = {}
    for t, what, i in marks:
        now[0] = t
        if what == 0:
            pool.prefill_weight = weight(events[i])
            shares[i] = pool.start()
        elif what == 1:
            shares[i].first_token()
        else:
            out[events[i]["request_id"]] = shares[i].end()
    return out


def engine_attribution(
    timeline: list[tuple[str, float, float, float]], prefill_weight: float
) -> dict[str, float]:
    """The proxy's own attribution run on an engine timeline [(id, start, first, end)]."""
    now = [0.0]
    events: list[tuple[float, int, str]] = []
    for rid, start, first, end in timeline:
        events += [(start, 0, rid), (first, 1, rid), (end, 2, rid)]
    events.sort()
    now[0] = events[0][0] if events else 0.0
    pool = PoolAccount(1, prefill_weight, clock=lambda: now[0])
    shares: dict[str, GpuShare] = {}
    out: dict[str, float] = {}
    for t, what, rid in events:
        now[0] = t
        if what == 0:
            shares[rid] = pool.start()
        elif what == 1:
            shares[rid].first_token()
        else:
            out[rid] = shares[rid].end()
    return out


def union_length(intervals: list[tuple[float, float]]) -> float:
    total, cur_s, cur_e = 0.0, None, None
    for s, e in sorted(intervals):
        if cur_e is None or s > cur_e:
            if cur_e is not None and cur_s is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None and cur_s is not None:
        total += cur_e - cur_s
    return total


def analyse(
    samples: list[Sample],
    events: list[dict[str, Any]],
    busy: float,
    prefill_weight: float,
) -> dict[str, Any]:
    ends = {e["request_id"]: e["started_at"] + e["duration_s"] for e in events}
    starts = {e["request_id"]: e["started_at"] for e in events}
    # vLLM's busy time from its gauge: each sample interval counted by its later sample.
    engine_busy = (
        math.fsum(
            b.t - a.t for a, b in itertools.pairwise(samples) if b.running > 0 or a.running > 0
        )
        if samples
        else 0.0
    )
    engine_busy_strict = math.fsum(
        b.t - a.t for a, b in itertools.pairwise(samples) if b.running > 0 and a.running > 0
    )
    # Per request: windows where exactly one request finished.
    engine_times: dict[str, dict[str, float]] = {}
    taken: set[str] = set()
    for a, b in itertools.pairwise(samples):
        if round(b.count - a.count) != 1:
            continue
        cands = [r for r, end in ends.items() if a.t - 0.05 < end <= b.t + 0.25 and r not in taken]
        if len(cands) != 1:
            continue
        rid = cands[0]
        taken.add(rid)
        engine_times[rid] = {k: b.sums[k] - a.sums[k] for k in HISTOGRAMS}
    timeline = []
    for rid, end in ends.items():
        if rid in engine_times:
            et = engine_times[rid]
            start = end - et["inference"]
            timeline.append((rid, start, start + et["prefill"], end))
        else:  # finished together with another: its proxy interval stands in
            first = starts[rid] + (next(e for e in events if e["request_id"] == rid)["ttft_s"] or 0)
            timeline.append((rid, starts[rid], first, end))
    truth = engine_attribution(timeline, prefill_weight)
    errors = []
    rows = []
    for e in events:
        rid = e["request_id"]
        if rid in engine_times and truth.get(rid):
            errors.append(abs(e["gpu_seconds"] - truth[rid]) / truth[rid])
            et = engine_times[rid]
            rows.append(
                {
                    "id": rid,
                    "prompt": e["prompt_tokens"],
                    "completion": e["completion_tokens"],
                    "stream": e["stream"],
                    "proxy_gpu_s": round(e["gpu_seconds"], 3),
                    "engine_gpu_s": round(truth[rid], 3),
                    "error": round(errors[-1], 3),
                    "proxy_duration_s": round(e["duration_s"], 3),
                    "proxy_ttft_s": round(e["ttft_s"] or 0, 3),
                    "vllm_e2e_s": round(et["e2e"], 3),
                    "vllm_prefill_s": round(et["prefill"], 3),
                    "vllm_decode_s": round(et["decode"], 3),
                }
            )
    attributed = math.fsum(e["gpu_seconds"] for e in events)
    inference_sum = math.fsum(t["inference"] for t in engine_times.values())
    engine_union = union_length([(s, e) for _, s, _, e in timeline])
    total_inference = samples[-1].sums["inference"] - samples[0].sums["inference"]
    queue_sum = samples[-1].sums["queue"] - samples[0].sums["queue"]
    e2e_sum = samples[-1].sums["e2e"] - samples[0].sums["e2e"]
    proxy_durations = math.fsum(e["duration_s"] for e in events)
    return {
        "requests": len(events),
        "matched_per_request": len(engine_times),
        "proxy_busy_gpu_s": round(busy, 3),
        "proxy_attributed_gpu_s": round(attributed, 3),
        "vllm_running_gt0_s": round(engine_busy, 3),
        "vllm_running_gt0_both_samples_s": round(engine_busy_strict, 3),
        "vllm_request_union_s": round(engine_union, 3),
        "sum_error_vs_running_gauge": round((busy - engine_busy) / engine_busy, 4)
        if engine_busy
        else None,
        "sum_error_vs_request_union": round((busy - engine_union) / engine_union, 4)
        if engine_union
        else None,
        "vllm_inference_time_sum_s": round(total_inference, 3),
        "vllm_queue_time_sum_s": round(queue_sum, 3),
        "vllm_e2e_latency_sum_s": round(e2e_sum, 3),
        "proxy_duration_sum_s": round(proxy_durations, 3),
        "matched_inference_sum_s": round(inference_sum, 3),
        "per_request_error_mean": round(statistics.fmean(errors), 4) if errors else None,
        "per_request_error_median": round(statistics.median(errors), 4) if errors else None,
        "per_request_error_max": round(max(errors), 4) if errors else None,
        "prefill_weight": prefill_weight,
        "per_request": rows,
    }


def work_truth(
    events: list[dict[str, Any]],
    results: list[dict[str, Any]],
    alone: dict[str, float],
    busy: float,
) -> dict[str, Any]:
    """Per request against the work it needs: busy GPU-seconds split in proportion to each
    request's inference time alone (the cost of its tokens, whoever it shared steps with);
    and the proxy's attribution replayed with other prefill weights against the same."""
    by_id = {}
    for e in events:
        by_id[e["request_id"]] = e
        if e.get("upstream_request_id"):
            by_id[e["upstream_request_id"]] = e
    pairs = [(by_id[r["rid"]], alone[r["id"]]) for r in results if r["rid"] in by_id]
    total_alone = math.fsum(a for _, a in pairs)
    truth = {e["request_id"]: busy * a / total_alone for e, a in pairs}
    evs = [e for e, _ in pairs]

    def errors(got: dict[str, float]) -> dict[str, float]:
        errs = [abs(got[r] - t) / t for r, t in truth.items() if t > 0]
        return {
            "mean": round(statistics.fmean(errs), 4),
            "median": round(statistics.median(errs), 4),
            "max": round(max(errs), 4),
        }

    out: dict[str, Any] = {
        "work_truth_requests": len(pairs),
        "solo_inference_sum_s": round(total_alone, 3),
        "vs_work_proxy_as_run": errors({e["request_id"]: e["gpu_seconds"] for e in evs}),
    }
    for w in (1.0, 2.0, 4.0, 8.0):
        out[f"vs_work_prefill_weight_{w:g}"] = errors(proxy_attribution(evs, lambda e, w=w: w))
    return out


def proxy_config(vllm_base_url: str, model: str, log: Path, prefill_weight: float) -> dict:
    return {
        "request_log": {"path": str(log)},
        "engine_metrics": {"interval_s": 0.5},
        "gpu_pools": {
            "cpu": {
                "gpus": 1,
                "billing": "rental",
                "usd_per_gpu_hour": 1.0,
                "prefill_weight": prefill_weight,
            }
        },
        "backends": {
            "vllm": {"type": "openai", "base_url": vllm_base_url, "pool": "cpu", "engine": "vllm"}
        },
        "models": {"local": {"targets": [{"backend": "vllm", "model": model}]}},
    }


@contextlib.contextmanager
def vllm_url(given: str | None, tmp: Path) -> Iterator[str]:
    if given:
        yield given.rstrip("/")
        return
    with run_vllm_server(tmp) as server:
        yield server.url


def run(args: argparse.Namespace) -> dict[str, Any]:
    model = engine().MODEL_NAME
    with (
        tempfile.TemporaryDirectory(prefix="vllm-gpu-") as d,
        vllm_url(args.vllm_url, Path(d)) as url,
    ):
        tmp = Path(d)
        log = tmp / "requests.jsonl"
        cfg = proxy_config(url + "/v1", model, log, args.prefill_weight)
        with run_proxy(tmp, cfg) as proxy:
            # Warm up (first requests compile kernels, fill caches) outside the measurement.
            load(proxy, mixed_specs(2, seed=0), 2)
            n0 = len(read_log(log, 2))
            busy0 = proxy.metric("hybridgate_gpu_busy_seconds_total", pool="cpu")
            samples: list[Sample] = []
            stop = threading.Event()

            def sampler() -> None:
                with httpx.Client(timeout=5) as c:
                    while not stop.is_set():
                        samples.append(read_sample(c, url))
                        time.sleep(args.sample_s)

            th = threading.Thread(target=sampler, daemon=True)
            with httpx.Client(timeout=5) as c:
                samples.append(read_sample(c, url))
            th.start()
            specs = mixed_specs(args.requests, args.seed)
            results = load(proxy, specs, args.concurrency)
            # Until vLLM says it is idle and two more samples are in.
            deadline = time.monotonic() + 30
            while (not samples or samples[-1].running > 0) and time.monotonic() < deadline:
                time.sleep(args.sample_s)
            n = len(samples)
            while len(samples) < n + 2:
                time.sleep(args.sample_s)
            stop.set()
            th.join()
            busy = proxy.metric("hybridgate_gpu_busy_seconds_total", pool="cpu") - busy0
            events = read_log(log, n0 + args.requests)[n0:]
            bad = [r for r in results if r["status"] != 200]
            if bad or len(events) != args.requests:
                raise SystemExit(f"load failed: {bad[:3]}, {len(events)} events")
            out = analyse(samples, events, busy, args.prefill_weight)
            if args.solo:
                out |= work_truth(events, results, solo(url, model, specs), busy)
            out["concurrency"] = args.concurrency
            out["samples"] = len(samples)
            out["sample_interval_s"] = round(
                (samples[-1].t - samples[0].t) / max(1, len(samples) - 1), 4
            )
            return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vllm-url", help="a running vLLM (http://127.0.0.1:PORT); default: start one")
    ap.add_argument("--requests", type=int, default=24)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--prefill-weight", type=float, default=1.0)
    ap.add_argument("--sample-s", type=float, default=0.02)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--details", action="store_true", help="one line per matched request")
    ap.add_argument(
        "--solo", action="store_true", help="then each request alone: per-request work truth"
    )
    args = ap.parse_args()
    out = run(args)
    if args.json:
        print(json.dumps(out, indent=2))
        return
    rows = out.pop("per_request")
    width = max(map(len, out))
    for k, v in out.items():
        print(f"{k:<{width}}  {v}")
    if args.details and rows:
        print("  ".join(rows[0]))
        for row in rows:
            print("  ".join(str(v) for v in row.values()))


if __name__ == "__main__":
    main()
