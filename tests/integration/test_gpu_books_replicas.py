"""Three replicas, one GPU pool, one set of books (issue 24; docs/architecture.md,
"GPU books across replicas").

Real processes on loopback: redis-server, the vLLM-like simulator (1 GPU; it knows its own
busy time and each request's GPU time) and three `hybridgate serve` sharing that Redis.
Concurrent mixed load is spread over the replicas; the books are read back from each
replica's request log (one line per UsageEvent), /costs/report and /metrics, and checked
against each other and against the simulator's truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.metering import drive as _drive
from tests.support.proxy import ProxyHandle, parse_metrics, run_proxy
from tests.support.redis import RedisHandle, run_redis
from tests.support.routing import wait_for
from tests.support.sim import SimHandle, run_simulator

KEY = "sk-replica-books-8f2d"
ADMIN = "admin-replica-books-51c0"
USD_PER_GPU_HOUR = 2.5
REPLICAS = 3

pytestmark = pytest.mark.serial  # compares timings with the simulator's own: runs alone


def _config(redis_url: str, sim: SimHandle, log: Path) -> dict[str, Any]:
    return {
        "auth": {"admin_key": ADMIN, "keys": [{"key": KEY, "tenant": "team-a"}]},
        "state": {"url": redis_url, "prefix": "books", "flush_interval_s": 0.1},
        "request_log": {"path": str(log)},
        "gpu_pools": {
            "h100": {"gpus": 1, "billing": "rental", "usd_per_gpu_hour": USD_PER_GPU_HOUR}
        },
        "backends": {
            "local": {
                "type": "openai",
                "base_url": sim.base_url,
                "pool": "h100",
                "max_concurrency": 64,
            }
        },
        "models": {"chat": {"targets": [{"backend": "local", "model": "sim-model"}]}},
    }


class Stack:
    def __init__(self, tmp_path: Path, redis: RedisHandle, sim: SimHandle) -> None:
        self.tmp_path = tmp_path
        self.redis = redis
        self.sim = sim
        self.proxies: list[ProxyHandle] = []
        self.logs: list[Path] = []
        self.t0 = time.time()

    def events(self, replicas: int = REPLICAS) -> list[dict[str, Any]]:
        """UsageEvents in the request logs of the first `replicas` replicas."""
        out = []
        for log in self.logs[:replicas]:
            if log.exists():
                out += [json.loads(line) for line in log.read_text().splitlines() if line]
        return out

    def books(self, proxy: ProxyHandle) -> dict[str, Any]:
        r = httpx.get(
            f"{proxy.url}/costs/report",
            params={"window": "1h"},
            headers={"Authorization": f"Bearer {ADMIN}"},
            timeout=10,
        )
        r.raise_for_status()
        report = r.json()
        books: dict[str, Any] = report["gpu_books"]["h100"]
        books["window_pool"] = report["pools"]["h100"]
        return books


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with run_redis(tmp_path) as redis, run_simulator(tmp_path, "vllm") as sim:
        s = Stack(tmp_path, redis, sim)
        with contextlib.ExitStack() as stack:
            for i in range(REPLICAS):
                log = tmp_path / f"requests-{i}.jsonl"
                s.logs.append(log)
                proxy = stack.enter_context(
                    run_proxy(tmp_path, _config(redis.url, sim, log), name=f"replica{i}")
                )
                s.proxies.append(proxy)
            for p in s.proxies:
                wait_for(lambda p=p: s.books(p)["replicas"] == REPLICAS, "every replica joined")
            yield s


def _jobs(n: int) -> list[dict[str, Any]]:
    return [
        {
            "model": "chat",
            "max_tokens": 6 + (i * 7) % 40,
            "_stream": i % 3 == 0,
            "messages": [{"role": "user", "content": "tok " * (5 + (i * 37) % 300)}],
        }
        for i in range(n)
    ]


def _load(proxies: list[ProxyHandle], jobs: list[dict[str, Any]], concurrency: int) -> list[Any]:
    """Each job to replica i % len(proxies), `concurrency` at a time; results or exceptions."""
    urls = [p.base_url for p in proxies]
    return asyncio.run(_drive(urls, jobs, concurrency, key=KEY, return_exceptions=True))


def _in_background(
    proxies: list[ProxyHandle], jobs: list[dict[str, Any]], concurrency: int
) -> tuple[threading.Thread, list[Any]]:
    """`_load` in a thread (the test acts on the stack meanwhile); its results list."""
    results: list[Any] = []
    loader = threading.Thread(
        target=lambda: results.extend(_load(proxies, jobs, concurrency)), daemon=True
    )
    loader.start()
    return loader, results


class Watch(threading.Thread):
    """Reads every live replica's /metrics and report while the load runs: utilization
    must never pass 100%, and the approximate flag is recorded as it is seen."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(daemon=True)
        self.stack = stack
        self.stop = threading.Event()
        self.max_util = 0.0
        self.max_busy_over_prov = 0.0
        self.seen_approximate = False
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            for p in self.stack.proxies:
                if not p.proc.alive():
                    continue
                try:
                    samples = parse_metrics(p.metrics_text())
                    b = self.stack.books(p)
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
                    continue
                for name, labels, v in samples:
                    if name == "hybridgate_gpu_utilization_ratio" and labels.get("pool") == "h100":
                        self.max_util = max(self.max_util, v)
                    if name == "hybridgate_gpu_books_approximate" and v == 1.0:
                        self.seen_approximate = True
                if b["approximate"]:
                    self.seen_approximate = True
                w = b["window_pool"]
                if w["provisioned_gpu_seconds"] > 0:
                    ratio = w["busy_gpu_seconds"] / w["provisioned_gpu_seconds"]
                    self.max_busy_over_prov = max(self.max_busy_over_prov, ratio)
            time.sleep(0.2)


