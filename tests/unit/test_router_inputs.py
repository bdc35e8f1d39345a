"""What routing reads from the engines: their metrics, their windows, and where to probe."""

from __future__ import annotations

from types import SimpleNamespace

import orjson
import pytest

from proxy.backends import build_backend
from proxy.config import Backend
from proxy.routing.engine_metrics import context_windows, parse_engine_metrics
from proxy.routing.health import health_url
from simulator.engine import FixedLatencyEngine
from simulator.metrics import VllmMetrics

VLLM_DP = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 7.0
vllm:num_requests_running{engine="1",model_name="meta-llama/Llama-3.1-8B-Instruct"} 5.0
vllm:num_requests_waiting{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 2.0
vllm:num_requests_waiting{engine="1",model_name="meta-llama/Llama-3.1-8B-Instruct"} 1.0
vllm:kv_cache_usage_perc{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.42
vllm:kv_cache_usage_perc{engine="1",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.61
vllm:prompt_tokens_total{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 1000.0
vllm:prompt_tokens_total{engine="1",model_name="meta-llama/Llama-3.1-8B-Instruct"} 234.0
vllm:generation_tokens_total{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 50.0
vllm:num_requests_running_other{engine="0"} 99
vllm:request_success_total{engine="0",finished_reason="stop",model_name="m"} 12.0
"""


def test_vllm_data_parallel_engines_sum_counts_and_take_the_fullest_cache() -> None:
    s = parse_engine_metrics(VLLM_DP, "vllm")
    assert (s.running, s.waiting, s.kv_cache) == (12.0, 3.0, 0.61)
    assert (s.prompt_tokens_total, s.generation_tokens_total) == (1234.0, 50.0)


def test_older_vllm_cache_name_is_the_fallback() -> None:
    old = (
        'vllm:gpu_cache_usage_perc{model_name="m"} 0.3\nvllm:num_requests_running{model_name="m"} 1'
    )
    s = parse_engine_metrics(old, "vllm")
    assert s.kv_cache == 0.3 and s.running == 1 and s.waiting is None
    both = old + '\nvllm:kv_cache_usage_perc{model_name="m"} 0.9'
    assert parse_engine_metrics(both, "vllm").kv_cache == 0.9


def test_llamacpp_server_metrics() -> None:
    text = """\
# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 321
llamacpp:tokens_predicted_total 88
llamacpp:requests_processing 2
llamacpp:requests_deferred 4
llamacpp:kv_cache_usage_ratio 0.25
"""
    s = parse_engine_metrics(text, "llamacpp")
    assert (s.running, s.waiting, s.kv_cache) == (2, 4, 0.25)
    assert (s.prompt_tokens_total, s.generation_tokens_total) == (321, 88)


def test_labels_with_spaces_braces_timestamps_and_junk_lines() -> None:
    text = (
        'vllm:num_requests_waiting{model_name="my model {v2}"} 6 1700000000000\n'
        "vllm:num_requests_running NaN-ish\n"
        "garbage line without value\n"
    )
    s = parse_engine_metrics(text, "vllm")
    assert s.waiting == 6 and s.running is None


def test_the_simulators_exposition_parses_to_its_engine_figures() -> None:
    engine = FixedLatencyEngine(0.0, 0.0)
    for old in (False, True):
        text = VllmMetrics("sim-model", old_names=old).render(engine, 17, 40)
        s = parse_engine_metrics(text, "vllm")
        assert (s.running, s.waiting, s.kv_cache) == (0.0, 0.0, 0.0)
        assert (s.prompt_tokens_total, s.generation_tokens_total) == (17.0, 40.0)


def test_context_windows_from_vllm_models_and_llamacpp_props() -> None:
    models = {
        "object": "list",
        "data": [
            {"id": "llama", "object": "model", "max_model_len": 8192},
            {"id": "lora-a", "object": "model", "max_model_len": 4096},
            {"id": "odd", "object": "model"},
        ],
    }
    assert context_windows("vllm", orjson.dumps(models)) == {"llama": 8192, "lora-a": 4096}
    props = {"default_generation_settings": {"n_ctx": 2048}, "total_slots": 1}
    assert context_windows("llamacpp", orjson.dumps(props)) == {"*": 2048}


@pytest.mark.parametrize(
    ("cfg", "url"),
    [
        ({"base_url": "http://gpu:8000/v1", "pool": "p"}, "http://gpu:8000/health"),
        (
            {"base_url": "http://gpu:8080/v1", "pool": "p", "engine": "llamacpp"},
            "http://gpu:8080/health",
        ),
        ({"base_url": "https://api.openai.com/v1"}, "https://api.openai.com/v1/models"),
        (
            {"base_url": "http://gpu:8000/v1", "pool": "p", "engine": "none"},
            "http://gpu:8000/v1/models",
        ),
        (
            {"base_url": "http://gpu:8000/v1", "pool": "p", "health_path": "/ping"},
            "http://gpu:8000/ping",
        ),
        (
            {"base_url": "http://gpu:8000/v1", "health_path": "http://side:9/ok"},
            "http://side:9/ok",
        ),
    ],
)
def test_where_health_checks_probe(cfg: dict, url: str) -> None:
    b = Backend.model_validate(cfg)
    assert health_url(build_backend("b", b), b) == url


def test_backends_without_http_are_not_probed() -> None:
    b = Backend.model_validate({"type": "litellm", "provider": "anthropic"})
    assert health_url(SimpleNamespace(), b) is None


def test_escaped_quotes_tabs_and_broken_unread_families_keep_the_scrape() -> None:
    """prometheus_client's parser reads the wanted samples (escaped quotes and `}` in a
    label value, a tab before the value); a malformed line of a family we never read, or
    a malformed wanted sample, costs that line only, never the whole scrape."""
    text = (
        "# HELP vllm:num_requests_running Number of requests.\n"
        "# TYPE vllm:num_requests_running gauge\n"
        'vllm:num_requests_running{model_name="a \\"quoted\\" } name"}\t3\n'
        'vllm:num_requests_running{model_name="b"} 2 1700000000000\n'
        'vllm:e2e_request_latency_seconds_bucket{le="0.3" 1\n'
        'vllm:num_requests_waiting{model_name="a"} not-a-number\n'
        'vllm:num_requests_waiting{model_name="b"} 4\n'
    )
    s = parse_engine_metrics(text, "vllm")
    assert (s.running, s.waiting) == (5.0, 4.0)
