"""Stored responses in Redis (docs/state.md, "Stored responses"): two proxies sharing one
redis-server see each other's stored responses (a conversation continues on either),
per tenant, with the retention as the key's expiry; with Redis down, a turn that needs
the store is a clear 503 and one that does not is still served."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.support.proxy import ProxyHandle, run_proxy
from tests.support.redis import RedisHandle, run_redis
from tests.support.sim import SimHandle, run_simulator

KEY_A = "sk-hg-resp-state-a-1f"
KEY_B = "sk-hg-resp-state-b-2e"
FAST = ["--ttft-ms", "0", "--itl-ms", "0", "--record-bodies", "--default-max-tokens", "8"]


def config(redis: RedisHandle, api: SimHandle, vllm: SimHandle) -> dict[str, Any]:
    return {
        "state": {"url": redis.url, "prefix": "hgresp"},
        "responses": {"retention_s": 600},
        "auth": {
            "keys": [
                {"key": KEY_A, "tenant": "team-a"},
                {"key": KEY_B, "tenant": "team-b"},
            ]
        },
        "health_checks": {"enabled": False},
        "gpu_pools": {"p": {"gpus": 1, "billing": "rental", "usd_per_gpu_hour": 2}},
        "backends": {
            "api": {
                "type": "openai",
                "base_url": api.base_url,
                "speaks": ["openai", "responses"],
            },
            "local": {"type": "openai", "base_url": vllm.base_url, "pool": "p"},
        },
        "models": {
            "gpt": {"targets": [{"backend": "api", "model": "gpt-4o-mini"}]},
            "local": {"targets": [{"backend": "local", "model": "sim-model"}]},
        },
    }


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ProxyHandle, ProxyHandle, RedisHandle, SimHandle]]:
    tmp = tmp_path_factory.mktemp("responses-state")
    with (
        run_redis(tmp) as redis,
        run_simulator(tmp, "api", args=FAST, name="api") as api,
        run_simulator(tmp, "vllm", args=FAST) as vllm,
    ):
        cfg = config(redis, api, vllm)
        with run_proxy(tmp, cfg, name="p1") as p1, run_proxy(tmp, cfg, name="p2") as p2:
            yield p1, p2, redis, vllm


def client(proxy: ProxyHandle, key: str = KEY_A) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.base_url, api_key=key, max_retries=0, timeout=30)


@pytest.mark.parametrize("alias", ["gpt", "local"])
def test_two_proxies_share_stored_responses(stack: Any, alias: str) -> None:
    p1, p2, redis, _ = stack
    r1 = client(p1).responses.create(model=alias, input="My name is Grace Hopper.")
    assert client(p2).responses.retrieve(r1.id).id == r1.id
    r2 = client(p2).responses.create(model=alias, input="My name?", previous_response_id=r1.id)
    assert r2.previous_response_id == r1.id
    assert r2.usage is not None and r1.usage is not None
    assert r2.usage.input_tokens > r1.usage.input_tokens
    with pytest.raises(openai.NotFoundError):
        client(p2, KEY_B).responses.retrieve(r1.id)
    # one key per stored response, under the tenant, expiring after responses.retention_s
    keys = redis.client().keys(f"hgresp:resp:team-a:{r1.id}")
    assert len(keys) == 1 and 0 < redis.client().ttl(keys[0]) <= 600
    assert redis.client().keys(f"hgresp:resp:team-b:{r1.id}") == []
    client(p1).responses.delete(r1.id)
    with pytest.raises(openai.NotFoundError):
        client(p2).responses.retrieve(r1.id)


def test_redis_down_needs_state_503_else_served(stack: Any) -> None:
    p1, _, redis, vllm = stack
    r1 = client(p1).responses.create(model="local", input="Remember me.")
    redis.pause()
    try:
        with pytest.raises(openai.APIStatusError) as exc:
            client(p1).responses.create(model="local", input="and?", previous_response_id=r1.id)
        assert exc.value.status_code == 503
        assert exc.value.code == "state_unavailable"  # type: ignore[attr-defined]
        served = len(vllm.stats()["requests"])
        # store=false needs no state: served as usual
        r = client(p1).responses.create(model="local", input="No state.", store=False)
        assert r.output_text and len(vllm.stats()["requests"]) == served + 1
    finally:
        redis.resume()
