"""Config: env expansion, unknown keys, cross-references, every problem with its path."""

from __future__ import annotations

import pytest

from proxy.config import ConfigError, MissingEnvVar, expand_env, parse_config

GOOD = """
listen: {host: 127.0.0.1, port: 4000}
auth:
  admin_key: ${ADMIN:-admin}
  keys: [{key: "${TEAM_A_KEY}", tenant: team-a}]
tenants:
  team-a: {monthly_api_budget_usd: 500, over_budget: self_hosted_only}
gpu_pools:
  h100: {gpus: 1, billing: rental, usd_per_gpu_hour: 2.50, capacity_tokens_per_s: 2500}
backends:
  local-vllm: {type: openai, base_url: "http://127.0.0.1:8000/v1", pool: h100, max_concurrency: 64}
  openai: {type: openai, base_url: "https://api.openai.com/v1", api_key: "${OPENAI_API_KEY:-}"}
models:
  chat:
    strategy: spillover
    targets:
      - {backend: local-vllm, model: meta-llama/Llama-3.1-8B-Instruct}
      - {backend: openai, model: gpt-4o-mini}
    spillover: {max_inflight: 48}
    compare_to: {backend: openai, model: gpt-4o-mini}
rules:
  - {when: {header: {x-data-class: confidential}}, only: self_hosted}
prices:
  gpt-4o-mini: {input: 0.15, output: 0.60, cached_input: 0.075}
"""


def test_design_example_parses_with_env() -> None:
    cfg = parse_config(GOOD, env={"TEAM_A_KEY": "sk-a"})
    assert cfg.auth.keys[0].key.get_secret_value() == "sk-a"
    assert cfg.auth.admin_key is not None and cfg.auth.admin_key.get_secret_value() == "admin"
    assert cfg.backends["local-vllm"].self_hosted
    assert not cfg.backends["openai"].self_hosted
    assert cfg.backends["local-vllm"].engine_kind == "vllm"
    assert cfg.models["chat"].spillover.max_inflight == 48
    assert cfg.prices["gpt-4o-mini"].cached_input == 0.075


def test_missing_env_var_is_named() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(GOOD, env={})
    assert any("auth.keys[0].key" in p and "TEAM_A_KEY" in p for p in exc.value.problems)


def test_expand_env_default_and_missing() -> None:
    assert expand_env("a${X:-b}c", {}) == "abc"
    assert expand_env("${X:-b}", {"X": "y"}) == "y"
    with pytest.raises(MissingEnvVar, match="NOPE"):
        expand_env("${NOPE}", {})


def test_whole_value_env_keeps_yaml_types() -> None:
    cfg = parse_config(GOOD.replace("port: 4000", "port: '${PORT:-4100}'"), env={"TEAM_A_KEY": "k"})
    assert cfg.listen.port == 4100


def test_every_problem_reported_with_its_path() -> None:
    bad = GOOD.replace(
        "backend: openai, model: gpt-4o-mini}\n    spillover",
        "backend: opnai, model: gpt-4o-mini}\n    spillover",
    )
    bad = bad.replace("max_concurrency: 64", "max_concurrency: 64, colour: blue")
    bad = bad.replace("usd_per_gpu_hour: 2.50, ", "")
    bad = bad.replace("strategy: spillover", "strategy: fastest")
    with pytest.raises(ConfigError) as exc:
        parse_config(bad, env={"TEAM_A_KEY": "k"})
    problems = exc.value.problems
    assert (
        "models.chat.targets[1].backend: unknown backend 'opnai' (known: local-vllm, openai)"
        in problems
    )
    assert "backends.local-vllm.colour: unknown key" in problems
    assert any(
        p.startswith("gpu_pools.h100: billing 'rental' needs 'usd_per_gpu_hour'") for p in problems
    )
    assert any(p.startswith("models.chat.strategy:") for p in problems)
    assert len(problems) >= 4


def test_unknown_top_level_key_and_pool_reference() -> None:
    text = """
backends:
  b: {type: openai, base_url: "http://x/v1", pool: nope}
models:
  m: {targets: [{backend: b, model: x}]}
routing: {}
"""
    with pytest.raises(ConfigError) as exc:
        parse_config(text)
    assert "routing: unknown key" in exc.value.problems
    assert any(p.startswith("backends.b.pool: unknown gpu pool 'nope'") for p in exc.value.problems)


def test_yaml_syntax_error_has_a_line() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config("backends: {a: [}\n")
    assert exc.value.problems[0].startswith("<yaml> line 1")


def test_litellm_backend_needs_provider_and_bad_url() -> None:
    text = """
backends:
  a: {type: litellm}
  b: {type: openai, base_url: "ftp://x"}
models:
  m: {targets: [{backend: a, model: x}]}
"""
    with pytest.raises(ConfigError) as exc:
        parse_config(text)
    problems = exc.value.problems
    assert any(p.startswith("backends.a: type 'litellm' needs 'provider'") for p in problems)
    assert any(p.startswith("backends.b: base_url must start with http") for p in problems)
