"""The live report compares each alias with an API model of its own kind, at that
model's rates: an embeddings alias is never costed at a chat model's prices."""

from __future__ import annotations

import pytest

from costing.api import api_cost, blended_price
from costing.prices import ModelPrice, PriceTable
from proxy.config import parse_config
from proxy.live.compare import Context
from proxy.live.report import build_report
from proxy.live.window import Window
from proxy.metering.events import UsageEvent
from proxy.metering.pricing import pool_pricing

T0 = 1_800_000_000.0
CONFIG = """
gpu_pools:
  gpu: {gpus: 1, billing: rental, usd_per_gpu_hour: 2.5, capacity_tokens_per_s: 5000}
backends:
  vllm: {type: openai, base_url: "http://127.0.0.1:9/v1", pool: gpu}
  api: {type: openai, base_url: "http://127.0.0.1:8/v1"}
models:
  chat:
    targets: [{backend: vllm, model: llama}, {backend: api, model: gpt-chat}]
  embed:
    targets: [{backend: vllm, model: bge}]
    compare_to: {model: text-emb}
  embed-wrong:
    targets: [{backend: vllm, model: bge}]
    compare_to: {model: gpt-chat}
"""
CHAT = ModelPrice.per_million(2, 8)
EMB = ModelPrice.per_million(0.02, 0)
# (alias, endpoint, prompt, completion) per request; 50 of each kind.
TRAFFIC = [("chat", "chat", 100, 50), ("embed", "embeddings", 1000, 0),
           ("embed-wrong", "embeddings", 1000, 0)]  # fmt: skip


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _report() -> dict:
    config = parse_config(CONFIG)
    prices = PriceTable(
        {"gpt-chat": CHAT, "text-emb": EMB}, kinds={"gpt-chat": "chat", "text-emb": "embeddings"}
    )
    clock = Clock(T0)
    w = Window(clock)
    for i in range(50):
        for alias, endpoint, prompt, completion in TRAFFIC:
            clock.t = T0 + i * 10
            w.observe(
                UsageEvent(str(i), clock.t, endpoint, alias=alias, backend="vllm",
                           model="llama", pool="gpu", prompt_tokens=prompt,
                           completion_tokens=completion, cost_usd=0.001, gpu_seconds=0.1)
            )  # fmt: skip
    clock.t = T0 + 600
    w.sample_pools(
        [{"pool": "gpu", "provisioned_gpu_seconds": 600, "busy_gpu_seconds": 100,
          "fixed_cost_usd": 0.3}]
    )  # fmt: skip
    pricing = {"gpu": pool_pricing(config.gpu_pools["gpu"], config.engineering,
                                   config.gpu_pools, 730.0)}  # fmt: skip
    return build_report(w.view("1h"), Context(config, prices, pricing, 730.0))


def test_each_alias_is_compared_at_its_own_kind_and_rates() -> None:
    r = _report()
    (c,) = r["comparisons"]
    assert c["aliases"] == ["chat", "embed"]
    assert c["api_models"] == {"chat": "gpt-chat", "embed": "text-emb"}
    assert any("'embed-wrong' has no comparison" in n and "embeddings" in n for n in r["notes"])
    # API-only = each alias's tokens at its own model's rates, projected to a month.
    in_window = 50 * api_cost(CHAT, 100, 50) + 50 * api_cost(EMB, 1000, 0)
    per_month = c["profile"]["requests_per_month"] / c["traffic"]["requests"]
    assert c["scenarios"]["api_only"]["monthly_usd"] == pytest.approx(in_window * per_month)


def test_blended_price_reproduces_each_part_cost() -> None:
    parts = [(CHAT, 700.0, 300.0, 200.0), (EMB, 5000.0, 0.0, 0.0)]
    blend = blended_price(parts)
    total = sum(api_cost(p, pr, co, ca) for p, pr, co, ca in parts)
    assert api_cost(blend, 5700, 300, 200) == pytest.approx(total)


def test_litellm_table_knows_what_kind_a_model_serves() -> None:
    prices = PriceTable.load()
    assert prices.kind("text-embedding-3-small") == "embeddings"
    assert prices.kind("gpt-4o-mini") == "chat"
    assert prices.kind("openai/gpt-4o-mini") == "chat"
    assert prices.kind("no-such-model-anywhere") is None
