"""The live report from a window of known shape, checked against a hand computation.

Three hours of traffic at 100, 300 and 200 requests per hour (600 in all, 100 of them
spilled to the API), 100 prompt + 50 completion tokens each, on a pool whose GPU carries
0.05 requests/s: the peak hour needs 2 GPUs, one GPU plus the API for the peaks is the
cheapest, and self-hosting breaks even on its second GPU step.
"""

from __future__ import annotations

import json
import math
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction as Q

from costing.prices import ModelPrice, PriceTable
from proxy.config import parse_config
from proxy.live.compare import Context, regroup
from proxy.live.report import build_report
from proxy.live.window import Window
from proxy.metering.events import UsageEvent
from proxy.metering.pricing import pool_pricing

T0 = 1_800_000_000.0 - 1_800_000_000.0 % 3600  # a whole hour in unix time
HOURLY = (100, 300, 200)
CONFIG = """
auth: {admin_key: adm}
engineering: {setup_hours: 40, hourly_rate_usd: 100, amortize_months: 12,
              maintenance_hours_per_month: 5}
gpu_pools:
  gpu: {gpus: 1, billing: rental, usd_per_gpu_hour: 2.5, capacity_requests_per_s: 0.05}
backends:
  vllm: {type: openai, base_url: "http://127.0.0.1:9/v1", pool: gpu}
  api: {type: openai, base_url: "http://127.0.0.1:8/v1"}
models:
  chat:
    strategy: spillover
    targets: [{backend: vllm, model: llama}, {backend: api, model: api-model}]
    compare_to: {model: api-model}
  frontier:
    targets: [{backend: api, model: big-model}]
prices:
  api-model: {input: 100, output: 400}
  big-model: {input: 1, output: 1}
"""


