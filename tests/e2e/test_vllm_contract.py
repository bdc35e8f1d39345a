"""The simulator kept honest: the same requests to the real vLLM and to the simulator's vLLM
mode, compared by shape (JSON key paths of answers, of stream chunks and of errors; statuses;
error types, params and codes; which chunks carry usage; the metric names the proxy reads).

The simulator stands in for vLLM in most of the suite; wherever the two differ here, the
simulator is what changes (simulator/responses.py, simulator/parse.py, simulator/metrics.py).
Values that are the model's own (text, ids, timestamps, token counts) are never compared.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from proxy.routing.engine_metrics import NAMES, parse_engine_metrics
from tests.support.exposition import parse_samples
from tests.support.sim import SimHandle, run_simulator
from tests.support.vllm import VllmServer

pytestmark = [pytest.mark.e2e, pytest.mark.serial, pytest.mark.vllm]

# vLLM's per-request histograms bench/vllm_gpu_seconds.py reads, beside the proxy's names.
PER_REQUEST = (
    "vllm:request_inference_time_seconds",
    "vllm:request_prefill_time_seconds",
    "vllm:request_decode_time_seconds",
    "vllm:request_queue_time_seconds",
)


@pytest.fixture(scope="module")
def sim(vllm_server: VllmServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimHandle]:
    tmp = tmp_path_factory.mktemp("contract")
    args = ["--model", vllm_server.model, "--max-model-len", str(vllm_server.max_model_len)]
    args += ["--speed", "50"]
    with run_simulator(tmp, "vllm", args=args) as handle:
        yield handle


def key_paths(value: Any, prefix: str = "") -> set[str]:
    """Every key path of a JSON value: `a.b`, lists as `a[]` (their items' paths merged)."""
    out: set[str] = set()
    if isinstance(value, dict):
        for k, v in value.items():
            path = f"{prefix}.{k}" if prefix else k
            out.add(path)
            out |= key_paths(v, path)
    elif isinstance(value, list):
        for item in value:
            out |= key_paths(item, prefix + "[]")
    return out


def post(base: str, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{base}{path}", json=body, timeout=120)


def chunks(base: str, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """A stream's data events as JSON, [DONE] checked and left out."""
    out: list[dict[str, Any]] = []
    done = False
    with httpx.stream("POST", f"{base}{path}", json=body, timeout=120) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line[len("data: ") :]
            if data == "[DONE]":
                done = True
                continue
            assert not done, "data after [DONE]"
            out.append(orjson.loads(data))
    assert done
    return out


def both(vllm: VllmServer, sim: SimHandle) -> list[tuple[str, str]]:
    return [("vllm", vllm.base_url), ("sim", sim.base_url)]


CHAT = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 3, "ignore_eos": True}
COMPLETION = {"prompt": "Once upon a time", "max_tokens": 3, "ignore_eos": True}


@pytest.mark.parametrize(
    ("path", "body"),
    [("/chat/completions", CHAT), ("/completions", COMPLETION)],
    ids=["chat", "completions"],
)
def test_answers_have_the_same_keys(
    vllm_server: VllmServer, sim: SimHandle, path: str, body: dict[str, Any]
) -> None:
    shapes = {}
    for name, base in both(vllm_server, sim):
        r = post(base, path, {"model": vllm_server.model, **body})
        assert r.status_code == 200, (name, r.text)
        assert r.headers["content-type"].startswith("application/json")
        shapes[name] = key_paths(r.json())
    assert shapes["sim"] == shapes["vllm"], {
        "only in vllm": sorted(shapes["vllm"] - shapes["sim"]),
        "only in sim": sorted(shapes["sim"] - shapes["vllm"]),
    }


STREAM_OPTIONS = {
    "none": None,
    "include_usage": {"include_usage": True},
    "continuous": {"include_usage": True, "continuous_usage_stats": True},
}


@pytest.mark.parametrize("options", list(STREAM_OPTIONS), ids=list(STREAM_OPTIONS))
@pytest.mark.parametrize(
    ("path", "body"),
    [("/chat/completions", CHAT), ("/completions", COMPLETION)],
    ids=["chat", "completions"],
)
def test_stream_chunks_have_the_same_keys_and_usage_pattern(
    vllm_server: VllmServer, sim: SimHandle, path: str, body: dict[str, Any], options: str
) -> None:
    req: dict[str, Any] = {"model": vllm_server.model, **body, "stream": True}
    if STREAM_OPTIONS[options] is not None:
        req["stream_options"] = STREAM_OPTIONS[options]
    shapes: dict[str, Any] = {}
    for name, base in both(vllm_server, sim):
        got = chunks(base, path, req)
        shapes[name] = {
            # which chunks carry usage, and which have no choices: first, middle, last
            "usage": [("usage" in c and c["usage"] is not None) for c in got[:1] + got[-2:]],
            "empty_choices": [not c["choices"] for c in got[:1] + got[-2:]],
            "keys": set().union(*(key_paths(c) for c in got)),
            "first": key_paths(got[0]),
            "last": key_paths(got[-1]),
        }
    for part in ("usage", "empty_choices", "first", "last", "keys"):
        v, s = shapes["vllm"][part], shapes["sim"][part]
        if isinstance(v, set):
            assert s == v, (part, {"only in vllm": sorted(v - s), "only in sim": sorted(s - v)})
        else:
            assert s == v, (part, v, s)


LONG = " ".join(["word"] * 2300)
ERRORS = {
    "unknown_model": ("/chat/completions", {"model": "no-such-model", **CHAT}),
    "too_long_prompt": (
        "/chat/completions",
        {"messages": [{"role": "user", "content": LONG}], "max_tokens": 4},
    ),
    "max_tokens_too_large": (
        "/chat/completions",
        {"messages": [{"role": "user", "content": "Hi."}], "max_tokens": 100_000},
    ),
    "too_long_completion_prompt": ("/completions", {"prompt": LONG, "max_tokens": 4}),
}


@pytest.mark.parametrize("case", list(ERRORS), ids=list(ERRORS))
def test_errors_have_the_same_status_shape_type_param_and_code(
    vllm_server: VllmServer, sim: SimHandle, case: str
) -> None:
    path, body = ERRORS[case]
    seen = {}
    for name, base in both(vllm_server, sim):
        r = post(base, path, {"model": vllm_server.model, **body})
        err = r.json()
        inner = err.get("error", {})
        seen[name] = {
            "status": r.status_code,
            "keys": key_paths(err),
            "type": inner.get("type"),
            "param": inner.get("param"),
            "code": inner.get("code"),
        }
    assert seen["sim"] == seen["vllm"], seen


def test_models_list_has_the_same_keys(vllm_server: VllmServer, sim: SimHandle) -> None:
    shapes = {}
    for name, base in both(vllm_server, sim):
        r = httpx.get(f"{base}/models", timeout=10)
        assert r.status_code == 200
        data = r.json()
        assert [m["id"] for m in data["data"]] == [vllm_server.model]
        assert data["data"][0]["max_model_len"] == vllm_server.max_model_len
        shapes[name] = key_paths(data)
    assert shapes["sim"] == shapes["vllm"], {
        "only in vllm": sorted(shapes["vllm"] - shapes["sim"]),
        "only in sim": sorted(shapes["sim"] - shapes["vllm"]),
    }


def test_metric_names_the_proxy_reads_are_on_both(vllm_server: VllmServer, sim: SimHandle) -> None:
    """Every name the engine-metrics reader uses for vLLM (but the pre-0.10 fallback) and the
    per-request histograms are on both pages, with the same label names; the reader gets a
    value for every field from both."""
    post(sim.base_url, "/chat/completions", {"model": vllm_server.model, **CHAT})
    pages = {
        "vllm": vllm_server.metrics_text(),
        "sim": httpx.get(f"{sim.url}/metrics", timeout=10).text,
    }
    wanted = [n for n in NAMES["vllm"] if n != "vllm:gpu_cache_usage_perc"]
    for name, text in pages.items():
        samples = parse_samples(text)
        labels = {n: set(lab) for n, lab, _ in samples}
        for metric in wanted:
            assert metric in labels, (name, metric)
        for hist in PER_REQUEST:
            assert f"{hist}_sum" in labels and f"{hist}_count" in labels, (name, hist)
        snap = parse_engine_metrics(text, "vllm")
        for field in ("running", "waiting", "kv_cache", "prompt_tokens_total"):
            assert getattr(snap, field) is not None, (name, field)
        pages[name] = {m: labels[m] for m in wanted}  # type: ignore[assignment]
    assert pages["sim"] == pages["vllm"]
