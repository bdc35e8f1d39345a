"""`hybridgate serve --workers 2`: traffic on both workers, one set of exact books.

Real processes on loopback: the vLLM-like simulator upstream, the proxy's supervisor,
its hub and two workers. The books are checked against the request log (one line per
UsageEvent, written by the hub whichever worker served) and the simulator's own truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.exposition import samples_sum
from tests.support.metering import USD_PER_GPU_HOUR, drive, metering_stack
from tests.support.proxy import ProxyHandle, parse_metrics, read_log
from tests.support.routing import KEY, wait_for
from tests.support.servers import PYTHON
from tests.support.sim import SimHandle

N = 48


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def _workers(proxy: ProxyHandle) -> list[int]:
    """The supervisor's worker processes (spawn also starts a resource tracker: not one)."""
    pids = []
    for pid in _children(proxy.proc.pid):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:  # it just exited
            continue
        if b"resource_tracker" not in cmd and _alive(pid):
            pids.append(pid)
    return sorted(pids)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"  # not a zombie
    except OSError:
        return False


@contextlib.contextmanager
def workers_stack(tmp_path: Path) -> Iterator[tuple[ProxyHandle, SimHandle, Path]]:
    """The metering stack with `--workers 2`, once both workers accept connections
    (slow to start: each spawned worker imports the whole app)."""
    with metering_stack(tmp_path, proxy_args=["--workers", "2"]) as (proxy, vllm, _api, log):
        wait_for(lambda: len(_workers(proxy)) == 2, "two workers")
        seen: set[int] = set()

        def both_accepting() -> bool:  # a new connection per probe: any worker may take it
            with httpx.Client(timeout=5) as c:
                seen.add(c.get(f"{proxy.url}/health/live").json()["worker"])
            return seen >= set(_workers(proxy))

        wait_for(both_accepting, "both workers accepting connections")
        yield proxy, vllm, log


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[ProxyHandle, SimHandle, Path]]:
    """A stack of its own: books that start at zero."""
    with workers_stack(tmp_path) as s:
        yield s


@pytest.fixture(scope="module")
def shared_stack(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ProxyHandle, SimHandle, Path]]:
    """One stack for the tests that only look at what changes during them; the last of
    them (reload, kill, then SIGTERM) stops it."""
    with workers_stack(tmp_path_factory.mktemp("workers")) as s:
        yield s


@pytest.mark.serial  # compares timings with the upstream's own: runs alone
def test_books_exact_across_two_workers(stack: Any) -> None:
    proxy, vllm, log = stack
    t_start = time.monotonic()
    jobs = [
        {
            "model": "chat",
            "max_tokens": 8 + i,
            "_stream": i % 3 == 0,
            "messages": [{"role": "user", "content": "tok " * (5 + (i * 37) % 300)}],
        }
        for i in range(N)
    ]
    asyncio.run(drive(proxy.base_url, jobs, 16, keepalive=False))
    events = read_log(log, N)
    assert len(events) == N
    # Both workers served: the request id carries the serving process's pid.
    pids = {int(re.match(r"hg-([0-9a-f]+)-", e["request_id"]).group(1), 16) for e in events}
    assert pids == set(_workers(proxy))
    wait_for(lambda: proxy.metric("hybridgate_requests_total") == N, "every event in /metrics")
    truth = [r for r in vllm.stats()["requests"] if r.get("gpu_seconds") is not None]
    assert len(truth) == N
    ours = math.fsum(e["gpu_seconds"] for e in events)
    engine = math.fsum(t["gpu_seconds"] for t in truth)
    print(f"\nGPU-seconds over 2 workers: proxy {ours:.4f} vs engine {engine:.4f}")
    assert abs(ours - engine) / engine < 0.02
    for _ in range(4):  # any worker may relay the scrape: every answer is the hub's books
        m = functools.partial(samples_sum, parse_metrics(proxy.metrics_text()))
        uptime = time.monotonic() - t_start
        assert m("hybridgate_requests_total", outcome="success") == N
        assert m("hybridgate_tokens_total", backend="local", kind="prompt") == sum(
            t["prompt_tokens"] for t in truth
        )
        assert m("hybridgate_tokens_total", backend="local", kind="completion") == (
            sum(t["completion_tokens"] for t in truth)
        )
        busy = m("hybridgate_gpu_busy_seconds_total", pool="h100")
        assert math.isclose(busy, ours, rel_tol=1e-9)  # nothing in flight: busy is settled
        cost = m("hybridgate_cost_usd_total", backend="local")
        assert math.isclose(cost, busy * USD_PER_GPU_HOUR / 3600, rel_tol=1e-9)
        assert math.isclose(cost, math.fsum(e["cost_usd"] for e in events), rel_tol=1e-9)
        prov = m("hybridgate_gpu_provisioned_seconds_total", pool="h100")
        # Once, not once per worker: at most the supervisor's whole life, 1 GPU.
        assert busy < prov < uptime + 60
        assert m("hybridgate_inflight_requests", backend="local") == 0


