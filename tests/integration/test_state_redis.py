"""The state store against a real redis-server: sharing, exactly-once flushes, outages.

Two stores in one process stand for two replicas (each has its own replica id and
sequence numbers, as separate processes do). Redis is stopped, frozen and restarted for
real; the assertion is always that the durable totals equal the events recorded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.config import Config, parse_config
from proxy.metering.events import UsageEvent
from proxy.state import StateStore, build_state
from proxy.state.redis import RedisRemote, mask_url
from tests.support.redis import RedisHandle, run_redis

YAML = """
state: {url: "%s", flush_interval_s: 0.05, refresh_interval_s: 0.05, timeout_s: 0.3}
auth: {keys: [{key: k1, tenant: team-a, name: a-key, rpm: 10}]}
tenants: {team-a: {monthly_api_budget_usd: 0.10}}
gpu_pools: {h100: {gpus: 1, usd_per_gpu_hour: 2.0}}
backends:
  vllm: {base_url: "http://127.0.0.1:1/v1", pool: h100}
  api: {base_url: "http://127.0.0.1:2/v1"}
models: {chat: {targets: [{backend: api, model: gpt-4o-mini}, {backend: vllm, model: m}]}}
"""


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisHandle]:
    with run_redis(tmp_path) as r:
        yield r


@pytest.fixture
def config(redis_server: RedisHandle) -> Config:
    return parse_config(YAML % redis_server.url)


def spend(cost: float = 0.01, tokens: int = 10) -> UsageEvent:
    return UsageEvent(
        request_id="r",
        started_at=time.time(),
        endpoint="chat",
        tenant="team-a",
        key_name="a-key",
        backend="api",
        model="gpt-4o-mini",
        cost_usd=cost,
        completion_tokens=tokens,
    )


async def test_replicas_share_spend_and_rate_counts(config: Config) -> None:
    a, b = build_state(config), build_state(config)
    await a.start()
    await b.start()
    try:
        await a.record([spend()] * 6)
        for _ in range(4):
            a.admit("team-a", "a-key", "chat")
        assert a.api_spend_nano("team-a") == 60_000_000  # its own spend: at once
        assert b.api_spend_nano("team-a") == 0
        assert await a.sync() and await b.sync(force_read=True)
        assert b.api_spend_nano("team-a") == 60_000_000
        await b.record([spend()] * 4)
        assert b.admit("team-a", "a-key", "chat") is True  # b's view: $0.10 spent
        assert await b.sync() and await a.sync(force_read=True)
        assert a.admit("team-a", "a-key", "chat") is True
        # rpm 10 across both: 4 + 1 + 1 admitted so far.
        for _ in range(4):
            a.admit("team-a", "a-key", "chat")
        with pytest.raises(Exception, match="Rate limit"):
            a.admit("team-a", "a-key", "chat")
    finally:
        await a.stop()
        await b.stop()
    totals = await build_state(config).month_totals()
    assert totals["team-a"] == {"requests": 10, "api_nano": 100_000_000, "completion_tokens": 100}


async def test_a_lost_reply_is_retried_without_double_counting(
    config: Config, redis_server: RedisHandle
) -> None:
    remote = RedisRemote(redis_server.url, "hybridgate", 1.0)
    try:
        ops = {"hybridgate:t": {"x": 7}}
        reads = {"hybridgate:t": ["x", "missing"]}
        assert await remote.apply(1, ops, {}, reads) == {"hybridgate:t": {"x": 7, "missing": 0}}
        # Same batch again (its reply was lost): a no-op that still answers the totals.
        assert await remote.apply(1, ops, {}, reads) == {"hybridgate:t": {"x": 7, "missing": 0}}
        assert await remote.apply(2, ops, {"hybridgate:t": 30}, reads) == {
            "hybridgate:t": {"x": 14, "missing": 0}
        }
        with redis_server.client() as c:
            assert 0 < c.ttl("hybridgate:t") <= 30
            assert c.ttl(f"hybridgate:seq:{remote.replica}") > 0
    finally:
        await remote.close()


async def test_outage_degrades_then_reconciles_exactly(
    config: Config, redis_server: RedisHandle
) -> None:
    store = build_state(config)
    await store.start()
    try:
        await store.record([spend()] * 3)
        assert await store.sync()
        redis_server.stop()
        await store.record([spend()] * 5)
        assert not await store.sync()
        health = store.health()
        assert health["status"] == "degraded"
        assert health["reason"].startswith("redis unreachable")
        assert health["unsynced_events"] == 5
        assert store.flush_failures >= 1
        # Serving continues on local state: the budget still counts all 8 requests.
        assert store.api_spend_nano("team-a") == 80_000_000
        await store.record([spend()] * 2)
        assert store.admit("team-a", "a-key", "chat") is True
        redis_server.start()
        assert await store.sync()  # the frozen batch of 5
        assert await store.sync()  # then the 2 that came after
        assert store.health()["status"] == "ok" and store.ledger.unsynced == 0
        assert store.api_spend_nano("team-a") == 100_000_000
    finally:
        await store.stop()
    totals = await build_state(config).month_totals()
    assert totals["team-a"]["requests"] == 10
    assert totals["team-a"]["api_nano"] == 100_000_000


async def test_frozen_redis_times_out_and_the_retry_is_applied_once(
    config: Config, redis_server: RedisHandle
) -> None:
    """SIGSTOP: the flush reaches Redis's socket but no reply comes back before the
    timeout. When Redis resumes it may run that buffered flush; the retry, carrying the
    same sequence number, must not add it a second time."""
    store = build_state(config)
    await store.start()
    try:
        await store.record([spend()] * 4)
        redis_server.pause()
        try:
            assert not await store.sync()
            assert "TimeoutError" in (store.degraded_reason or "")
        finally:
            redis_server.resume()
        # Let Redis run whatever was buffered (polled, bounded: if it never runs it, the
        # retry below applies it; either way it must count once).
        reader, deadline = build_state(config), time.monotonic() + 5
        while time.monotonic() < deadline:
            totals = await reader.month_totals()
            if totals.get("team-a", {}).get("requests") == 4:
                break
            await asyncio.sleep(0.02)
        ok = False
        for _ in range(20):
            if await store.sync():
                ok = True
                break
        assert ok
    finally:
        await store.stop()
    totals = await build_state(config).month_totals()
    assert totals["team-a"]["requests"] == 4
    assert totals["team-a"]["api_nano"] == 40_000_000


async def test_a_new_process_starts_with_month_to_date_spend(config: Config) -> None:
    first = build_state(config)
    await first.start()
    await first.record([spend()] * 7)
    await first.stop()  # the final flush, as at a graceful shutdown
    second: StateStore = build_state(config)
    await second.start()  # reads month-to-date before the first request
    try:
        assert second.api_spend_nano("team-a") == 70_000_000
    finally:
        await second.stop()


def test_passwords_never_leave_the_url() -> None:
    assert mask_url("redis://:hunter2@cache:6379/0") == "redis://:***@cache:6379/0"
    assert mask_url("rediss://app:hunter2@cache/1") == "rediss://app:***@cache/1"
    assert mask_url("redis://cache:6379/0") == "redis://cache:6379/0"