def _settled(stack: Stack, alive: list[ProxyHandle], expect_events: int) -> dict[str, Any]:
    """Wait until every event is logged and the shared books have integrated past the
    load (nothing in flight, not approximate); returns one replica's books."""
    n = len(alive)
    wait_for(lambda: len(stack.events(n)) >= expect_events, "every UsageEvent logged", 60)

    def quiet() -> bool:
        books = [stack.books(p) for p in alive]
        return all(
            b["inflight"] == 0 and not b["approximate"] and b["replicas"] == len(alive)
            for b in books
        )

    wait_for(quiet, "the shared books settled", 30)
    return stack.books(alive[0])


def _check_books(
    stack: Stack, alive: list[ProxyHandle], books: dict[str, Any], wall: float
) -> dict[str, float]:
    events = stack.events()
    ours = math.fsum(e["gpu_seconds"] for e in events)
    busy = books["busy_gpu_seconds"]
    orphan = books["unattributed_gpu_seconds"]
    truth = stack.sim.stats()
    sim_busy = truth["busy_seconds"]  # 1 GPU: seconds = GPU-seconds
    sim_gpu = truth["gpu_seconds_total"]
    print(
        f"\nper-request {ours:.4f} + unattributed {orphan:.4f} vs pool busy {busy:.4f}; "
        f"simulator busy {sim_busy:.4f}, per-request {sim_gpu:.4f}; wall {wall:.2f}"
    )
    # One set of books: per-request GPU-seconds (plus those of a dead replica's requests
    # that no UsageEvent carries) add up to the pool's busy GPU-seconds.
    assert abs(ours + orphan - busy) <= 0.01 * busy
    assert busy <= wall * 1  # 1 GPU
    assert abs(busy - sim_busy) <= 0.05 * sim_busy
    assert abs(ours + orphan - sim_gpu) <= 0.05 * sim_gpu
    # The same pool figures on every replica (integrated from the one timeline).
    for p in alive:
        other = stack.books(p)
        assert other["busy_gpu_seconds"] == pytest.approx(busy, rel=1e-9)
        assert other["since"] == books["since"]
    # Prometheus: each replica exports its part; sum() across replicas is the pool's.
    parts_busy = parts_prov = 0.0
    cost = 0.0
    for p in alive:
        samples = parse_metrics(p.metrics_text())
        for name, labels, v in samples:
            if labels.get("pool") == "h100" and name == "hybridgate_gpu_busy_seconds_total":
                parts_busy += v
            if labels.get("pool") == "h100" and name == "hybridgate_gpu_provisioned_seconds_total":
                parts_prov += v
            if name == "hybridgate_cost_usd_total" and labels.get("backend") == "local":
                cost += v
    assert parts_busy <= busy + 1e-6
    assert parts_prov <= books["provisioned_gpu_seconds"] + 1e-6 + 5  # integrated later
    if not orphan:  # no replica died: nothing is missing from the parts
        assert parts_busy == pytest.approx(busy, rel=1e-6)
        assert cost == pytest.approx(busy * USD_PER_GPU_HOUR / 3600, rel=1e-6)
    return {"ours": ours, "busy": busy}


def test_three_replicas_keep_one_set_of_books(stack: Stack) -> None:
    watch = Watch(stack)
    watch.start()
    t0 = time.time()
    results = _load(stack.proxies, _jobs(180), 24)
    wall = time.time() - t0 + 1.0  # + the lead-in: the pool's books started before
    watch.stop.set()
    watch.join(10)
    assert [r for r in results if isinstance(r, BaseException)] == []
    books = _settled(stack, stack.proxies, 180)
    assert all(stack.logs[i].exists() for i in range(REPLICAS))  # every replica served
    assert len(stack.events()) == 180
    assert not any(e["gpu_approximate"] for e in stack.events())
    assert watch.max_util <= 1.0 and watch.max_busy_over_prov <= 1.0 + 1e-9
    _check_books(stack, stack.proxies, books, wall)


