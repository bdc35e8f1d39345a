"""Shared state across real proxy replicas: budgets, rate limits, outages, restarts.

Real parts on loopback: redis-server (a throwaway one per test), the simulator in api
mode (the pay-per-token API) and vllm mode (self-hosted), `hybridgate serve` replicas,
httpx and the openai SDK as clients. The API model is priced in config so each request
costs exactly $0.01 (10 completion tokens at $1000/1M, prompt free): budget arithmetic
is in whole requests, and the durable nano-USD totals can be compared exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.proxy import ProxyHandle, metric_value, run_proxy
from tests.support.redis import RedisHandle, run_redis
from tests.support.routing import hybrid_config
from tests.support.sim import SimHandle
from tests.support.stack import Stack, run_stack, sim_pair

KEY = "sk-state-team-a-0123456789"
OTHER_KEY = "sk-state-team-b-0123456789"
ADMIN = "admin-state-test-key-123456"
API_MODEL = "sim-api-model"
COST = 0.01  # USD per API request: 10 completion tokens at $1000 per 1M
NANO = 1_000_000_000
COST_NANO = 10_000_000  # COST in nano-USD
F = 0.1  # state.flush_interval_s
I = 0.1  # state.refresh_interval_s  # noqa: E741
API_LATENCY_S = 0.4  # the API simulator's time to answer (ttft, no inter-token delay)
SLACK_S = 0.5  # scheduling slack on a loaded 2-core machine, added to the sync lag
BODY = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}


def config(
    local: SimHandle,
    api: SimHandle,
    *,
    state_url: str = "memory://",
    prefix: str = "hybridgate",
    budget: float | None = 0.5,
    over_budget: str = "self_hosted_only",
    key_limits: dict[str, int] | None = None,
    rate_window_s: float = 60.0,
) -> dict[str, Any]:
    tenant: dict[str, Any] = {"over_budget": over_budget}
    if budget is not None:
        tenant["monthly_api_budget_usd"] = budget
    return hybrid_config(
        local,
        api,
        # API first: the tenant spends API money until its budget says otherwise.
        chat={
            "targets": [
                {"backend": "api", "model": API_MODEL},
                {"backend": "local", "model": "sim-model"},
            ]
        },
        models={"local": {"targets": [{"backend": "local", "model": "sim-model"}]}},
        state={
            "url": state_url,
            "flush_interval_s": F,
            "refresh_interval_s": I,
            "rate_window_s": rate_window_s,
            "prefix": prefix,
        },
        auth={
            "admin_key": ADMIN,
            "keys": [
                {"key": KEY, "tenant": "team-a", "name": "team-a-key", **(key_limits or {})},
                {"key": OTHER_KEY, "tenant": "team-b", "name": "team-b-key"},
            ],
        },
        tenants={"team-a": tenant, "team-b": {}},
        prices={API_MODEL: {"input": 0, "output": 1000}},
    )


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisHandle]:
    """One Redis for the module; each test keeps to its own key prefix."""
    with run_redis(tmp_path_factory.mktemp("redis")) as r:
        yield r


@pytest.fixture(scope="module")
def sims(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SimHandle, SimHandle]]:
    api_args = ["--ttft-ms", str(API_LATENCY_S * 1000), "--itl-ms", "0"]
    with sim_pair(tmp_path_factory.mktemp("sims"), api_args=api_args) as pair:
        yield pair


@pytest.fixture
def prefix(request: pytest.FixtureRequest, sims: tuple[SimHandle, SimHandle]) -> str:
    for sim in sims:
        sim.reset()
    return f"hg-{request.node.name}"


@contextlib.contextmanager
def replicas(
    tmp_path: Path,
    sims: tuple[SimHandle, SimHandle],
    n: int = 3,
    redis: bool = False,
    **cfg: Any,
) -> Iterator[Stack]:
    """`n` proxies running `config(**cfg)` in front of the module's simulators (and a
    Redis of their own with `redis`, for a test that stops and starts it)."""
    with run_stack(
        tmp_path, lambda local, api: config(local, api, **cfg), sims=sims, redis=redis, replicas=n
    ) as stack:
        yield stack


def durable(r: RedisHandle, prefix: str, tenant: str = "team-a") -> dict[str, int]:
    """The tenant's month-to-date counters as Redis holds them."""
    month = time.strftime("%Y-%m", time.gmtime())
    with r.client() as c:
        raw = c.hgetall(f"{prefix}:spend:{month}")
    out: dict[str, int] = {}
    for k, v in raw.items():
        t, _, field = k.decode().rpartition("|")
        if t == tenant:
            out[field] = int(v)
    return out


