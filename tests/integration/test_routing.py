"""Routing policies against real simulators: spillover, only-self-hosted, health, context.

The simulators' own books (their request counts and per-request records) are the
witnesses: the proxy's word about where it sent traffic is checked against what each
upstream actually received.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.proxy import ProxyHandle
from tests.support.routing import KEY, MSGS, Answer, ask, chat_count, hybrid_stack, wait_for
from tests.support.sim import SimHandle


def ready(proxy: ProxyHandle) -> dict[str, Any]:
    return proxy.ready().json()


async def burst(proxy: ProxyHandle, n: int, max_tokens: int) -> list[str]:
    """n requests at once; the backend that served each."""
    body = {"model": "chat", "messages": MSGS, "max_tokens": max_tokens}
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=proxy.base_url, timeout=30) as client:
        rs = await asyncio.gather(
            *(client.post("/chat/completions", json=body, headers=headers) for _ in range(n))
        )
    assert all(r.status_code == 200 for r in rs)
    return [r.headers["x-hybridgate-backend"] for r in rs]


async def steady(proxy: ProxyHandle, workers: int, each: int) -> list[str]:
    """`workers` clients, each sending `each` requests one after the other."""
    headers = {"Authorization": f"Bearer {KEY}"}
    body = {"model": "chat", "messages": MSGS, "max_tokens": 8}
    async with httpx.AsyncClient(base_url=proxy.base_url, timeout=30) as client:

        async def worker() -> list[str]:
            out = []
            for _ in range(each):
                r = await client.post("/chat/completions", json=body, headers=headers)
                assert r.status_code == 200
                out.append(r.headers["x-hybridgate-backend"])
            return out

        results = await asyncio.gather(*(worker() for _ in range(workers)))
    return [b for r in results for b in r]


def max_overlap(records: list[dict[str, Any]]) -> int:
    """Most requests the simulator had in flight at once, from its own records."""
    events = []
    for r in records:
        events.append((r["arrived"], 1))
        events.append((r["finished"], -1))
    events.sort(key=lambda e: (e[0], e[1]))  # an end before a start at the same instant
    now = peak = 0
    for _, delta in events:
        now += delta
        peak = max(peak, now)
    return peak


def test_spillover_caps_self_hosted_in_flight_and_keeps_light_load_at_home(
    tmp_path: Path,
) -> None:
    with hybrid_stack(
        tmp_path,
        local_args=["--speed", "2"],
        chat={"strategy": "spillover", "spillover": {"max_inflight": 4}},
    ) as (proxy, local, api):
        served = asyncio.run(burst(proxy, 16, max_tokens=24))
        records = [r for r in local.stats()["requests"] if r["endpoint"].endswith("/completions")]
        assert len(records) == served.count("local") == chat_count(local)
        assert chat_count(api) == served.count("api")
        assert served.count("local") + served.count("api") == 16
        # At most 4 at once on the GPU, by the simulator's own clock; and it was full.
        assert max_overlap(records) == 4
        assert served.count("api") >= 12 - (served.count("local") - 4)
        assert proxy.metric("hybridgate_failovers_total") == 0  # spilled, not failed

        # Below the threshold nothing goes to the API.
        api_before, local_before = chat_count(api), chat_count(local)
        light = asyncio.run(steady(proxy, workers=3, each=5))
        assert light == ["local"] * 15
        assert chat_count(api) == api_before
        assert chat_count(local) == local_before + 15


def test_spillover_on_the_engines_own_queue(tmp_path: Path) -> None:
    """The GPU is busy with work the proxy did not send: the engine's queue decides."""
    spill = {"max_inflight": 100, "max_waiting": 0}
    with hybrid_stack(
        tmp_path,
        local_args=["--speed", "0.5", "--max-num-seqs", "1"],
        chat={"strategy": "spillover", "spillover": spill},
        engine_metrics={"interval_s": 0.1},
    ) as (proxy, local, api):
        assert ask(proxy.base_url).backend == "local"
        # Another client queues three long requests on the engine directly.
        body = {"model": "sim-model", "messages": MSGS, "max_tokens": 60}

        async def others() -> None:
            async with httpx.AsyncClient(timeout=60) as c:
                await asyncio.gather(
                    *(c.post(f"{local.base_url}/chat/completions", json=body) for _ in range(3))
                )

        def engine() -> dict[str, Any]:
            return ready(proxy)["details"]["local"].get("engine", {})

        def queue_seen() -> bool:
            return (engine().get("waiting") or 0) >= 1

        t = threading.Thread(target=asyncio.run, args=(others(),))
        t.start()
        try:
            wait_for(queue_seen, "the engine's queue to show in its metrics")
            a = ask(proxy.base_url)
            assert a.backend == "api" and a.attempts == 1
        finally:
            t.join(60)
        wait_for(lambda: engine().get("waiting") == 0, "the queue to drain")
        assert ask(proxy.base_url).backend == "local"
        assert chat_count(api) == 1


# Every fault knob the simulator has, as /sim/faults bodies.
KNOBS: list[dict[str, Any]] = [
    {"status": 408},
    {"status": 429, "retry_after": 1},
    {"status": 429, "error_shape": "openai", "error_code": "insufficient_quota"},
    {"status": 500},
    {"status": 502},
    {"status": 503},
    {"status": 504},
    {"status": 529, "error_shape": "anthropic"},
    {"status": 400},
    {"slow_first_token_s": 3},
    {"cut_stream_after": 0},
    {"cut_stream_after": 2},
    {"health_503": True},
    {"refuse_connections": True},
]
CONFIDENTIAL = {"x-data-class": "confidential"}