def cents(x: float | Q) -> Decimal:
    return Decimal(str(float(x))).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make_report(window: str = "24h") -> dict:
    config = parse_config(CONFIG)
    prices = PriceTable(
        {
            "api-model": ModelPrice.per_million(100, 400),
            "big-model": ModelPrice.per_million(1, 1),
        }
    )
    clock = Clock(T0)
    w = Window(clock)
    n = 0
    for hour, count in enumerate(HOURLY):
        for i in range(count):
            clock.t = T0 + hour * 3600 + i * (3300 // count)
            on_api = n % 6 == 5
            w.observe(
                UsageEvent(
                    request_id=str(n),
                    started_at=clock.t,
                    endpoint="chat",
                    alias="chat",
                    backend="api" if on_api else "vllm",
                    model="api-model" if on_api else "llama",
                    pool=None if on_api else "gpu",
                    prompt_tokens=100,
                    completion_tokens=50,
                    cost_usd=0.03 if on_api else 0.001,
                    counterfactual_usd=0.0001 if on_api else 0.03,
                    gpu_seconds=0.0 if on_api else 0.4,
                )
            )
            n += 1
    clock.t = T0 + 3 * 3600 - 30
    w.observe(
        UsageEvent("f", clock.t, "chat", alias="frontier", backend="api", model="big-model",
                   prompt_tokens=7, completion_tokens=3, cost_usd=0.5)
    )  # fmt: skip
    ws = clock.t - T0
    w.sample_pools(
        [{"pool": "gpu", "provisioned_gpu_seconds": ws, "busy_gpu_seconds": ws / 4,
          "fixed_cost_usd": ws * 2.5 / 3600 * 0.75}]
    )  # fmt: skip
    pricing = {"gpu": pool_pricing(config.gpu_pools["gpu"], config.engineering,
                                   config.gpu_pools, 730.0)}  # fmt: skip
    return build_report(w.view(window), Context(config, prices, pricing, 730.0))


def test_report_equals_the_hand_computation_to_the_cent() -> None:
    r = make_report()
    json.dumps(r, allow_nan=False)  # valid JSON, nothing infinite
    ws = Q(3 * 3600 - 30)
    assert r["inputs"]["window_seconds"] == float(ws)
    spm = Q(730 * 3600)
    (c,) = r["comparisons"]
    assert c["pool"] == "gpu" and c["aliases"] == ["chat"] and c["api_model"] == "api-model"
    # Tokens and volume: the frontier request is in the traffic, not in the comparison.
    assert r["traffic"]["requests"] == 601
    assert c["traffic"]["requests"] == 600
    assert c["traffic"]["prompt_tokens"] == 60_000 and c["traffic"]["completion_tokens"] == 30_000
    assert c["traffic"]["api_requests"] == 100
    assert c["load_curve"] == [100, 300, 200]
    volume = 600 * spm / ws
    assert cents(c["profile"]["requests_per_month"]) == cents(volume)
    assert r["today_requests_per_month"] == c["profile"]["requests_per_month"]
    assert cents(r["projected"]["requests_per_month"]) == cents(601 * spm / ws)
    # Prices: $100/1M in, $400/1M out → 100 × 1e-4 + 50 × 4e-4 = $0.03 a request.
    a = 100 * Q(100, 10**6) + 50 * Q(400, 10**6)
    assert a == Q(3, 100)
    gpu_month = Q(5, 2) * 730  # $1,825
    eng = Q(40 * 100, 12) + 5 * 100  # $833.33
    # api_only
    assert cents(r["scenarios"]["api_only"]) == cents(volume * a)
    # selfhosted_only: peak hour 300/200 of the mean → peak rps / 0.05 → 2 GPUs.
    mean_rps = volume / spm
    peak = mean_rps * Q(300 * 3, 600)
    gpus = math.ceil(peak / Q(5, 100))
    assert gpus == 2
    assert cents(r["scenarios"]["selfhosted_only"]) == cents(gpus * gpu_month + eng)
    # hybrid_current: today's 1 GPU + engineering + the API spend, projected.
    assert cents(r["scenarios"]["hybrid_current"]) == cents(
        gpu_month + eng + 100 * Q(3, 100) * spm / ws
    )

    # hybrid_optimal: k = 0, 1, 2 GPUs; the API takes what exceeds k × 0.05 req/s in
    # each hour-of-day interval (a third of the month each).
    def hybrid(k: int) -> Q:
        if k == 0:
            return volume * a
        spilled = sum(max(mean_rps * Q(h * 3, 600) - k * Q(5, 100), Q(0)) * spm / 3 for h in HOURLY)
        return k * gpu_month + eng + spilled * a

    best = min(range(3), key=hybrid)
    assert best == 1
    assert cents(r["scenarios"]["hybrid_optimal"]) == cents(hybrid(1))
    assert c["scenarios"]["hybrid_optimal"]["gpus"] == 1
    # Breakeven: one GPU carries 0.05 × month / 1.5 requests; on step j self-hosted costs
    # j × $1,825 + $833.33. Step 1 never reaches the API line; on step 2 the first whole
    # volume with 2 × 1825 + 833.33 <= 0.03 × V.
    per_gpu = Q(5, 100) * spm / Q(3, 2)
    assert gpu_month + eng > a * per_gpu
    expected = math.ceil((2 * gpu_month + eng) / a)
    assert per_gpu < expected <= 2 * per_gpu
    assert r["breakeven_requests_per_month"] == expected
    assert c["breakeven"]["crosses_back"] is True
    # Today's measured split (1 in 6 to the API) beats the model's best k = 1 split.
    assert r["scenarios"]["hybrid_current"] < r["scenarios"]["hybrid_optimal"]
    assert r["recommendation"].endswith(
        "Today's routing is the cheapest option at "
        f"${cents(gpu_month + eng + 100 * Q(3, 100) * spm / ws):,}/month. Break-even is at "
        f"149K requests/month ({expected:,}); you are at 146K."
    )
    # Every scenario shows the inputs it came from.
    assert c["scenarios"]["api_only"]["inputs"]["requests_per_month"] == pytest_approx(volume)
    assert r["inputs"]["projection"].startswith("per month = value in window")


def pytest_approx(x: Q) -> object:
    import pytest

    return pytest.approx(float(x), rel=1e-12)


def test_spend_pools_and_series_add_up() -> None:
    r = make_report()
    spend = r["spend"]
    assert math.isclose(spend["actual_usd"], 100 * 0.03 + 500 * 0.001 + 0.5)
    assert math.isclose(spend["by_backend"]["api"]["actual_usd"], 100 * 0.03 + 0.5)
    assert spend["by_backend"]["vllm"]["self_hosted"] is True
    pool = r["pools"]["gpu"]
    assert math.isclose(pool["utilization"], 0.25)
    assert math.isclose(pool["idle_usd"], pool["idle_gpu_seconds"] * 2.5 / 3600)
    series = r["series"]
    # 3 hours of minutes → 180 buckets → charted at 1-minute resolution.
    assert series["interval_seconds"] == 60
    assert math.isclose(sum(series["requests"]), 601)
    assert math.isclose(
        sum(sum(v) for v in series["spend_by_backend"].values()), spend["actual_usd"]
    )
    chart = r["comparisons"][0]["chart"]
    assert chart["today_requests_per_month"] in chart["volumes"]
    assert chart["breakeven_requests_per_month"] in chart["volumes"]
    i = chart["volumes"].index(chart["breakeven_requests_per_month"])
    assert chart["selfhosted_only"][i] <= chart["api_only"][i]


def test_one_hour_window_uses_minute_intervals() -> None:
    r = make_report("1h")
    (c,) = r["comparisons"]
    assert c["load_curve_interval_seconds"] == 60
    assert len(c["load_curve"]) == 60 and sum(c["load_curve"]) == 200
    assert r["inputs"]["window_seconds"] == 3600 - 30 - 60 + 60  # 59 whole minutes + 59.5


def test_regroup_aligns_to_absolute_intervals() -> None:
    assert regroup([1, 2, 3, 4], t0=120.0, width=60, interval=180) == [1, 9]
    assert regroup([1, 2], t0=0.0, width=60, interval=60) == [1, 2]


def test_capacity_is_measured_when_the_pool_saturates() -> None:
    """A minute with the pool busy 95% of it and its spillover limit (4) in flight: the
    report plans with the tokens per busy GPU-second measured in that minute."""
    config = parse_config(
        CONFIG.replace(
            "strategy: spillover", "strategy: spillover\n    spillover: {max_inflight: 4}"
        )
    )
    prices = PriceTable({"api-model": ModelPrice.per_million(100, 400),
                         "big-model": ModelPrice.per_million(1, 1)})  # fmt: skip
    clock = Clock(T0)
    w = Window(clock, pool_inflight=lambda pool: 3)  # 3 left in flight: 4 at the peak
    for i in range(120):  # minute 0: 120 requests of 150 tokens on the GPU
        clock.t = T0 + i * 0.5
        w.observe(
            UsageEvent(
                str(i),
                clock.t,
                "chat",
                alias="chat",
                backend="vllm",
                model="llama",
                pool="gpu",
                prompt_tokens=100,
                completion_tokens=50,
                gpu_seconds=0.4,
            )
        )
    clock.t = T0 + 59.9  # the sample lands in the minute it is taken
    w.sample_pools([{"pool": "gpu", "provisioned_gpu_seconds": 60.0, "busy_gpu_seconds": 57.0,
                     "fixed_cost_usd": 0.0}])  # fmt: skip
    pricing = {"gpu": pool_pricing(config.gpu_pools["gpu"], config.engineering,
                                   config.gpu_pools, 730.0)}  # fmt: skip
    r = build_report(w.view("1h"), Context(config, prices, pricing, 730.0), chart=False)
    cap = r["comparisons"][0]["capacity"]
    assert cap["source"] == "measured while saturated"
    assert cap["saturated_minutes"] == 1
    assert cap["tokens_per_gpu_s"] == 120 * 150 / 57.0
    assert r["pools"]["gpu"]["peak_inflight"] == 4
    # The scenarios plan with it: 150 tokens a request → requests/s per GPU.
    inputs = r["comparisons"][0]["scenarios"]["selfhosted_only"]["inputs"]
    assert math.isclose(inputs["capacity_rps_per_gpu"], 120 * 150 / 57.0 / 150)


def _report_for(config_text: str, prices: dict[str, ModelPrice]) -> dict:
    config = parse_config(config_text)
    clock = Clock(T0)
    w = Window(clock)
    for i in range(10):
        clock.t = T0 + i
        w.observe(UsageEvent(str(i), clock.t, "chat", alias="chat", backend="api",
                             model="api-model", prompt_tokens=100, completion_tokens=50,
                             cost_usd=0.03))  # fmt: skip
    clock.t = T0 + 30
    pricing = {
        name: pool_pricing(pool, config.engineering, config.gpu_pools, 730.0)
        for name, pool in config.gpu_pools.items()
    }
    report = build_report(w.view("1h"), Context(config, PriceTable(prices), pricing, 730.0))
    json.dumps(report, allow_nan=False)
    return report


def test_api_only_config_reports_spend_without_a_comparison() -> None:
    r = _report_for(
        """
backends: {api: {type: openai, base_url: "http://127.0.0.1:8/v1"}}
models: {chat: {targets: [{backend: api, model: api-model}]}}
""",
        {"api-model": ModelPrice.per_million(100, 400)},
    )
    assert r["comparisons"] == [] and r["scenarios"] == {}
    assert r["breakeven_requests_per_month"] is None
    assert "No comparison to make" in r["recommendation"]
    assert math.isclose(r["spend"]["actual_usd"], 0.3)


def test_serverless_pool_has_no_hybrid_but_a_breakeven() -> None:
    r = _report_for(
        """
engineering: {setup_hours: 10, hourly_rate_usd: 100, amortize_months: 10}
gpu_pools:
  sl: {billing: serverless, serverless_usd_per_gpu_second: 0.001, capacity_requests_per_s: 2}
backends:
  gpu: {type: openai, base_url: "http://127.0.0.1:9/v1", pool: sl}
  api: {type: openai, base_url: "http://127.0.0.1:8/v1"}
models:
  chat: {targets: [{backend: gpu, model: llama}, {backend: api, model: api-model}]}
""",
        {"api-model": ModelPrice.per_million(100, 400)},
    )
    (c,) = r["comparisons"]
    assert set(c["scenarios"]) == {"api_only", "selfhosted_only", "hybrid_current"}
    assert c["chart"]["hybrid_optimal"] == [None] * len(c["chart"]["volumes"])
    # Serverless: $100/month fixed; $0.0005 of GPU time a request against $0.03 on the API.
    expected = math.ceil(Q(100) / (Q(3, 100) - Q(1, 1000) / 2))
    assert r["breakeven_requests_per_month"] == expected
