"""vLLM metric exposition and the OpenAI rate-limit headers."""

from __future__ import annotations

from simulator.engine import Engine, Sequence, StepModel
from simulator.metrics import Histogram, VllmMetrics
from simulator.ratelimit import RateWindow, format_reset
from tests.support.exposition import samples_by_key


def test_vllm_names_labels_and_histograms():
    m = VllmMetrics("llama")
    seq = Sequence("a", prompt_tokens=10, max_tokens=2)
    seq.arrived, seq.first_token, seq.finished = 100.0, 100.03, 100.4
    m.on_finish(seq)
    text = m.render(Engine(StepModel()), prompt_tokens=10, generation_tokens=2)
    s = samples_by_key(text)
    lb = 'engine="0",model_name="llama"'
    assert s[f"vllm:num_requests_running{{{lb}}}"] == 0
    assert s[f"vllm:num_requests_waiting{{{lb}}}"] == 0
    assert s[f"vllm:kv_cache_usage_perc{{{lb}}}"] == 0
    assert s[f"vllm:prompt_tokens_total{{{lb}}}"] == 10
    assert s[f"vllm:generation_tokens_total{{{lb}}}"] == 2
    assert s[f'vllm:request_success_total{{{lb},finished_reason="length"}}'] == 1
    assert s[f'vllm:e2e_request_latency_seconds_bucket{{{lb},le="0.3"}}'] == 0
    assert s[f'vllm:e2e_request_latency_seconds_bucket{{{lb},le="0.5"}}'] == 1
    assert s[f'vllm:time_to_first_token_seconds_bucket{{{lb},le="0.04"}}'] == 1
    assert s[f"vllm:time_to_first_token_seconds_count{{{lb}}}"] == 1
    assert "# TYPE vllm:e2e_request_latency_seconds histogram" in text


def test_old_vllm_names():
    text = VllmMetrics("m", old_names=True).render(Engine(StepModel()), 0, 0)
    assert 'vllm:gpu_cache_usage_perc{model_name="m"} 0.0' in text
    assert "kv_cache_usage_perc" not in text


def test_histogram_is_cumulative_with_inf():
    h = Histogram((1.0, 2.0))
    for v in (0.5, 1.0, 1.5, 9.0):
        h.observe(v)
    assert h.render("x", 'a="b"')[:3] == [
        'x_bucket{a="b",le="1.0"} 2.0',
        'x_bucket{a="b",le="2.0"} 3.0',
        'x_bucket{a="b",le="+Inf"} 4.0',
    ]


def test_rate_window_headers_and_enforcement():
    now = [0.0]
    w = RateWindow(2, clock=lambda: now[0])
    ok1, h1 = w.take()
    ok2, h2 = w.take()
    ok3, _ = w.take()
    assert (ok1, ok2, ok3) == (True, True, False)
    assert h1["x-ratelimit-limit-requests"] == "2" and h2["x-ratelimit-remaining-requests"] == "0"
    now[0] = 60.0
    assert w.take()[0]
    assert RateWindow(None).take()[0]
    assert (
        format_reset(0.12) == "120ms"
        and format_reset(1.5) == "1.5s"
        and format_reset(360) == "6m0s"
    )
