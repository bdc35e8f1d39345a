"""Budget and rate-limit decisions of the state store, on the in-process (memory://) backend.

A settable clock drives months and windows; events are real UsageEvents as the meter
hands them to its slow sink.
"""

from __future__ import annotations

import calendar
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from proxy.config import Config, parse_config
from proxy.metering.events import UsageEvent
from proxy.request.errors import ProxyError
from proxy.state import StateStore
from proxy.state.memory import MemoryRemote
from proxy.state.metrics import StateCollector
from tests.support.proxy import metric_value

T0 = calendar.timegm((2026, 11, 30, 23, 59, 0))  # one minute before a month ends

YAML = """
state: {url: "memory://", rate_window_s: 60}
auth:
  keys:
    - {key: k1, tenant: team-a, name: a-key, rpm: 3}
    - {key: k2, tenant: team-b, name: b-key, tpm: 100}
    - {key: k3, tenant: team-c, name: c-key}
tenants:
  team-a: {monthly_api_budget_usd: 0.05, over_budget: self_hosted_only}
  team-b: {monthly_api_budget_usd: 0.05, over_budget: reject}
  team-c: {}
gpu_pools: {h100: {gpus: 1, usd_per_gpu_hour: 2.0}}
backends:
  vllm: {base_url: "http://127.0.0.1:1/v1", pool: h100}
  api: {base_url: "http://127.0.0.1:2/v1"}
models:
  chat: {targets: [{backend: api, model: gpt-4o-mini}, {backend: vllm, model: m}]}
  frontier: {targets: [{backend: api, model: gpt-4o-mini}]}
  local: {targets: [{backend: vllm, model: m}]}
"""


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def config() -> Config:
    return parse_config(YAML)


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def store(config: Config, clock: Clock) -> StateStore:
    return StateStore(config, MemoryRemote(), clock=clock)


def event(tenant: str, cost: float, *, self_hosted: bool = False, at: float = T0, **kw: Any):
    return UsageEvent(
        request_id="r",
        started_at=at,
        endpoint="chat",
        tenant=tenant,
        key_name=kw.pop("key_name", f"{tenant[-1]}-key"),
        backend="vllm" if self_hosted else "api",
        model="m",
        cost_usd=cost,
        self_hosted=self_hosted,
        **kw,
    )


async def test_self_hosted_only_once_the_budget_is_spent(store: StateStore) -> None:
    assert store.admit("team-a", "c-key", "chat") is False
    await store.record([event("team-a", 0.02), event("team-a", 0.02)])
    assert store.admit("team-a", "c-key", "chat") is False  # $0.04 < $0.05
    await store.record([event("team-a", 1.0, self_hosted=True)])  # GPUs do not count
    assert store.admit("team-a", "c-key", "chat") is False
    await store.record([event("team-a", 0.01)])
    assert store.admit("team-a", "c-key", "chat") is True
    assert store.admit("team-a", "c-key", "local") is True
    # An alias with no self-hosted target cannot be served within the policy: 429.
    with pytest.raises(ProxyError) as exc:
        store.admit("team-a", "c-key", "frontier")
    assert exc.value.status == 429 and exc.value.code == "budget_exceeded"
    # Other tenants are unaffected.
    assert store.admit("team-c", "c-key", "frontier") is False


async def test_reject_mode_answers_429_with_budget_and_reset(store: StateStore) -> None:
    await store.record([event("team-b", 0.05)])
    with pytest.raises(ProxyError) as exc:
        store.admit("team-b", "c-key", "chat")
    err = exc.value
    assert err.status == 429 and err.type == "insufficient_quota"
    assert "$0.05" in err.message and "2026-12-01T00:00:00Z" in err.message
    headers = dict(err.headers)
    assert headers[b"x-hybridgate-budget-reset"] == b"2026-12-01T00:00:00Z"
    assert headers[b"retry-after"] == b"60"
    # A self-hosted-only alias spends no API money: not rejected.
    assert store.admit("team-b", "c-key", "local") is False


async def test_budgets_reset_with_the_utc_month(store: StateStore, clock: Clock) -> None:
    await store.record([event("team-a", 0.05)])
    assert store.admit("team-a", "c-key", "chat") is True
    clock.t = T0 + 60  # 2026-12-01T00:00:00Z
    assert store.admit("team-a", "c-key", "chat") is False
    # A late event of November still lands in November's books, not December's.
    await store.record([event("team-a", 0.05, at=T0)])
    assert store.admit("team-a", "c-key", "chat") is False
    assert store.api_spend_nano("team-a") == 0
    await store.sync(force_read=True)
    totals = await store.month_totals("2026-11")
    assert totals["team-a"]["api_nano"] == 100_000_000


