"""The proxy core against real simulator processes, with the official openai SDK and raw HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.proxy import ProxyHandle, run_proxy
from tests.support.servers import free_port
from tests.support.sim import SimHandle, run_simulator
from tests.support.stack import SIM_ARGS, run_stack

KEY = "sk-core-test-key-0123456789"
ADMIN = "admin-core-test-key-987654"
UPSTREAM_KEY = "sk-upstream-secret-abcdef"


def core_config(vllm: SimHandle, api: SimHandle, dead_port: int) -> dict[str, Any]:
    return {
        "auth": {"admin_key": ADMIN, "keys": [{"key": KEY, "tenant": "team-a"}]},
        "tenants": {"team-a": {}},
        "limits": {"max_body_bytes": 64 * 1024},
        "gpu_pools": {"h100": {"gpus": 1, "billing": "rental", "usd_per_gpu_hour": 2.5}},
        "backends": {
            "local": {"type": "openai", "base_url": vllm.base_url, "pool": "h100"},
            "api": {"type": "openai", "base_url": api.base_url, "api_key": UPSTREAM_KEY},
            "dead": {
                "type": "openai",
                "base_url": f"http://127.0.0.1:{dead_port}/v1",
                "api_key": UPSTREAM_KEY,
                "timeouts": {"connect_s": 1},
            },
        },
        "models": {
            "chat": {
                "targets": [{"backend": "local", "model": "sim-model"}],
                "compare_to": {"model": "gpt-4o-mini"},
            },
            "frontier": {"targets": [{"backend": "api", "model": "gpt-4o-mini"}]},
            "broken": {"targets": [{"backend": "dead", "model": "gpt-4o-mini"}]},
        },
    }


@contextlib.contextmanager
def core_stack(
    tmp_path: Path, local_args: Sequence[str] = SIM_ARGS
) -> Iterator[tuple[ProxyHandle, SimHandle, SimHandle]]:
    """The simulators (the API one checks the upstream key) behind a proxy on `core_config`."""
    with run_stack(
        tmp_path,
        lambda vllm, api: core_config(vllm, api, free_port()),
        local_args=local_args,
        api_args=["--require-key", UPSTREAM_KEY],
    ) as s:
        yield s.proxy, s.local, s.api


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ProxyHandle, SimHandle, SimHandle]]:
    with core_stack(tmp_path_factory.mktemp("core")) as stack:
        yield stack


@pytest.fixture
def proxy(stack: tuple[ProxyHandle, SimHandle, SimHandle]) -> ProxyHandle:
    return stack[0]


@pytest.fixture
def client(proxy: ProxyHandle) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.base_url, api_key=KEY, max_retries=0)


MSGS = [{"role": "user", "content": "Say something about GPUs and tokens."}]


def test_sdk_sync_non_stream(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="chat", messages=MSGS, max_tokens=7)
    assert r.choices[0].message.content
    assert r.usage is not None and r.usage.completion_tokens == 7
    assert r.usage.prompt_tokens > 0


def test_sdk_sync_stream_usage_only_when_asked(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(model="chat", messages=MSGS, max_tokens=5, stream=True)
    )
    assert all(c.usage is None for c in chunks)  # proxy asked upstream, stripped it
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    with_usage = list(
        client.chat.completions.create(
            model="chat",
            messages=MSGS,
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    usage_chunks = [c for c in with_usage if c.usage is not None]
    assert len(usage_chunks) == 1 and usage_chunks[0].choices == []
    assert usage_chunks[0].usage.completion_tokens == 5


def test_sdk_async_stream_and_non_stream(proxy: ProxyHandle) -> None:
    async def run() -> tuple[Any, list[Any]]:
        aclient = openai.AsyncOpenAI(base_url=proxy.base_url, api_key=KEY, max_retries=0)
        try:
            one = await aclient.chat.completions.create(model="chat", messages=MSGS, max_tokens=3)
            stream = await aclient.chat.completions.create(
                model="frontier",
                messages=MSGS,
                max_tokens=4,
                stream=True,
                stream_options={"include_usage": True},
            )
            return one, [c async for c in stream]
        finally:
            await aclient.close()

    one, chunks = asyncio.run(run())
    assert one.usage.completion_tokens == 3
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4


def test_completions_and_embeddings(client: openai.OpenAI) -> None:
    c = client.completions.create(model="chat", prompt="Once upon a time", max_tokens=4)
    assert c.usage.completion_tokens == 4
    e = client.embeddings.create(model="chat", input=["a", "b"])
    assert len(e.data) == 2 and e.usage.prompt_tokens > 0


def test_tool_calls_pass_through_both_ways(client: openai.OpenAI) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_price",
                "description": "price of a GPU",
                "parameters": {"type": "object", "properties": {"gpu": {"type": "string"}}},
            },
        }
    ]
    r = client.chat.completions.create(model="chat", messages=MSGS, tools=tools, tool_choice="auto")
    calls = r.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "get_price"
    json.loads(calls[0].function.arguments)
    follow = client.chat.completions.create(
        model="chat",
        max_tokens=3,
        tools=tools,
        tool_choice="none",
        messages=[
            *MSGS,
            r.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": calls[0].id, "content": "2.50"},
        ],
    )
    assert follow.choices[0].message.content


class _EchoUpstream(http.server.BaseHTTPRequestHandler):
    """Answers a chat completion whose content is the exact body it received."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        out = json.dumps(
            {
                "id": "echo",
                "object": "chat.completion",
                "created": 0,
                "model": "echo",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": body.decode()},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.send_header("x-request-id", "req-echo-1")
        self.send_header("x-ratelimit-remaining-requests", "99")
        self.send_header("x-internal-secret-header", "nope")
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args: Any) -> None:
        pass


