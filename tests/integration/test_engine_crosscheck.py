"""The engine's own token counters beside ours: traffic that bypasses the proxy shows."""

from __future__ import annotations

import time
from pathlib import Path

import openai

from tests.support.proxy import run_proxy
from tests.support.sim import run_simulator


def test_bypass_traffic_is_visible(tmp_path: Path) -> None:
    with run_simulator(tmp_path, "vllm", args=["--speed", "20"]) as vllm:
        cfg = {
            "engine_metrics": {"interval_s": 0.2},
            "gpu_pools": {"p": {"gpus": 1, "billing": "rental", "usd_per_gpu_hour": 1.0}},
            "backends": {
                "local": {
                    "type": "openai",
                    "base_url": vllm.base_url,
                    "pool": "p",
                    "engine": "vllm",
                }
            },
            "models": {"chat": {"targets": [{"backend": "local", "model": "sim-model"}]}},
        }
        with run_proxy(tmp_path, cfg) as proxy:

            def gap(kind: str) -> float | None:
                text = proxy.metrics_text()
                if "hybridgate_engine_unmetered_tokens{" not in text:
                    return None
                return proxy.metric(
                    "hybridgate_engine_unmetered_tokens", backend="local", kind=kind
                )

            deadline = time.monotonic() + 15
            while gap("prompt") is None and time.monotonic() < deadline:
                time.sleep(0.1)
            assert gap("prompt") == 0
            via = openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0)
            for _ in range(3):
                via.chat.completions.create(
                    model="chat", max_tokens=5, messages=[{"role": "user", "content": "through"}]
                )
            direct = openai.OpenAI(base_url=vllm.base_url, api_key="x", max_retries=0)
            r = direct.chat.completions.create(
                model="sim-model",
                max_tokens=7,
                messages=[{"role": "user", "content": "around the proxy " * 10}],
            )
            expect = (r.usage.prompt_tokens, r.usage.completion_tokens)
            deadline = time.monotonic() + 15
            while (gap("prompt"), gap("completion")) != expect and time.monotonic() < deadline:
                time.sleep(0.1)
            assert (gap("prompt"), gap("completion")) == expect
            engine_completion = proxy.metric(
                "hybridgate_engine_tokens", backend="local", kind="completion"
            )
            assert engine_completion == 3 * 5 + 7
