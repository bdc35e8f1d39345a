"""Micro-benchmark: what the cluster GPU books add to a self-hosted request's path.

Both variants run in this process, in interleaved rounds (same machine weather):

- `local`: the Meter of one replica (PoolAccount): begin → first token → end → finish
  (price and deliver to a no-op sink).
- `cluster`: the Meter with ClusterBooks attached (several replicas sharing Redis): the
  same calls; each weight change is stamped and buffered, and finish holds the event
  (its exact GPU-seconds come from the next sync, off the request path).
- `cluster_off_path`: what the background sync then does per request in this process
  (marks folded in, share settled, event priced and delivered), Redis round trip not
  included (one per pool per flush interval, whatever the traffic).

    python bench/bench_gpu_books.py [--requests 20000] [--rounds 9] [--per-sync 250]

Reports the median ns per request of each over the rounds, and the difference.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from costing.prices import PriceTable
from proxy.config import Config
from proxy.metering.cluster_gpu import ClusterBooks
from proxy.metering.events import Attempt, UsageEvent
from proxy.metering.meter import Meter

CONFIG: dict[str, Any] = {
    "gpu_pools": {"h100": {"gpus": 1, "billing": "rental", "usd_per_gpu_hour": 2.5}},
    "backends": {"local": {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "pool": "h100"}},
    "models": {"chat": {"targets": [{"backend": "local", "model": "m"}]}},
}


class _NoRedis:
    """ClusterBooks wants a client to register its script on; nothing is sent here."""

    def register_script(self, _src: str) -> object:
        return object()


def _meter(cluster: bool) -> Meter:
    meter = Meter(Config.model_validate(CONFIG), PriceTable({}))
    meter.add_fast_sink(lambda ev: None)
    if cluster:
        meter.attach_cluster(ClusterBooks(_NoRedis(), "b", 0.25, 1.0, 5.0))
    return meter


def _requests(meter: Meter, n: int) -> float:
    t0 = time.perf_counter_ns()
    for i in range(n):
        ev = UsageEvent(request_id=f"r{i}", started_at=0.0, endpoint="chat", alias="chat")
        a = Attempt("local", "m")
        ev.attempts.append(a)
        ev.backend, ev.model = "local", "m"
        share = meter.begin("local", a)
        assert share is not None
        share.first_token()
        a.gpu_seconds = share.end()
        ev.gpu_seconds += a.gpu_seconds
        meter.finish(ev)
    return (time.perf_counter_ns() - t0) / n


def _off_path(meter: Meter) -> tuple[float, int]:
    """Feed the held shares their marks as a sync's answer would; ns per request."""
    pool = meter.pools["h100"]
    books = meter.cluster
    assert books is not None
    _seq, _wm, events = pool.take()  # type: ignore[attr-defined]
    acc, flat = 0.0, []
    for _t, eid, _dw, _dn in events:
        acc += 1e-3
        flat += [str(eid).encode(), repr(acc).encode()]
    reply = [b"ok", flat, "0", "0", "0", "0", "0", "0", "0", "0", "1"]
    n = len(books.held)
    t0 = time.perf_counter_ns()
    pool.answered(reply, [])  # type: ignore[attr-defined]
    pool.answered([b"ok", [], *reply[2:]], [])  # type: ignore[attr-defined]  # confirmed
    books.expire()
    dt = time.perf_counter_ns() - t0
    pool.acked.clear()  # type: ignore[attr-defined]
    return dt / max(1, n), n


def _empty_call(n: int) -> float:
    """ns per empty Python call: the machine's weather, to scale the figures by."""

    def f() -> None:
        return None

    t0 = time.perf_counter_ns()
    for _ in range(n):
        f()
    return (time.perf_counter_ns() - t0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument(
        "--per-sync", type=int, default=250,
        help="requests finished between two syncs (1,000 req/s at the default 0.25 s)",
    )  # fmt: skip
    args = ap.parse_args()
    local, cluster = _meter(False), _meter(True)
    _requests(local, 2000)  # warm-up
    _requests(cluster, 2000)
    _off_path(cluster)
    res: dict[str, list[float]] = {"local": [], "cluster": [], "cluster_off_path": []}
    chunks = max(1, args.requests // args.per_sync)
    for _ in range(args.rounds):
        lo = cl = off = 0.0
        for _ in range(chunks):  # a sync every `per_sync` requests, as in production
            lo += _requests(local, args.per_sync)
            cl += _requests(cluster, args.per_sync)
            ns, n = _off_path(cluster)
            assert n == args.per_sync, n
            off += ns
        res["local"].append(lo / chunks)
        res["cluster"].append(cl / chunks)
        res["cluster_off_path"].append(off / chunks)
    calls = [_empty_call(200_000) for _ in range(args.rounds)]
    med = {k: statistics.median(v) for k, v in res.items()}
    print(f"empty Python call  median {statistics.median(calls):8.0f} ns (machine weather)")
    for k, v in med.items():
        print(
            f"{k:18s} median {v:8.0f} ns/request  (rounds: {', '.join(f'{x:.0f}' for x in res[k])})"
        )
    print(f"added on the request path: {med['cluster'] - med['local']:+.0f} ns/request "
          f"({med['cluster'] / med['local']:.2f}x of the local meter's calls)")  # fmt: skip


if __name__ == "__main__":
    main()