def total(proxies: list[ProxyHandle], name: str, **labels: str) -> float:
    return sum(metric_value(p.metrics_text(), name, **labels) for p in proxies)


def ready(p: ProxyHandle) -> dict[str, Any]:
    return p.ready().json()


def wait_until(pred: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def over_budget(p: ProxyHandle, tenant: str = "team-a") -> bool:
    """This replica's view of the tenant's spend has reached the budget."""
    return p.metric("hybridgate_tenant_budget_remaining_usd", tenant=tenant) <= 0


def settled(proxies: list[ProxyHandle]) -> bool:
    """Every replica has had all its events acknowledged by the state backend."""
    for p in proxies:
        state = ready(p)["state"]
        if state["status"] != "ok" or state["unsynced_events"]:
            return False
    return True


async def _client(
    http: httpx.AsyncClient,
    p: ProxyHandle,
    results: list[tuple[int, str | None, float]],
    stop: Callable[[list[tuple[int, str | None, float]]], bool],
    key: str = KEY,
    body: dict[str, Any] = BODY,
    pause_on_429: float = 0.05,
) -> None:
    mine: list[tuple[int, str | None, float]] = []
    while not stop(mine):
        sent = time.time()
        r = await http.post(
            f"{p.base_url}/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
        )
        item = (r.status_code, r.headers.get("x-hybridgate-backend"), sent)
        mine.append(item)
        results.append(item)
        if r.status_code == 429:
            await asyncio.sleep(pause_on_429)


def drive(
    proxies: list[ProxyHandle],
    per_replica: int,
    stop: Callable[[list[tuple[int, str | None, float]]], bool],
    **kw: Any,
) -> list[tuple[int, str | None, float]]:
    """`per_replica` sequential clients on each replica, each until `stop(its results)`."""
    results: list[tuple[int, str | None, float]] = []

    async def main() -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            await asyncio.gather(
                *(
                    _client(http, p, results, stop, **kw)
                    for p in proxies
                    for _ in range(per_replica)
                )
            )

    asyncio.run(main())
    return results


def overshoot_bound_requests(clients: int) -> int:
    """docs/state.md: past the limit, each client can have one request in flight and start
    one more per API_LATENCY_S during the sync lag (flush + refresh interval)."""
    return clients * (1 + math.ceil((F + I + SLACK_S) / API_LATENCY_S))


def last_n(n: int, pred: Callable[[tuple[int, str | None, float]], bool]) -> Callable[..., bool]:
    return lambda mine: len(mine) >= n and all(pred(x) for x in mine[-n:])


# ---------------------------------------------------------------- budgets


@pytest.mark.serial  # compares timings with the upstream's own: runs alone
def test_budget_across_replicas_goes_self_hosted_only(
    tmp_path: Path, shared_redis: RedisHandle, sims: tuple[SimHandle, SimHandle], prefix: str
) -> None:
    redis_server = shared_redis
    with replicas(tmp_path, sims, state_url=redis_server.url, prefix=prefix, budget=0.5) as s:
        proxies = s.proxies
        for p in proxies:
            assert p.metric("hybridgate_tenant_budget_usd", tenant="team-a") == 0.5
        results = drive(proxies, 2, last_n(3, lambda x: x[1] == "local"))
        # Zero client-visible errors: over budget means self-hosted, not failure.
        assert {s for s, _, _ in results} == {200}
        api_ok = sum(1 for _, b, _ in results if b == "api")
        # At least the budget (views never exceed the truth: no double counting) and at
        # most the stated overshoot past it.
        assert 50 <= api_ok <= 50 + overshoot_bound_requests(6), api_ok
        # Every replica now routes the tenant self-hosted only, once its view has synced
        # (polled: the sync lag is F + I, plus scheduling on a loaded machine).
        assert wait_until(lambda: all(over_budget(p) for p in proxies))
        for p in proxies:
            for _ in range(3):
                r = p.chat(**BODY)
                assert r.status_code == 200
                assert r.headers["x-hybridgate-backend"] == "local"
            assert p.metric("hybridgate_tenant_budget_remaining_usd", tenant="team-a") <= 0
        # Another tenant without a budget still uses the API.
        r = httpx.post(
            f"{proxies[0].base_url}/chat/completions",
            json=BODY,
            headers={"Authorization": f"Bearer {OTHER_KEY}"},
        )
        assert r.headers["x-hybridgate-backend"] == "api"
        # The books: Redis holds exactly what the replicas' UsageEvents said.
        assert wait_until(lambda: settled(proxies))
        d = durable(redis_server, prefix)
        prom_api = total(proxies, "hybridgate_cost_usd_total", backend="api", tenant="team-a")
        assert d["api_nano"] == round(prom_api * NANO) == api_ok * COST_NANO
        assert d["requests"] == len(results) + 9
        by_endpoint = sims[1].stats(detail=False)["requests_by_endpoint"]
        assert by_endpoint["/v1/chat/completions"] == api_ok + 1


@pytest.mark.serial  # compares timings with the upstream's own: runs alone
def test_budget_reject_mode_says_budget_and_reset(
    tmp_path: Path, shared_redis: RedisHandle, sims: tuple[SimHandle, SimHandle], prefix: str
) -> None:
    redis_server = shared_redis
    with replicas(
        tmp_path,
        sims,
        n=2,
        state_url=redis_server.url,
        prefix=prefix,
        budget=0.1,
        over_budget="reject",
    ) as s:
        proxies = s.proxies
        results = drive(proxies, 1, last_n(2, lambda x: x[0] == 429))
        assert {s for s, _, _ in results} <= {200, 429}
        api_ok = sum(1 for s, b, _ in results if s == 200 and b == "api")
        assert 10 <= api_ok <= 10 + overshoot_bound_requests(2)
        client = openai.OpenAI(base_url=proxies[1].base_url, api_key=KEY, max_retries=0)
        assert wait_until(lambda: over_budget(proxies[1]))  # its view has synced
        with pytest.raises(openai.RateLimitError) as exc:
            client.chat.completions.create(**BODY)
        err = exc.value
        assert err.status_code == 429
        assert err.code == "budget_exceeded"
        assert "$0.10" in err.message and "resets at" in err.message
        month_end = err.response.headers["x-hybridgate-budget-reset"]
        assert month_end.endswith("-01T00:00:00Z")
        assert int(err.response.headers["retry-after"]) > 0
        # An alias that can only go self-hosted spends no API money: still served.
        local = client.chat.completions.create(**{**BODY, "model": "local"})
        assert local.choices[0].message.content


# ---------------------------------------------------------------- durability


def test_restart_keeps_month_to_date_spend(
    tmp_path: Path, shared_redis: RedisHandle, sims: tuple[SimHandle, SimHandle], prefix: str
) -> None:
    redis_server = shared_redis
    cfg = config(*sims, state_url=redis_server.url, prefix=prefix, budget=0.05)
    with run_proxy(tmp_path, cfg, name="first") as p:
        for _ in range(3):
            r = p.chat(**BODY)
            assert r.headers["x-hybridgate-backend"] == "api"
        # Graceful stop flushes what is left; nothing waits for the background tick.
    assert durable(redis_server, prefix)["api_nano"] == 3 * COST_NANO
    with run_proxy(tmp_path, cfg, name="second") as p:
        remaining = p.metric("hybridgate_tenant_budget_remaining_usd", tenant="team-a")
        assert remaining == pytest.approx(0.05 - 0.03)
        for _ in range(2):
            r = p.chat(**BODY)
            assert r.headers["x-hybridgate-backend"] == "api"
        wait_until(lambda: settled([p]))
        # $0.05 spent across both lives of the proxy: the budget holds after a restart.
        r = p.chat(**BODY)
        assert r.headers["x-hybridgate-backend"] == "local"
    assert durable(redis_server, prefix)["api_nano"] == 5 * COST_NANO


def test_redis_outage_under_load_loses_nothing(
    tmp_path: Path, sims: tuple[SimHandle, SimHandle], prefix: str
) -> None:
    """Redis stopped under load on three replicas until each has served requests and
    failed to flush while it was down, then started again."""
    with replicas(tmp_path, sims, redis=True, prefix=prefix, budget=1000.0) as stack:
        proxies, redis_server = stack.proxies, stack.redis
        assert redis_server is not None
        marks: dict[str, float] = {}

        def served() -> list[float]:
            return [p.metric("hybridgate_requests_total") for p in proxies]

        def outage() -> None:
            try:
                # Load on every replica first, then the outage.
                assert wait_until(lambda: all(n >= 5 for n in served()))
                redis_server.stop()
                # While Redis is down every replica says so, and why, and keeps serving.
                assert wait_until(lambda: all(ready(p)["status"] == "degraded" for p in proxies))
                for p in proxies:
                    body = ready(p)
                    assert body["ready"] is True
                    assert body["state"]["reason"].startswith("redis unreachable")
                down = served()
                assert wait_until(
                    lambda: all(
                        n >= d + 20 and p.metric("hybridgate_state_flush_failures_total") > 0
                        for p, n, d in zip(proxies, served(), down, strict=True)
                    )
                )
                redis_server.start()
            finally:
                marks["back"] = time.monotonic()

        def stop(_: Any) -> bool:
            return "back" in marks and time.monotonic() > marks["back"] + 1.0

        async def load() -> list[tuple[int, str | None, float]]:
            results: list[tuple[int, str | None, float]] = []
            task = asyncio.create_task(asyncio.to_thread(outage))
            async with httpx.AsyncClient(timeout=30) as http:
                await asyncio.gather(
                    *(
                        _client(http, p, results, stop, body={**BODY, "model": model})
                        for p in proxies
                        for model in ("chat", "local")
                    )
                )
            await task
            return results

        results = asyncio.run(load())
        assert results and {s for s, _, _ in results} == {200}
        assert wait_until(lambda: settled(proxies))
        for p in proxies:
            assert p.metric("hybridgate_state_flush_failures_total") > 0
            assert p.metric("hybridgate_state_degraded") == 0
        d = durable(redis_server, prefix)
        assert d["requests"] == len(results)
        assert d["requests"] == total(proxies, "hybridgate_requests_total")
        prom_api = total(proxies, "hybridgate_cost_usd_total", backend="api", tenant="team-a")
        served_api = sum(1 for _, b, _ in results if b == "api")
        assert d["api_nano"] == round(prom_api * NANO) == served_api * COST_NANO
        # Self-hosted cost is GPU-seconds x price: each event is rounded to a nano-USD.
        prom_local = total(proxies, "hybridgate_cost_usd_total", backend="local", tenant="team-a")
        served_local = sum(1 for _, b, _ in results if b == "local")
        assert abs(d["self_hosted_nano"] - prom_local * NANO) <= served_local
        assert d["completion_tokens"] == total(
            proxies, "hybridgate_tokens_total", kind="completion"
        )


# ---------------------------------------------------------------- rate limits


@pytest.mark.serial  # compares timings with the upstream's own: runs alone
def test_rpm_holds_across_replicas(
    tmp_path: Path, shared_redis: RedisHandle, sims: tuple[SimHandle, SimHandle], prefix: str
) -> None:
    window = 30.0  # state.rate_window_s: "rpm: 60" means 60 per 30 s window here
    with replicas(
        tmp_path,
        sims,
        state_url=shared_redis.url,
        prefix=prefix,
        budget=None,
        key_limits={"rpm": 60},
        rate_window_s=window,
    ) as s:
        proxies = s.proxies
        # Run inside one window: wait for a fresh one if this one is too far along.
        assert wait_until(lambda: window - time.time() % window >= 15, timeout=window)
        cutoff = (time.time() // window + 1) * window - 2

        def stop(mine: list[tuple[int, str | None, float]]) -> bool:
            return time.time() > cutoff or (len(mine) >= 3 and all(x[0] == 429 for x in mine[-3:]))

        results = drive(proxies, 2, stop)
        assert len({int(t // window) for _, _, t in results}) == 1
        assert {s for s, _, _ in results} == {200, 429}
        ok = sum(1 for s, _, _ in results if s == 200)
        # Each replica alone would admit 60 (180 in all); shared through Redis, the total
        # is the limit plus at most what the others admit during one sync lag.
        assert 60 <= ok <= 60 + overshoot_bound_requests(6), ok
        client = openai.OpenAI(base_url=proxies[2].base_url, api_key=KEY, max_retries=0)
        with pytest.raises(openai.RateLimitError) as exc:
            client.chat.completions.create(**BODY)
        err = exc.value
        assert err.code == "rate_limit_exceeded" and "60 requests per 30s window" in err.message
        headers = err.response.headers
        assert 0 < int(headers["retry-after"]) <= window
        assert headers["x-ratelimit-limit-requests"] == "60"
        assert headers["x-ratelimit-remaining-requests"] == "0"


def test_tpm_counts_tokens_of_finished_requests(
    tmp_path: Path, sims: tuple[SimHandle, SimHandle], prefix: str
) -> None:
    """One replica on memory:// state: tokens come from each request's UsageEvent."""
    cfg = config(*sims, budget=None, key_limits={"tpm": 100})
    with run_proxy(tmp_path, cfg) as p:
        client = openai.OpenAI(base_url=p.base_url, api_key=KEY, max_retries=0)
        used = 0
        per_request = 0
        with pytest.raises(openai.RateLimitError) as exc:
            for _ in range(50):
                out = client.chat.completions.create(**{**BODY, "model": "local"})
                assert out.usage is not None
                per_request = out.usage.total_tokens
                used += per_request
        assert exc.value.code == "rate_limit_exceeded"
        assert "100 tokens per minute" in exc.value.message
        assert exc.value.response.headers["x-ratelimit-limit-tokens"] == "100"
        # Rejected once the window's tokens were over: not before, and at most one
        # request late (its predecessor's event may still be on its way to the store).
        assert 100 <= used <= 100 + 2 * per_request
        assert p.metric("hybridgate_requests_total", outcome="rejected") == 1
