"""Upstream errors as the client sees them: no configured secret ever relayed, and the
codes SDKs test (context length) said the way OpenAI says them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.proxy import run_proxy
from tests.support.scripted import Answer, SeenRequest, scripted_upstream, sse

UPSTREAM_KEY = "sk-upstream-secret-0123456789abcdef"
HEADER_KEY = "hdr-secret-token-9876543210"
CLIENT_KEY = "sk-client-key-for-tests-5555"
ADMIN_KEY = "admin-key-for-tests-7777777"
SECRETS = (UPSTREAM_KEY, HEADER_KEY, CLIENT_KEY, ADMIN_KEY)
STATUSES = (400, 404, 409, 422, 429, 500, 503)
MSGS = [{"role": "user", "content": "hi"}]


def _echo_answer(req: SeenRequest) -> Answer:
    """An upstream that quotes every credential it was sent, on every status, in every
    shape: JSON message, JSON param, plain text, and a streamed error event."""
    model = req.body["model"]
    quoted = (
        f"you sent Authorization: {req.headers.get('authorization')} "
        f"and x-api-key: {req.headers.get('x-api-key')}"
    )
    kind, _, status = model.partition("-")
    if kind == "stream":
        chunk = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}}]}
        return Answer(
            200,
            sse(chunk, {"error": {"message": quoted, "type": "server_error"}}, "[DONE]"),
            content_type="text/event-stream",
        )
    if kind == "text":
        return Answer(int(status), quoted.encode(), content_type="text/plain")
    return Answer(
        int(status),
        {"error": {"message": quoted, "type": "x", "param": quoted, "code": "upstream"}},
    )


def _config(base_url: str) -> dict[str, Any]:
    models = {f"json-{s}": f"json-{s}" for s in STATUSES}
    models |= {f"text-{s}": f"text-{s}" for s in STATUSES}
    models["stream"] = "stream-200"
    return {
        "auth": {"admin_key": ADMIN_KEY, "keys": [{"key": CLIENT_KEY, "tenant": "t"}]},
        "backends": {
            "api": {
                "type": "openai",
                "base_url": base_url,
                "api_key": UPSTREAM_KEY,
                "headers": {"x-api-key": HEADER_KEY},
            }
        },
        "models": {
            alias: {"targets": [{"backend": "api", "model": model}]}
            for alias, model in models.items()
        },
        "prices": {m: {"input": 1, "output": 1} for m in models.values()},
        "health_checks": {"enabled": False},
    }


def test_no_configured_secret_reaches_the_client_from_an_upstream_error(tmp_path: Path) -> None:
    with scripted_upstream(_echo_answer) as up, run_proxy(tmp_path, _config(up.base_url)) as p:
        seen = []
        for shape in ("json", "text"):
            for status in STATUSES:
                r = httpx.post(
                    f"{p.base_url}/chat/completions",
                    headers=p.headers(),
                    json={"model": f"{shape}-{status}", "messages": MSGS},
                    timeout=10,
                )
                assert r.status_code == status, (shape, status, r.text)
                err = r.json()["error"]
                assert set(err) == {"message", "type", "param", "code"}
                assert "REDACTED" in err["message"], (shape, status, err)
                seen.append(r.text)
        with httpx.stream(
            "POST",
            f"{p.base_url}/chat/completions",
            headers=p.headers(),
            json={"model": "stream", "messages": MSGS, "stream": True},
            timeout=10,
        ) as r:
            assert r.status_code == 200
            streamed = r.read().decode()
        assert '"error"' in streamed and "REDACTED" in streamed
        seen.append(streamed)
        # The upstream did get the real credentials: the test would prove nothing otherwise.
        assert up.requests[0].headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
        log = p.proc.log_text()
    for text in seen:
        for secret in SECRETS:
            assert secret not in text
    for secret in SECRETS:
        assert secret not in log


VLLM_CONTEXT_MESSAGE = (
    "This model's maximum context length is 2048 tokens. However, you requested 5000 "
    "tokens (4900 in the messages, 100 in the completion). Please reduce the length of "
    "the messages or completion."
)
VLLM_BODIES = {
    # vLLM >= 0.6's nested shape: its `code` is the HTTP status, an integer.
    "nested": {
        "error": {
            "message": VLLM_CONTEXT_MESSAGE,
            "type": "BadRequestError",
            "param": "input_tokens",
            "code": 400,
        }
    },
    # vLLM 0.32.0's, verbatim: a prompt alone over the window (tests/e2e meets it for real).
    "v0.32": {
        "error": {
            "message": "This model's maximum context length is 2048 tokens. However, your "
            "prompt contains at least 2049 input tokens, which exceeds this limit even without "
            "any output tokens. Please reduce the length of the input prompt. "
            "(parameter=input_tokens, value=2049)",
            "type": "BadRequestError",
            "param": "input_tokens",
            "code": 400,
        }
    },
    # Older vLLM's flat shape.
    "flat": {
        "object": "error",
        "message": VLLM_CONTEXT_MESSAGE,
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    },
}


@pytest.mark.parametrize("shape", sorted(VLLM_BODIES))
def test_vllm_context_length_400_says_context_length_exceeded(tmp_path: Path, shape: str) -> None:
    def answer(_: SeenRequest) -> Answer:
        return Answer(400, VLLM_BODIES[shape])

    with scripted_upstream(answer) as up:
        cfg = {
            "gpu_pools": {"gpu": {"gpus": 1, "usd_per_gpu_hour": 1.0}},
            "backends": {"vllm": {"base_url": up.base_url, "pool": "gpu", "engine": "vllm"}},
            "models": {
                "chat": {"targets": [{"backend": "vllm", "model": "llama"}]},
                "comp": {"targets": [{"backend": "vllm", "model": "llama"}]},
            },
            "health_checks": {"enabled": False},
        }
        with run_proxy(tmp_path, cfg) as p:
            client = openai.OpenAI(base_url=p.base_url, api_key="x", max_retries=0)
            with pytest.raises(openai.BadRequestError) as info:
                client.chat.completions.create(model="chat", messages=MSGS)  # type: ignore[arg-type]
            assert info.value.code == "context_length_exceeded"
            assert info.value.type == "invalid_request_error"
            assert info.value.param == "messages"
            message = VLLM_BODIES[shape].get("error", VLLM_BODIES[shape])["message"]  # type: ignore[attr-defined]
            assert info.value.body["message"] == message  # type: ignore[index]
            with pytest.raises(openai.BadRequestError) as info:
                client.completions.create(model="comp", prompt="x")
            assert (info.value.code, info.value.param) == ("context_length_exceeded", "prompt")


# vLLM 0.32.0's answer to a model it does not serve, verbatim (tests/e2e meets it for real).
VLLM_NOT_FOUND = {
    "error": {
        "message": "The model `llama-x` does not exist. Valid aliases: llama.",
        "type": "NotFoundError",
        "param": "model",
        "code": 404,
    }
}


def test_vllm_unknown_model_404_says_model_not_found(tmp_path: Path) -> None:
    """An alias pointing at a model vLLM does not serve: the client gets OpenAI's 404 for an
    unknown model (`model_not_found`, SDKs and agents test it), vLLM's explanation kept."""

    def answer(_: SeenRequest) -> Answer:
        return Answer(404, VLLM_NOT_FOUND)

    with scripted_upstream(answer) as up:
        cfg = {
            "gpu_pools": {"gpu": {"gpus": 1, "usd_per_gpu_hour": 1.0}},
            "backends": {"vllm": {"base_url": up.base_url, "pool": "gpu", "engine": "vllm"}},
            "models": {"chat": {"targets": [{"backend": "vllm", "model": "llama-x"}]}},
            "health_checks": {"enabled": False},
        }
        with run_proxy(tmp_path, cfg) as p:
            client = openai.OpenAI(base_url=p.base_url, api_key="x", max_retries=0)
            with pytest.raises(openai.NotFoundError) as info:
                client.chat.completions.create(model="chat", messages=MSGS)  # type: ignore[arg-type]
            assert info.value.code == "model_not_found"
            assert info.value.type == "invalid_request_error"
            assert info.value.param == "model"
            assert info.value.body["message"] == VLLM_NOT_FOUND["error"]["message"]  # type: ignore[index]