def confidential(proxy: ProxyHandle, stream: bool) -> Answer:
    return ask(proxy.base_url, stream, headers=CONFIDENTIAL)


def test_only_self_hosted_never_reaches_the_api_whatever_happens(tmp_path: Path) -> None:
    with hybrid_stack(
        tmp_path,
        local_backend={"timeouts": {"read_s": 1.0}},
        health_checks={"interval_s": 0.3, "failure_threshold": 1},
        rules=[
            {
                "name": "confidential",
                "when": {"header": {"x-data-class": "confidential"}},
                "only": "self_hosted",
            }
        ],
    ) as (proxy, local, api):
        # Healthy: served at home.
        for stream in (False, True):
            a = confidential(proxy, stream)
            assert a.status == 200 and a.backend == "local"

        # The self-hosted simulator broken in every way it can be: an error, or an
        # answer from it, but never the API.
        for knob in KNOBS:
            local.set_faults(**knob)
            for stream in (False, True):
                a = confidential(proxy, stream)
                assert a.backend in (None, "local"), (knob, a)
                assert a.attempts <= 1, (knob, a)
            local.clear_faults()
        assert chat_count(api) == 0

        # Down: 503 with a clear message, under every fault knob of the API too.
        local.stop()
        wait_for(lambda: ready(proxy)["backends"]["local"] == "down", "local marked down")
        for knob in [{}, *KNOBS]:
            api.clear_faults()
            if knob:
                api.set_faults(**knob)
            for stream in (False, True):
                a = confidential(proxy, stream)
                assert a.status == 503, (knob, a)
                assert a.error is not None and "self-hosted" in a.error["message"]
                assert "not sent anywhere else" in a.error["message"]
        assert chat_count(api) == 0

        # The API was there all along: unrestricted requests reach it (once its health
        # check has seen it recover from the last knobs, health_503 and refuse_connections).
        api.clear_faults()
        wait_for(lambda: ready(proxy)["backends"]["api"] != "down", "api back up")
        a = ask(proxy.base_url)
        assert a.status == 200 and a.backend == "api"
        assert chat_count(api) == 1


Watched = tuple[ProxyHandle, SimHandle, SimHandle]


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Watched]:
    """Health checks and engine scrapes every 0.2 s; a 512-token self-hosted window."""
    with hybrid_stack(
        tmp_path_factory.mktemp("routing"),
        local_args=["--speed", "20", "--max-model-len", "512"],
        api_args=["--speed", "20", "--max-model-len", "200000"],
        health_checks={"interval_s": 0.2, "failure_threshold": 1},
        engine_metrics={"interval_s": 0.2},
        models={"frontier": {"targets": [{"backend": "api", "model": "gpt-4o"}]}},
        rules=[
            {"name": "long", "when": {"min_prompt_tokens": 20000}, "route_to": "frontier"},
            {"when": {"tenant": "team-a", "metadata": {"tier": "batch"}}, "prefer": "api"},
        ],
    ) as (proxy, local, api):
        wait_for(
            lambda: "context_windows" in ready(proxy)["details"]["local"].get("engine", {}),
            "the engine's window to be read",
        )
        yield proxy, local, api


def test_a_prompt_over_the_engines_window_skips_it(watched: Watched) -> None:
    proxy, local, _ = watched
    engine = ready(proxy)["details"]["local"]["engine"]
    assert engine["context_windows"] == {"sim-model": 512}
    assert engine["running"] == 0 and engine["waiting"] == 0
    before = chat_count(local)
    a = ask(proxy.base_url, messages=[{"role": "user", "content": "tokens " * 400}])
    assert a.status == 200 and a.backend == "api" and a.attempts == 1
    assert chat_count(local) == before  # never tried: no 400 to fail over from
    assert ask(proxy.base_url).backend == "local"


def test_a_failing_health_check_takes_a_backend_out_and_back(watched: Watched) -> None:
    proxy, local, _ = watched
    local.set_faults(health_503=True)  # vLLM's engine died; its HTTP server still answers
    try:
        wait_for(lambda: ready(proxy)["backends"]["local"] == "down", "local marked down")
        report = ready(proxy)
        assert report["details"]["local"]["health"]["last_error"] == "HTTP 503"
        assert report["aliases"]["chat"] is True and report["ready"] is True
        assert proxy.metric("hybridgate_backend_up", backend="local") == 0
        before = chat_count(local)
        a = ask(proxy.base_url, stream=True)
        assert a.status == 200 and a.backend == "api" and a.attempts == 1 and a.done
        assert chat_count(local) == before
    finally:
        local.clear_faults()
    wait_for(lambda: ready(proxy)["backends"]["local"] == "up", "local marked up")
    assert proxy.metric("hybridgate_backend_up", backend="local") == 1
    assert ask(proxy.base_url).backend == "local"


def test_rules_route_to_and_prefer(watched: Watched) -> None:
    proxy, _, api = watched
    before = proxy.metric("hybridgate_requests_total", alias="frontier", backend="api")
    huge = [{"role": "user", "content": "x" * 90000}]  # ~22k estimated tokens
    a = ask(proxy.base_url, messages=huge)
    assert a.status == 200 and a.backend == "api"
    after = proxy.metric("hybridgate_requests_total", alias="frontier", backend="api")
    assert after == before + 1  # counted under the alias it was routed to
    a = ask(proxy.base_url, metadata={"tier": "batch"})
    assert a.backend == "api"
    assert ask(proxy.base_url, metadata={"tier": "online"}).backend == "local"
    assert [r["model"] for r in api.stats()["requests"]][-2:] == ["gpt-4o", "gpt-4o-mini"]
