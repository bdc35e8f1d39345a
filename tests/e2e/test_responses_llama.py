"""OpenAI's Responses API through hybridgate to a real llama-server (llama.cpp + Gemma 3
270M), which serves chat only: the proxy translates. The official `openai` SDK and
openai-node see real answers, their usage equals the engine's own counters and the
proxy's books, and a conversation continued with `previous_response_id` reaches the
engine with its earlier turns (the engine counts them as prompt tokens)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.support.llama import LlamaServer
from tests.support.openai_node import run_node
from tests.support.proxy import ProxyHandle, read_log, run_proxy

pytestmark = [pytest.mark.e2e, pytest.mark.serial]
KEY = "sk-hg-resp-llama-5e1a"


@pytest.fixture(scope="module")
def stack(
    llama_server: LlamaServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ProxyHandle, LlamaServer, Path]]:
    tmp = tmp_path_factory.mktemp("responses-llama")
    log = tmp / "requests.jsonl"
    cfg = {
        "auth": {"keys": [{"key": KEY, "tenant": "team-a"}]},
        "request_log": {"path": str(log)},
        "gpu_pools": {"cpu": {"gpus": 1, "billing": "rental", "usd_per_gpu_hour": 1.2}},
        "backends": {
            "llama": {
                "type": "openai",
                "base_url": llama_server.base_url,
                "pool": "cpu",
                "engine": "llamacpp",
            }
        },
        "models": {"local": {"targets": [{"backend": "llama", "model": llama_server.model}]}},
    }
    with run_proxy(tmp, cfg) as proxy:
        yield proxy, llama_server, log


def engine_tokens(llama: LlamaServer) -> tuple[float, float]:
    m = llama.metrics()
    return (
        m["llamacpp:prompt_tokens_total"] + m.get("llamacpp:prompt_tokens_cached_total", 0),
        m["llamacpp:tokens_predicted_total"],
    )


def metered(proxy: ProxyHandle, log: Path) -> list[dict[str, Any]]:
    return read_log(log, int(proxy.metric("hybridgate_requests_total")))


def test_sdk_create_stream_and_a_second_turn(stack: Any) -> None:
    proxy, llama, log = stack
    client = openai.OpenAI(base_url=proxy.base_url, api_key=KEY, max_retries=0, timeout=60)
    n0 = len(metered(proxy, log))
    e0 = engine_tokens(llama)
    r1 = client.responses.create(
        model="local", input="Name a colour.", max_output_tokens=16, temperature=0
    )
    assert r1.id.startswith("resp_") and r1.output_text and r1.usage is not None
    # Cut at max_output_tokens the stream ends in response.incomplete, as OpenAI's does
    # (the SDK's get_final_response() wants response.completed: the last event is read).
    events = list(
        client.responses.create(
            model="local", input="Name a fruit.", max_output_tokens=16, temperature=0, stream=True
        )
    )
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created"
    assert kinds[-1] in ("response.completed", "response.incomplete")
    r2 = events[-1].response  # type: ignore[union-attr]
    assert "response.output_text.delta" in kinds and r2.usage is not None
    r3 = client.responses.create(
        model="local",
        input="Repeat the colour you named.",
        previous_response_id=r1.id,
        max_output_tokens=16,
        temperature=0,
    )
    assert r3.previous_response_id == r1.id and r3.usage is not None
    # The earlier turn went along: more prompt than the new input alone.
    assert r3.usage.input_tokens > r1.usage.input_tokens
    e1 = engine_tokens(llama)
    seen_out = r1.usage.output_tokens + r2.usage.output_tokens + r3.usage.output_tokens
    seen_in = r1.usage.input_tokens + r2.usage.input_tokens + r3.usage.input_tokens
    assert e1[1] - e0[1] == seen_out
    assert e1[0] - e0[0] == seen_in
    evs = metered(proxy, log)[n0:]
    assert [e["endpoint"] for e in evs] == ["responses"] * 3
    assert sum(e["completion_tokens"] for e in evs) == seen_out
    assert sum(e["prompt_tokens"] for e in evs) == seen_in
    assert all(e["gpu_seconds"] > 0 and not e["estimated"] for e in evs)
    assert client.responses.retrieve(r1.id).output_text == r1.output_text


def test_openai_node(stack: Any) -> None:
    proxy, llama, log = stack
    n0 = len(metered(proxy, log))
    e0 = engine_tokens(llama)
    seen = run_node("responses.mjs", proxy.base_url, KEY, "local", "16", timeout=120)
    e1 = engine_tokens(llama)
    usages = [seen[k]["usage"] for k in ("create", "stream", "next")]
    assert e1[1] - e0[1] == sum(u["output_tokens"] for u in usages)
    assert e1[0] - e0[0] == sum(u["input_tokens"] for u in usages)
    evs = metered(proxy, log)[n0:]
    assert [e["completion_tokens"] for e in evs] == [u["output_tokens"] for u in usages]
    assert seen["next"]["previous"] == seen["create"]["id"]
    assert seen["after_delete"] == 404