def test_body_passes_through_untouched_but_the_model(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EchoUpstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        cfg = {
            "prices": {"echo-upstream": {"input": 1, "output": 1}},
            "backends": {
                "echo": {"type": "openai", "base_url": f"http://127.0.0.1:{server.server_port}/v1"}
            },
            "models": {"m": {"targets": [{"backend": "echo", "model": "echo-upstream"}]}},
        }
        with run_proxy(tmp_path, cfg) as proxy:
            body = {
                "model": "m",
                "messages": MSGS,
                "seed": 7,
                "logprobs": True,
                "n": 1,
                "user": "u1",
                "temperature": 0.25,
                "response_format": {"type": "json_object"},
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
                "vendor_extra": {"x": [1, 2.5, None, "z"]},
            }
            r = httpx.post(f"{proxy.base_url}/chat/completions", json=body, timeout=10)
            assert r.status_code == 200
            seen = json.loads(r.json()["choices"][0]["message"]["content"])
            assert seen == {**body, "model": "echo-upstream"}
            assert r.headers["x-request-id"] == "req-echo-1"
            assert r.headers["x-ratelimit-remaining-requests"] == "99"
            assert "x-internal-secret-header" not in r.headers
    finally:
        server.shutdown()
        server.server_close()


def test_streaming_is_incremental(tmp_path: Path) -> None:
    # 40 tokens at ~25 ms each: the first chunk must reach the client long before the last
    # is generated, i.e. while the simulator still has the request running.
    with core_stack(tmp_path, ["--decode-ms-per-seq", "25"]) as (proxy, vllm, _api):
        client = openai.OpenAI(base_url=proxy.base_url, api_key=KEY, max_retries=0)
        stream = client.chat.completions.create(
            model="chat", messages=MSGS, max_tokens=40, stream=True
        )
        first = next(iter(stream))
        assert first.choices
        running = vllm.stats(detail=False)
        rest = list(stream)
        assert running["running"] + running["waiting"] == 1, running
        assert len(rest) >= 39


def test_client_disconnect_cancels_upstream_and_is_metered(tmp_path: Path) -> None:
    with core_stack(tmp_path, ["--decode-ms-per-seq", "40"]) as (proxy, vllm, _api):
        body = {"model": "chat", "messages": MSGS, "max_tokens": 200, "stream": True}
        with httpx.stream(
            "POST",
            f"{proxy.base_url}/chat/completions",
            json=body,
            headers=proxy.headers(),
            timeout=10,
        ) as r:
            lines = r.iter_lines()
            got = [next(lines) for _ in range(6)]
            assert any(line.startswith("data: {") for line in got)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and vllm.stats(detail=False)["cancelled"] < 1:
            time.sleep(0.05)
        assert vllm.stats(detail=False)["cancelled"] == 1
        while (
            time.monotonic() < deadline
            and proxy.metric("hybridgate_requests_total", outcome="client_disconnect") < 1
        ):
            time.sleep(0.05)
        assert (
            proxy.metric(
                "hybridgate_requests_total",
                alias="chat",
                backend="local",
                outcome="client_disconnect",
            )
            == 1
        )
        # Metered with the tokens generated so far (continuous usage from the engine).
        completion = proxy.metric("hybridgate_tokens_total", backend="local", kind="completion")
        assert 1 <= completion < 200


def _post(
    proxy: ProxyHandle,
    content: bytes | str,
    headers: dict[str, str] | None = None,
    path: str = "/chat/completions",
) -> httpx.Response:
    h = {"Content-Type": "application/json", **proxy.headers()}
    h.update(headers or {})
    return httpx.post(f"{proxy.base_url}{path}", content=content, headers=h, timeout=10)


def _assert_openai_error(r: httpx.Response, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"]
    if code is not None:
        assert err["code"] == code
    return err


def test_errors_are_openai_shaped(proxy: ProxyHandle) -> None:
    _assert_openai_error(_post(proxy, b"{not json"), 400)
    _assert_openai_error(_post(proxy, b"[1, 2]"), 400)
    err = _assert_openai_error(_post(proxy, json.dumps({"messages": MSGS})), 400)
    assert err["param"] == "model"
    err = _assert_openai_error(_post(proxy, json.dumps({"model": "chat"})), 400)
    assert err["param"] == "messages"
    _assert_openai_error(
        _post(proxy, json.dumps({"model": "nope", "messages": MSGS})), 404, "model_not_found"
    )
    _assert_openai_error(
        _post(
            proxy,
            json.dumps({"model": "chat", "messages": MSGS}),
            {"Authorization": "Bearer wrong"},
        ),
        401,
        "invalid_api_key",
    )
    for field, value in (("stream", "yes"), ("stream_options", "all")):
        body = {"model": "chat", "messages": MSGS, "stream": True, field: value}
        assert _assert_openai_error(_post(proxy, json.dumps(body)), 400)["param"] == field
        # Embeddings are never streamed: the fields are the upstream's to judge, not ours.
        body = {"model": "chat", "input": ["a"], field: value}
        assert _post(proxy, json.dumps(body), path="/embeddings").status_code == 200
    r = httpx.post(f"{proxy.base_url}/chat/completions", json={"model": "chat"}, timeout=5)
    _assert_openai_error(r, 401)
    _assert_openai_error(httpx.get(f"{proxy.url}/no/such/path"), 404)


def test_sdk_raises_typed_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-nope", messages=MSGS)
    bad = openai.OpenAI(base_url=client.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="chat", messages=MSGS)


def test_body_over_limit_is_413_without_reading_it(proxy: ProxyHandle) -> None:
    big = json.dumps({"model": "chat", "messages": [{"role": "user", "content": "x" * 70_000}]})
    _assert_openai_error(_post(proxy, big), 413, "request_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked upload, cut off at the limit
        yield b'{"model": "chat", "messages": [{"role": "user", "content": "'
        for _ in range(100):
            yield b"y" * 1024
        yield b'"}]}'

    r = httpx.post(
        f"{proxy.base_url}/chat/completions",
        content=chunks(),
        headers={"Content-Type": "application/json", **proxy.headers()},
        timeout=10,
    )
    _assert_openai_error(r, 413)


def test_upstream_4xx_passes_back_with_status_and_message(
    proxy: ProxyHandle, stack: tuple[Any, SimHandle, SimHandle]
) -> None:
    vllm = stack[1]
    r = _post(proxy, json.dumps({"model": "chat", "max_tokens": 10_000_000, "messages": MSGS}))
    err = _assert_openai_error(r, 400)
    # vLLM 0.32's own words (the simulator follows it: tests/e2e/test_vllm_contract.py).
    assert "cannot be greater than max_model_len" in err["message"]
    assert err["param"] == "max_tokens"
    vllm.set_faults(status=422, count=1)
    try:
        r = _post(proxy, json.dumps({"model": "chat", "messages": MSGS}))
    finally:
        vllm.clear_faults()
    _assert_openai_error(r, 422)


def test_unreachable_backend_names_it_not_its_key(proxy: ProxyHandle) -> None:
    r = _post(proxy, json.dumps({"model": "broken", "messages": MSGS}))
    err = _assert_openai_error(r, 503)
    assert "dead" in err["message"]
    assert UPSTREAM_KEY not in r.text and KEY not in r.text


def test_models_health_and_metrics(proxy: ProxyHandle) -> None:
    assert proxy.chat(model="chat", messages=MSGS, max_tokens=2).status_code == 200
    models = httpx.get(f"{proxy.base_url}/models", headers=proxy.headers()).json()
    assert models["object"] == "list"
    assert sorted(m["id"] for m in models["data"]) == ["broken", "chat", "frontier"]
    assert httpx.get(f"{proxy.url}/health/live").json() == {"status": "ok"}
    ready = proxy.ready()
    assert ready.status_code in (200, 503)
    assert set(ready.json()["backends"]) == {"local", "api", "dead"}
    text = proxy.metrics_text()
    assert "hybridgate_requests_total" in text
    assert "hybridgate_request_duration_seconds_bucket" in text
    assert KEY not in text and UPSTREAM_KEY not in text and ADMIN not in text


def test_litellm_not_imported_without_a_litellm_backend(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "backends:\n  b: {type: openai, base_url: 'http://127.0.0.1:9/v1'}\n"
        "models:\n  m: {targets: [{backend: b, model: gpt-4o-mini}]}\n"
    )
    code = f"""
import asyncio, sys
from proxy.config import load_config
from proxy.server.app import HybridGateApp
app = HybridGateApp(load_config({str(cfg)!r}))
async def main():
    await app.runtime.start()
    await app.runtime.stop()
asyncio.run(main())
print("litellm" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_check_lists_every_problem_with_its_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "listen: {port: 99999}\n"
        "backends:\n"
        "  openai: {type: openai, base_url: 'https://api.openai.com/v1', colour: red}\n"
        "models:\n"
        "  chat:\n"
        "    targets:\n"
        "      - {backend: openai, model: gpt-4o-mini}\n"
        "      - {backend: opnai, model: gpt-4o-mini}\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "proxy", "check", "-c", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "models.chat.targets[1].backend: unknown backend 'opnai'" in out.stderr
    assert "backends.openai.colour: unknown key" in out.stderr
    assert "listen.port:" in out.stderr
    serve = subprocess.run(
        [sys.executable, "-m", "proxy", "serve", "-c", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert serve.returncode != 0
    assert "unknown backend 'opnai'" in serve.stderr


def test_a_model_without_a_price_is_flagged_never_zero(tmp_path: Path) -> None:
    with run_simulator(tmp_path, "api", args=["--ttft-ms", "0", "--itl-ms", "0"]) as api:
        cfg = tmp_path / "noprice.yaml"
        cfg.write_text(
            f"backends:\n  api: {{type: openai, base_url: '{api.base_url}'}}\n"
            "models:\n  m: {targets: [{backend: api, model: my-private-finetune}]}\n"
        )

        def check(*flags: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "proxy", "check", "-c", str(cfg), *flags],
                capture_output=True,
                text=True,
                timeout=60,
            )

        warned = check()
        assert warned.returncode == 0
        msg = "models.m.targets[0].model: no price for 'my-private-finetune'"
        assert f"warning: {msg}" in warned.stderr
        strict = check("--strict")
        assert strict.returncode == 1 and msg in strict.stderr
        # Served, but its cost is flagged unknown: never a silent $0.
        with run_proxy(tmp_path, cfg.read_text()) as proxy:
            r = httpx.post(
                f"{proxy.base_url}/chat/completions",
                timeout=10,
                json={"model": "m", "messages": MSGS, "max_tokens": 3},
            )
            assert r.status_code == 200
            assert (
                proxy.metric(
                    "hybridgate_unpriced_requests_total", backend="api", model="my-private-finetune"
                )
                == 1
            )
            assert proxy.metric("hybridgate_cost_usd_total", backend="api") == 0
