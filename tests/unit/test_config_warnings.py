"""`check` warns about configs that are valid but unsafe."""

from __future__ import annotations

from proxy.config import parse_config, warnings_for

BASE = """
listen: {host: %(host)s, port: 4000}
state: {url: "%(state)s"}
auth: {keys: %(keys)s}
gpu_pools: {p: {gpus: 1, usd_per_gpu_hour: 1}}
backends:
  local: {type: openai, base_url: "http://127.0.0.1:8000/v1", pool: p}
  api: {type: openai, base_url: "https://api.example.com/v1"}
models:
  chat: {targets: [{backend: local, model: m}, {backend: api, model: gpt-4o-mini}]}
  frontier: {targets: [{backend: api, model: gpt-4o-mini}]}
rules:
  - {when: {header: {x-data-class: confidential}}, only: self_hosted}
"""


def warn(host: str = "127.0.0.1", state: str = "memory://", keys: str = "[]") -> list[str]:
    return warnings_for(parse_config(BASE % {"host": host, "state": state, "keys": keys}))


def test_open_proxy_on_the_network() -> None:
    assert any("reachable from the network" in w for w in warn(host="0.0.0.0"))
    assert not any("reachable from the network" in w for w in warn(host="127.0.0.1"))
    assert not any(w.startswith("auth.keys") for w in warn(keys="[{key: k, tenant: t}]"))


def test_redis_without_password_off_loopback() -> None:
    assert any(w.startswith("state.url") for w in warn(state="redis://10.1.2.3:6379/0"))
    assert not any(w.startswith("state.url") for w in warn(state="redis://127.0.0.1:6379/0"))
    assert not any(w.startswith("state.url") for w in warn(state="redis://:pw@10.1.2.3:6379/0"))


def test_confidential_rule_that_cannot_be_met() -> None:
    out = warn()
    assert any(w.startswith("rules[0]") and "'frontier'" in w for w in out)
    assert not any(w.startswith("rules[0]") and "'chat'" in w for w in out)