async def test_rpm_counts_admitted_requests_per_window(store: StateStore, clock: Clock) -> None:
    clock.t = 1_800_000_030.0  # 30 s into a window
    for _ in range(3):
        store.admit("team-c", "a-key", "chat")
    with pytest.raises(ProxyError) as exc:
        store.admit("team-c", "a-key", "chat")
    err = exc.value
    assert err.status == 429 and err.code == "rate_limit_exceeded"
    assert "3 requests per minute" in err.message
    headers = dict(err.headers)
    assert headers[b"retry-after"] == b"30"
    assert headers[b"x-ratelimit-limit-requests"] == b"3"
    # A rejected request does not count; the next window starts from zero.
    clock.t += 30
    for _ in range(3):
        store.admit("team-c", "a-key", "chat")
    with pytest.raises(ProxyError):
        store.admit("team-c", "a-key", "chat")
    # Keys without limits are never counted.
    for _ in range(100):
        store.admit("team-c", "c-key", "chat")
    assert store.limits.by_key.keys() == {"a-key", "b-key"}


async def test_tpm_counts_tokens_when_requests_finish(store: StateStore, clock: Clock) -> None:
    clock.t = 1_800_000_000.0
    store.admit("team-b", "b-key", "local")
    ev = event("team-b", 0.0, at=clock.t, prompt_tokens=40, completion_tokens=60)
    await store.record([ev])
    with pytest.raises(ProxyError) as exc:
        store.admit("team-b", "b-key", "local")
    assert "100 tokens per minute" in exc.value.message
    assert dict(exc.value.headers)[b"x-ratelimit-limit-tokens"] == b"100"
    clock.t += 60
    assert store.admit("team-b", "b-key", "local") is False


async def test_sync_makes_the_memory_books_exact_and_stop_flushes(store: StateStore) -> None:
    await store.start()
    await store.record([event("team-a", 0.01, prompt_tokens=3, completion_tokens=7)] * 3)
    await store.record([event("team-a", 0.5, self_hosted=True)])
    await store.stop()
    totals = (await store.month_totals("2026-11"))["team-a"]
    assert totals == {
        "requests": 4,
        "api_nano": 30_000_000,
        "self_hosted_nano": 500_000_000,
        "prompt_tokens": 9,
        "completion_tokens": 21,
    }
    assert store.health()["status"] == "ok" and store.health()["unsynced_events"] == 0


async def test_memory_remote_applies_each_batch_once() -> None:
    remote = MemoryRemote()
    reads = {"h": ["a"]}
    assert await remote.apply(1, {"h": {"a": 5}}, {}, reads) == {"h": {"a": 5}}
    assert await remote.apply(1, {"h": {"a": 5}}, {}, reads) == {"h": {"a": 5}}
    assert await remote.apply(0, {}, {}, reads) == {"h": {"a": 5}}
    assert await remote.apply(2, {"h": {"a": 1}}, {}, reads) == {"h": {"a": 6}}


async def test_gauges(store: StateStore) -> None:
    registry = CollectorRegistry()
    registry.register(StateCollector(store))
    await store.record([event("team-a", 0.02)])
    text = generate_latest(registry).decode()
    assert metric_value(text, "hybridgate_tenant_budget_usd", tenant="team-a") == 0.05
    assert metric_value(
        text, "hybridgate_tenant_budget_remaining_usd", tenant="team-a"
    ) == pytest.approx(0.03)
    assert 'tenant="team-c"' not in text  # no budget, no series
    assert metric_value(text, "hybridgate_state_flush_failures_total") == 0
    assert metric_value(text, "hybridgate_state_unsynced_events") == 1


def test_config_rejects_unknown_state_backends() -> None:
    from proxy.config import ConfigError

    with pytest.raises(ConfigError) as exc:
        parse_config(YAML.replace('url: "memory://"', 'url: "postgres://x"'))
    assert any(p.startswith("state.url:") for p in exc.value.problems)


async def test_counts_of_windows_long_over_are_not_kept(store: StateStore, clock: Clock) -> None:
    """During a long outage rate counts pile up per window; past ones are dropped."""
    clock.t = 1_800_000_000.0
    store.admit("team-c", "a-key", "chat")
    await store.record([event("team-a", 0.01, at=clock.t)])
    old = store._window_hash
    clock.t += 60
    store.admit("team-c", "a-key", "chat")
    assert old in store.ledger.pending
    clock.t += 60  # two windows later: the first one can no longer matter
    assert await store.sync()
    assert old not in store.ledger.local and old not in store.ledger.pending
    assert store.api_spend_nano("team-a") == 10_000_000  # spend is never dropped
