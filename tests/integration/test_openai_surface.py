"""What the official openai SDK relies on beyond the three POST routes: `models.retrieve`,
and a request id on every answer that leads to the request in the books."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.proxy import ProxyHandle, read_log
from tests.support.sim import SimHandle
from tests.support.stack import run_stack

KEY = "sk-surface-client-key-000111"
MSGS = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ProxyHandle, Path]]:
    tmp = tmp_path_factory.mktemp("surface")
    log = tmp / "requests.jsonl"
    # The vLLM-like simulator sends no x-request-id, the API-like one its own.
    with run_stack(tmp, lambda vllm, api: _config(vllm, api, log), local_args=(), api_args=()) as s:
        yield s.proxy, log


def _config(vllm: SimHandle, api: SimHandle, log: Path) -> dict[str, Any]:
    return {
        "auth": {"keys": [{"key": KEY, "tenant": "t"}]},
        "gpu_pools": {"gpu": {"gpus": 1, "usd_per_gpu_hour": 1.0}},
        "backends": {
            "vllm": {"base_url": vllm.base_url, "pool": "gpu", "engine": "vllm"},
            "api": {"base_url": api.base_url, "api_key": "sk-x"},
            "dead": {"base_url": "http://127.0.0.1:9/v1", "api_key": "sk-x"},
        },
        "models": {
            "chat": {"targets": [{"backend": "vllm", "model": "sim-model"}]},
            "frontier": {"targets": [{"backend": "api", "model": "gpt-4o-mini"}]},
            "gone": {"targets": [{"backend": "dead", "model": "gpt-4o-mini"}]},
            "org/model-v1": {"targets": [{"backend": "vllm", "model": "sim-model"}]},
        },
        "prices": {"gpt-4o-mini": {"input": 0.15, "output": 0.6}},
        "health_checks": {"enabled": False},
        "request_log": {"path": str(log)},
    }


def _client(p: ProxyHandle, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=p.base_url, api_key=key, max_retries=0)


def test_models_retrieve_serves_aliases_and_openai_404(
    stack: tuple[ProxyHandle, Path],
) -> None:
    p, _ = stack
    client = _client(p)
    listed = {m.id: m for m in client.models.list()}
    for alias in ("chat", "frontier", "org/model-v1"):
        model = client.models.retrieve(alias)
        assert model == listed[alias]
        assert (model.id, model.object, model.owned_by) == (alias, "model", "hybridgate")
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("nope")
    assert info.value.body == {
        "message": "The model 'nope' does not exist",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }
    with pytest.raises(openai.AuthenticationError):
        _client(p, "sk-wrong-key-zzzzzzzz").models.retrieve("chat")
    bare = httpx.get(f"{p.url}/models/chat", headers=p.headers(), timeout=5)
    assert bare.status_code == 200 and bare.json()["id"] == "chat"


def test_every_answer_carries_the_request_id_of_the_books(
    stack: tuple[ProxyHandle, Path],
) -> None:
    p, log = stack
    before = len(read_log(log, 0, timeout=0))
    client = _client(p)
    ours = client.chat.completions.create(model="chat", messages=MSGS, max_tokens=2)  # type: ignore[arg-type]
    theirs = client.chat.completions.create(model="frontier", messages=MSGS, max_tokens=2)  # type: ignore[arg-type]
    with client.chat.completions.with_streaming_response.create(
        model="chat",
        messages=MSGS,  # type: ignore[arg-type]
        max_tokens=2,
        stream=True,
    ) as streamed:
        stream_id = streamed.headers["x-request-id"]
        streamed.read()
    with pytest.raises(openai.NotFoundError) as unknown:  # answered by the proxy itself
        client.chat.completions.create(model="nope", messages=MSGS)  # type: ignore[arg-type]
    with pytest.raises(openai.APIStatusError) as down:  # no backend could answer
        client.chat.completions.create(model="gone", messages=MSGS)  # type: ignore[arg-type]
    events = read_log(log, before + 5)[before:]
    assert len(events) == 5
    by_id = {e["request_id"]: e for e in events}
    assert ours._request_id in by_id and ours._request_id.startswith("hg-")
    assert by_id[ours._request_id]["alias"] == "chat"
    assert by_id[stream_id]["stream"] is True
    # The API's own id goes to the client (it is what its support asks for); the books
    # hold it beside ours.
    assert theirs._request_id is not None and not theirs._request_id.startswith("hg-")
    assert [e["alias"] for e in events if e["upstream_request_id"] == theirs._request_id] == [
        "frontier"
    ]
    assert by_id[unknown.value.request_id]["status"] == 404
    assert by_id[down.value.request_id]["alias"] == "gone"
    assert down.value.status_code in (502, 503)