def test_a_replica_killed_mid_load_has_its_weight_released(stack: Stack) -> None:
    victim = stack.proxies[2]
    jobs = _jobs(180)
    t0 = time.time()
    loader, results = _in_background(stack.proxies, jobs, 24)
    wait_for(lambda: len(stack.events()) >= 45, "a quarter of the load served", 60)
    victim.proc.kill()  # SIGKILL, requests in flight
    loader.join(120)
    wall = time.time() - t0 + 1.0
    alive = stack.proxies[:2]
    failed = [i for i, r in enumerate(results) if isinstance(r, BaseException)]
    assert failed and {i % 3 for i in failed} == {2}  # the victim's clients saw errors only
    served = sum(1 for i in range(len(results)) if i % 3 != 2)  # by the survivors
    # The lease runs out: the dead replica's weight leaves the pool (else it would read
    # busy for good and dilute every later share).
    wait_for(lambda: stack.books(alive[0])["replicas"] == 2, "the victim released", 30)
    before = stack.books(alive[0])["busy_gpu_seconds"]
    books = _settled(stack, alive, served)
    assert books["inflight"] == 0
    assert books["unattributed_gpu_seconds"] > 0  # its requests in flight held GPU time
    _check_books(stack, alive, books, wall)
    # Idle now: busy time no longer grows (the released weight is really gone).
    now = stack.books(alive[0])
    wait_for(
        lambda: stack.books(alive[0])["integrated_until"] > now["integrated_until"] + 0.5,
        "the books integrate on",
    )
    assert stack.books(alive[0])["busy_gpu_seconds"] == pytest.approx(
        max(before, books["busy_gpu_seconds"]), rel=1e-9
    )


def test_redis_down_10s_under_load_books_approximate_then_reconciled(stack: Stack) -> None:
    watch = Watch(stack)
    jobs = _jobs(300)
    t0 = time.time()
    loader, results = _in_background(stack.proxies, jobs, 12)
    wait_for(lambda: len(stack.events()) >= 30, "load under way", 60)
    stack.redis.stop()
    watch.start()
    outage_end = time.monotonic() + 10.0
    wait_for(lambda: watch.seen_approximate, "books flagged approximate", 10)
    while time.monotonic() < outage_end:  # the outage lasts 10 s, whatever the load does
        time.sleep(0.1)
    stack.redis.start()
    loader.join(120)
    wall = time.time() - t0 + 1.0
    watch.stop.set()
    watch.join(10)
    assert len(results) == 300
    assert [r for r in results if isinstance(r, BaseException)] == []  # 0 client errors
    books = _settled(stack, stack.proxies, 300)
    periods = books["approximate_periods"]
    assert periods and all(p["reconciled"] and p["to"] is not None for p in periods)
    assert not any(e["gpu_approximate"] for e in stack.events())  # held, then exact
    assert watch.max_util <= 1.0
    _check_books(stack, stack.proxies, books, wall)


def test_workers_and_replicas_keep_one_set_of_books(tmp_path: Path) -> None:
    """A replica with `--workers 2` beside a single-process one: each worker (and the
    hub) takes part in the shared books; the hub exports its workers' parts."""
    with run_redis(tmp_path) as redis, run_simulator(tmp_path, "vllm") as sim:
        s = Stack(tmp_path, redis, sim)
        s.logs = [tmp_path / "requests-w.jsonl", tmp_path / "requests-1.jsonl"]
        with (
            run_proxy(
                tmp_path, _config(redis.url, sim, s.logs[0]), name="workers",
                args=["--workers", "2"],
            ) as multi,
            run_proxy(tmp_path, _config(redis.url, sim, s.logs[1]), name="single") as single,
        ):  # fmt: skip
            s.proxies = [multi, single]
            # 2 workers + the hub + the single process: 4 replicas in the books.
            wait_for(lambda: s.books(single)["replicas"] == 4, "every process joined", 30)
            t0 = time.time()
            jobs = [{k: v for k, v in j.items() if k != "_stream"} for j in _jobs(90)]
            urls = [p.base_url for p in s.proxies]
            assert all(asyncio.run(_drive(urls, jobs, 12, keepalive=False, key=KEY)))
            wall = time.time() - t0 + 1.0
            wait_for(lambda: len(s.events()) >= 90, "every UsageEvent logged", 60)

            def quiet() -> bool:
                books = [s.books(p) for p in s.proxies]
                return all(b["inflight"] == 0 and not b["approximate"] for b in books)

            wait_for(quiet, "the shared books settled", 30)
            books = s.books(single)
            ours = math.fsum(e["gpu_seconds"] for e in s.events())
            busy = books["busy_gpu_seconds"]
            print(f"\nworkers + replica: per-request {ours:.4f} vs busy {busy:.4f}")
            assert abs(ours - busy) <= 0.01 * busy
            assert busy <= wall
            assert s.books(multi)["busy_gpu_seconds"] == pytest.approx(busy, rel=1e-9)

            def parts_settled() -> bool:  # the workers' parts reach the hub within a second
                total = 0.0
                for p in s.proxies:
                    for name, _labels, v in parse_metrics(p.metrics_text()):
                        if name == "hybridgate_gpu_busy_seconds_total":
                            total += v
                return abs(total - busy) <= 1e-6 * busy

            wait_for(parts_settled, "sum of the exported parts = the pool's busy", 15)
