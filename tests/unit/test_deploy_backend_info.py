"""hybridgate_backend_info: the series dashboards and alerts join on to split GPU from API."""

from __future__ import annotations

from proxy.config import parse_config
from proxy.metering.prometheus import Metrics
from proxy.runtime import Runtime

CONFIG = """
gpu_pools:
  h100: {gpus: 2, usd_per_gpu_hour: 2.5}
backends:
  local: {base_url: "http://127.0.0.1:9/v1", pool: h100}
  openai: {base_url: "http://127.0.0.1:9/v1", api_key: sk-test}
models:
  chat:
    targets: [{backend: local, model: m}, {backend: openai, model: gpt-4o-mini}]
"""


def test_backend_info_names_kind_and_pool_from_config() -> None:
    metrics = Metrics()
    Runtime(parse_config(CONFIG), metrics)
    samples = [
        s.labels
        for family in metrics.registry.collect()
        if family.name == "hybridgate_backend_info"
        for s in family.samples
        if s.value == 1
    ]
    assert sorted(samples, key=lambda lab: lab["backend"]) == [
        {"backend": "local", "kind": "self_hosted", "pool": "h100"},
        {"backend": "openai", "kind": "api", "pool": ""},
    ]