def test_a_worker_killed_mid_request_leaves_no_weight_in_the_gpu_books(
    shared_stack: Any,
) -> None:
    proxy, vllm, _log = shared_stack
    vllm.set_faults(slow_first_token_s=60)
    client = httpx.Client(timeout=90)  # one connection: the health probe names its worker
    worker = client.get(f"{proxy.url}/health/live").json()["worker"]
    hung = threading.Thread(
        target=_post_quietly,
        args=(client, f"{proxy.base_url}/chat/completions"),
        daemon=True,
    )
    hung.start()

    def busy() -> float:
        return proxy.metric("hybridgate_gpu_busy_seconds_total")

    first = busy()
    wait_for(lambda: busy() > first + 0.2, "the hung request keeps the pool busy")
    vllm.clear_faults()  # for the requests after it
    os.kill(worker, signal.SIGKILL)
    wait_for(lambda: worker not in _workers(proxy), "the worker gone")
    wait_for(lambda: len(_workers(proxy)) == 2, "a replacement worker")
    hung.join(timeout=30)
    client.close()
    assert proxy.metric("hybridgate_inflight_requests") == 0

    def provisioned() -> float:
        return proxy.metric("hybridgate_gpu_provisioned_seconds_total")

    before, prov0 = busy(), provisioned()
    # Idle now: before the dead worker's share was released, the pool stayed "busy" for good,
    # growing with the clock. Wait (polling, no fixed sleep) until the hub's clock-driven
    # counter has moved on by half a second, then the busy counter must not have moved.
    wait_for(lambda: provisioned() >= prov0 + 0.5, "the hub's clock to move on")
    assert busy() == pytest.approx(before, abs=1e-6)
    wait_for(lambda: _serves(proxy), "serving after the restart", timeout=30)


def test_reload_reaches_every_worker_then_kill_and_sigterm(shared_stack: Any) -> None:
    proxy, _vllm, log = shared_stack
    cfg = yaml.safe_load(proxy.config_path.read_text())
    cfg["models"]["chat2"] = cfg["models"]["chat"]
    proxy.config_path.write_text(yaml.safe_dump(cfg))
    proxy.proc.signal(signal.SIGHUP)
    # Each worker reloads on its own (a few hundred ms: prices are re-read); then all know it.
    wait_for(lambda: all([_serves(proxy, "chat2") for _ in range(8)]), "every worker reloaded")
    answers = [_serves(proxy, "chat2") for _ in range(16)]
    assert all(answers)  # whichever worker took it knew the alias: every worker reloaded

    first = _workers(proxy)
    os.kill(first[0], signal.SIGKILL)
    wait_for(lambda: len(w := _workers(proxy)) == 2 and first[0] not in w, "a replacement worker")
    wait_for(lambda: _serves(proxy), "serving after the restart", timeout=30)
    with httpx.Client(timeout=30) as client:
        for _ in range(12):
            r = client.post(
                f"{proxy.base_url}/chat/completions",
                headers={"Authorization": f"Bearer {KEY}"},
                json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert r.status_code == 200, r.text
    wait_for(lambda: proxy.metric("hybridgate_requests_total") >= 12 + 17, "counted")
    family = [proxy.proc.pid, *_workers(proxy)]
    proxy.proc.signal(signal.SIGTERM)  # the supervisor only: it must stop its workers
    proxy.proc.proc.wait(timeout=60)
    assert proxy.proc.proc.returncode == 0
    assert not [p for p in family if _alive(p)]
    lines = len(log.read_text().splitlines())
    assert lines >= 12 + 17  # the hub drained the request log before it exited


def _post_quietly(client: httpx.Client, url: str) -> None:
    with contextlib.suppress(httpx.HTTPError):
        client.post(
            url,
            headers={"Authorization": f"Bearer {KEY}"},
            json={"model": "chat", "messages": [{"role": "user", "content": "hold"}]},
        )


def _serves(proxy: ProxyHandle, model: str = "chat") -> bool:
    try:
        return (
            proxy.chat(model=model, messages=[{"role": "user", "content": "x"}]).status_code == 200
        )
    except httpx.HTTPError:
        return False


def test_memory_state_with_budgets_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "budget.yaml"
    path.write_text(
        "tenants: {team-a: {monthly_api_budget_usd: 5}}\n"
        "auth: {keys: [{key: sk-a-123456789, tenant: team-a}]}\n"
        "backends: {api: {type: openai, base_url: 'http://127.0.0.1:9/v1'}}\n"
        "models: {chat: {targets: [{backend: api, model: gpt-4o-mini}]}}\n"
    )
    r = subprocess.run(
        [PYTHON, "-m", "proxy", "serve", "-c", str(path), "--workers", "2", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert "redis://" in r.stderr and "--workers 2" in r.stderr
