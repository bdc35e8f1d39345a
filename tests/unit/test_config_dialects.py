"""Config of the dialects a backend speaks and of `type: anthropic` (docs/config.md)."""

from __future__ import annotations

import pytest

from proxy.config import ConfigError, parse_config
from proxy.dialects import Dialect
from proxy.request.dialect import backend_dialects

BASE = """
backends:
  claude: {type: anthropic, api_key: k}
  vllm: {type: openai, base_url: "http://127.0.0.1:8000/v1", pool: p, speaks: [openai, anthropic]}
  oai: {type: openai, base_url: "http://127.0.0.1:9000/v1"}
  openai: {type: openai, base_url: "https://api.openai.com/v1", api_key: k}
  vllm-r: {type: openai, base_url: "http://127.0.0.1:8001/v1", pool: p, speaks: [openai, responses]}
gpu_pools:
  p: {gpus: 1, billing: rental, usd_per_gpu_hour: 2}
models:
  m:
    targets:
      - {backend: claude, model: claude-sonnet-4-5, default_max_tokens: 512}
      - {backend: vllm, model: x}
"""


def test_defaults_and_dialects_per_type() -> None:
    cfg = parse_config(BASE)
    claude = cfg.backends["claude"]
    assert claude.base_url == "https://api.anthropic.com"
    assert claude.anthropic_version == "2023-06-01" and claude.default_max_tokens == 4096
    assert claude.thinking == "drop"
    assert backend_dialects(claude) == {Dialect.ANTHROPIC_MESSAGES}
    assert backend_dialects(cfg.backends["oai"]) == {
        Dialect.OPENAI_CHAT,
        Dialect.OPENAI_COMPLETIONS,
        Dialect.OPENAI_EMBEDDINGS,
    }
    # /v1/responses: OpenAI's own API by default; any other server when it says so
    assert backend_dialects(cfg.backends["openai"]) == {
        Dialect.OPENAI_CHAT,
        Dialect.OPENAI_COMPLETIONS,
        Dialect.OPENAI_EMBEDDINGS,
        Dialect.OPENAI_RESPONSES,
    }
    assert Dialect.OPENAI_RESPONSES not in backend_dialects(cfg.backends["vllm"])
    assert Dialect.OPENAI_RESPONSES in backend_dialects(cfg.backends["vllm-r"])
    assert Dialect.ANTHROPIC_MESSAGES in backend_dialects(cfg.backends["vllm"])
    assert Dialect.OPENAI_CHAT in backend_dialects(cfg.backends["vllm"])
    assert cfg.models["m"].targets[0].default_max_tokens == 512


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("  x: {type: openai, base_url: 'http://h/v1', speaks: []}", "speaks"),
        ("  x: {type: litellm, provider: bedrock, speaks: [anthropic]}", "openai only"),
        ("  x: {type: openai, base_url: 'http://h/v1', speaks: [grpc]}", "speaks"),
        ("  x: {type: anthropic, thinking: keep}", "thinking"),
        ("  x: {type: anthropic, default_max_tokens: 0}", "default_max_tokens"),
    ],
)
def test_bad_dialect_settings_are_refused_with_their_place(line: str, needle: str) -> None:
    text = BASE.replace("backends:\n", "backends:\n" + line + "\n", 1)
    with pytest.raises(ConfigError) as err:
        parse_config(text)
    assert needle in str(err.value)
