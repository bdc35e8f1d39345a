"""OpenAI's Responses API through hybridgate (issue 20), with real processes: the official
`openai` SDK → hybridgate → the simulator's api mode (speaks /v1/responses natively) and
its vllm mode (chat only: translated). What the SDK sees is checked against the books
(request log, /metrics, litellm's prices) and against what the upstreams were sent
(`--record-bodies`)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from costing.api import api_cost
from costing.prices import PriceTable
from tests.support.openai_node import run_node
from tests.support.proxy import Books, ProxyHandle, metric_value, run_proxy
from tests.support.sim import SimHandle, run_simulator

KEY_A = "sk-hg-resp-team-a-41d0"
KEY_B = "sk-hg-resp-team-b-93c2"
MODEL = "gpt-4o-mini"  # priced in litellm's table
SPEAKS = {"speaks": ["openai", "responses"]}  # as OpenAI's API (api.openai.com) by default
FAST = ["--ttft-ms", "0", "--itl-ms", "0", "--record-bodies", "--default-max-tokens", "8"]
TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]


class Stack:
    def __init__(self, proxy: ProxyHandle, sims: dict[str, SimHandle], books: Books) -> None:
        self.proxy = proxy
        self.sims = sims
        self.books = books

    def client(self, key: str = KEY_A) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.proxy.base_url, api_key=key, max_retries=0, timeout=30)

    def bodies(self, sim: str) -> list[Any]:
        """What one upstream was sent, per inference request (oldest first)."""
        return [r.get("body") for r in self.sims[sim].stats()["requests"]]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("responses-route")
    log = tmp / "requests.jsonl"
    with (
        run_simulator(tmp, "api", args=[*FAST, "--reasoning-tokens", "3"], name="oa") as oa,
        run_simulator(tmp, "api", args=FAST, name="fa") as fa,
        run_simulator(tmp, "api", args=FAST, name="fb") as fb,
        run_simulator(tmp, "vllm", args=FAST) as vllm,
        run_simulator(tmp, "anthropic", args=FAST, name="claude") as claude,
    ):
        cfg = {
            "auth": {
                "keys": [
                    {"key": KEY_A, "tenant": "team-a", "name": "ka"},
                    {"key": KEY_B, "tenant": "team-b", "name": "kb"},
                ]
            },
            "tenants": {"team-a": {}, "team-b": {}},
            "request_log": {"path": str(log)},
            "breaker": {"failure_threshold": 1000},
            "health_checks": {"enabled": False},
            "gpu_pools": {"h100": {"gpus": 1, "billing": "rental", "usd_per_gpu_hour": 2.5}},
            "backends": {
                "oa": {"type": "openai", "base_url": oa.base_url, "api_key": "sk-up", **SPEAKS},
                "fa": {"type": "openai", "base_url": fa.base_url, "api_key": "sk-up", **SPEAKS},
                "fb": {"type": "openai", "base_url": fb.base_url, "api_key": "sk-up", **SPEAKS},
                "local": {"type": "openai", "base_url": vllm.base_url, "pool": "h100"},
                # Speaks /v1/responses but keeps no answers (as vLLM by default).
                "nokeep": {
                    "type": "openai",
                    "base_url": fb.base_url,
                    "api_key": "sk-up",
                    "stores_responses": False,
                    **SPEAKS,
                },
                "claude": {"type": "anthropic", "base_url": claude.url, "api_key": "sk-ant"},
            },
            "models": {
                "gpt": {"targets": [{"backend": "oa", "model": MODEL}]},
                "local": {"targets": [{"backend": "local", "model": "sim-model"}]},
                "nokeep": {"targets": [{"backend": "nokeep", "model": MODEL}]},
                "claude": {"targets": [{"backend": "claude", "model": "claude-sonnet-4-5"}]},
                "fo-native": {
                    "strategy": "priority",
                    "targets": [
                        {"backend": "fa", "model": MODEL},
                        {"backend": "fb", "model": MODEL},
                    ],
                },
                "fo-translated": {
                    "strategy": "priority",
                    "targets": [
                        {"backend": "fa", "model": MODEL},
                        {"backend": "local", "model": "sim-model"},
                    ],
                },
            },
        }
        with run_proxy(tmp, cfg) as proxy:
            sims = {"oa": oa, "fa": fa, "fb": fb, "local": vllm, "claude": claude}
            yield Stack(proxy, sims, Books(log))


@pytest.fixture
def env(stack: Stack) -> Iterator[Stack]:
    for sim in stack.sims.values():
        sim.clear_faults()
    stack.books.mark()
    yield stack
    for sim in stack.sims.values():
        sim.clear_faults()


def gpt_cost(ev: dict[str, Any]) -> float:
    price = PriceTable.load().get(MODEL)
    assert price is not None
    return api_cost(price, ev["prompt_tokens"], ev["completion_tokens"], ev["cached_tokens"])


# ---------------------------------------------------------------- native (api simulator)


def test_create_native_usage_is_the_books(env: Stack) -> None:
    raw = env.client().responses.with_raw_response.create(
        model="gpt", input="Hello there, tell me about GPUs.", instructions="Be brief."
    )
    r = raw.parse()
    assert raw.headers["x-hybridgate-backend"] == "oa"
    assert r.id.startswith("resp_") and r.status == "completed" and r.output_text
    assert r.model == MODEL
    (ev,) = env.books.next()
    assert ev["endpoint"] == "responses" and ev["backend"] == "oa" and ev["tenant"] == "team-a"
    assert r.usage is not None
    assert (r.usage.input_tokens, r.usage.output_tokens) == (
        ev["prompt_tokens"],
        ev["completion_tokens"],
    )
    assert ev["completion_tokens"] == 8 and not ev["estimated"]
    assert r.usage.output_tokens_details.reasoning_tokens == ev["reasoning_tokens"] == 3
    assert ev["cost_usd"] == pytest.approx(gpt_cost(ev), rel=1e-12) and ev["cost_usd"] > 0
    # The simulator's own books: what it generated is what was metered.
    rec = env.sims["oa"].stats()["requests"][-1]
    assert rec["endpoint"] == "/v1/responses"
    assert (rec["prompt_tokens"], rec["completion_tokens"]) == (
        ev["prompt_tokens"],
        ev["completion_tokens"],
    )


def test_stream_native_usage_is_the_books(env: Stack) -> None:
    kinds = []
    with env.client().responses.stream(model="gpt", input="Stream to me, please.") as stream:
        for event in stream:
            kinds.append(event.type)
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds
    (ev,) = env.books.next()
    assert ev["stream"] and ev["outcome"] == "success"
    assert final.usage is not None
    assert (final.usage.input_tokens, final.usage.output_tokens) == (
        ev["prompt_tokens"],
        ev["completion_tokens"],
    )
    assert ev["cost_usd"] == pytest.approx(gpt_cost(ev), rel=1e-12)
    assert final.usage.output_tokens_details.reasoning_tokens == ev["reasoning_tokens"] == 3
    # stored: the proxy knows who owns it, and the upstream answers for it
    got = env.client().responses.retrieve(final.id)
    assert got.id == final.id and got.output_text == final.output_text


def test_create_stream_true_native(env: Stack) -> None:
    events = list(env.client().responses.create(model="gpt", input="hi", stream=True))
    assert events[-1].type == "response.completed"
    done = events[-1].response
    (ev,) = env.books.next()
    assert done.usage is not None and done.usage.output_tokens == ev["completion_tokens"] == 8


def test_previous_response_id_native_goes_to_its_owner(env: Stack) -> None:
    c = env.client()
    r1 = c.responses.create(model="gpt", input="My name is Ada.")
    r2 = c.responses.create(model="gpt", input="What is my name?", previous_response_id=r1.id)
    assert r2.previous_response_id == r1.id  # the upstream's own chain
    evs = env.books.next(2)
    assert evs[1]["prompt_tokens"] > evs[0]["prompt_tokens"]  # the history counted upstream
    body = env.bodies("oa")[-1]
    assert body[0]["content"] == "My name is Ada." and body[-1]["content"] == "What is my name?"
    items = c.responses.input_items.list(r2.id)
    assert [i.content for i in items.data] == ["What is my name?"]  # type: ignore[union-attr]


def test_previous_response_id_native_without_upstream_store_is_replayed(env: Stack) -> None:
    """A native backend that keeps no responses (vLLM's default) is sent the stored
    conversation as input, not an id it would answer 404 to; GET is answered here."""
    c = env.client()
    r1 = c.responses.create(model="nokeep", input="My name is Ada.")
    r2 = c.responses.create(model="nokeep", input="What is my name?", previous_response_id=r1.id)
    env.books.next(2)
    sent = env.bodies("fb")[-1]  # the stored turn replayed (no upstream ids), then the new
    assert [i["role"] for i in sent] == ["user", "assistant", "user"]
    assert sent[0]["content"] == "My name is Ada." and sent[2]["content"] == "What is my name?"
    assert all("id" not in i for i in sent)
    assert c.responses.retrieve(r1.id).id == r1.id
    items = c.responses.input_items.list(r2.id)
    assert [i.content for i in items.data] == ["What is my name?"]  # type: ignore[union-attr]


def test_retrieve_and_delete_native(env: Stack) -> None:
    c = env.client()
    r = c.responses.create(model="gpt", input="Keep this one.")
    assert c.responses.retrieve(r.id).output_text == r.output_text
    c.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        c.responses.delete(r.id)
    env.books.next()  # one metered request; the item routes spend nothing


def test_store_false_is_not_kept(env: Stack) -> None:
    c = env.client()
    r = c.responses.create(model="gpt", input="Forget me.", store=False)
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(r.id)
    with pytest.raises(openai.BadRequestError) as exc:
        c.responses.create(model="gpt", input="again", previous_response_id=r.id)
    assert exc.value.code == "previous_response_not_found"


def test_cancel_native_background_and_not(env: Stack) -> None:
    c = env.client()
    bg = c.responses.create(model="gpt", input="In the background.", background=True)
    assert bg.status in ("queued", "in_progress")
    assert c.responses.cancel(bg.id).id == bg.id
    fg = c.responses.create(model="gpt", input="In the foreground.")
    with pytest.raises(openai.BadRequestError) as exc:
        c.responses.cancel(fg.id)
    assert "background" in exc.value.message


# ---------------------------------------------------------------- tenants


@pytest.mark.parametrize("alias", ["gpt", "local"])
def test_another_tenant_never_sees_a_stored_response(env: Stack, alias: str) -> None:
    a, b = env.client(KEY_A), env.client(KEY_B)
    r = a.responses.create(model=alias, input="Team A's secret plan.")
    with pytest.raises(openai.NotFoundError) as got:
        b.responses.retrieve(r.id)
    assert got.value.body["message"] == f"Response with id '{r.id}' not found."  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        b.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        b.responses.input_items.list(r.id)
    with pytest.raises(openai.BadRequestError) as cont:
        b.responses.create(model=alias, input="continue", previous_response_id=r.id)
    assert cont.value.code == "previous_response_not_found"
    # ... and it is all still there for team A
    assert a.responses.retrieve(r.id).id == r.id
    # same answer as an id nobody has: existence does not leak
    with pytest.raises(openai.NotFoundError) as unknown:
        b.responses.retrieve("resp_doesnotexist")
    assert unknown.value.status_code == got.value.status_code == 404


# ---------------------------------------------------------------- failover


@pytest.mark.parametrize(("alias", "second"), [("fo-native", "fb"), ("fo-translated", "local")])
def test_failover_keeps_the_conversation(env: Stack, alias: str, second: str) -> None:
    c = env.client()
    raw = c.responses.with_raw_response.create(model=alias, input="My name is Ada Lovelace.")
    r1 = raw.parse()
    assert raw.headers["x-hybridgate-backend"] == "fa"
    env.sims["fa"].set_faults(refuse_connections=True)
    try:
        raw2 = c.responses.with_raw_response.create(
            model=alias, input="What is my name?", previous_response_id=r1.id
        )
        # the first response lives at fa: asking for it while fa is down says so
        with pytest.raises(openai.APIStatusError) as down:
            c.responses.retrieve(r1.id)
        assert down.value.status_code == 502 and "'fa'" in down.value.message
    finally:
        env.sims["fa"].clear_faults()
    r2 = raw2.parse()
    assert raw2.headers["x-hybridgate-backend"] == second
    assert raw2.headers["x-hybridgate-attempts"] == "2"
    assert r2.output_text
    # The second backend was sent the first turn: the user's words and fa's answer.
    sent = json.dumps(env.bodies(second)[-1])
    assert "My name is Ada Lovelace." in sent and r1.output_text in sent
    assert "What is my name?" in sent
    evs = env.books.next(2)
    assert [e["backend"] for e in evs] == ["fa", second]
    assert [a["backend"] for a in evs[1]["attempts"]] == ["fa", second]
    # The conversation goes on from the second backend's answer.
    r3 = c.responses.create(model=alias, input="And again?", previous_response_id=r2.id)
    assert r3.output_text
    env.books.next()
    sent3 = json.dumps(env.bodies("fa")[-1])
    assert "My name is Ada Lovelace." in sent3 and "What is my name?" in sent3


# ---------------------------------------------------------------- translated (vllm simulator)


@pytest.mark.parametrize("alias", ["local", "claude"])
def test_create_translated_usage_is_the_books(env: Stack, alias: str) -> None:
    c = env.client()
    r = c.responses.create(model=alias, input="Hello from a chat-only engine.")
    assert r.id and r.output_text and r.status in ("completed", "incomplete")
    (ev,) = env.books.next()
    assert ev["backend"] == alias and ev["endpoint"] == "responses"
    assert r.usage is not None
    assert (r.usage.input_tokens, r.usage.output_tokens) == (
        ev["prompt_tokens"],
        ev["completion_tokens"],
    )
    assert not ev["estimated"]
    if alias == "local":
        assert ev["gpu_seconds"] > 0
    else:
        assert ev["cost_usd"] > 0  # priced as Claude's tokens
    assert c.responses.retrieve(r.id).output_text == r.output_text
    r2 = c.responses.create(model=alias, input="And then?", previous_response_id=r.id)
    assert r2.previous_response_id == r.id
    assert r2.usage is not None and r2.usage.input_tokens > r.usage.input_tokens
    env.books.next()
    c.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(r.id)
    with pytest.raises(openai.BadRequestError):  # never a background response
        c.responses.cancel(r2.id)


def test_stream_translated_usage_is_the_books(env: Stack) -> None:
    c = env.client()
    with c.responses.stream(model="local", input="Stream from a chat engine.") as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds
    (ev,) = env.books.next()
    assert final.usage is not None
    assert (final.usage.input_tokens, final.usage.output_tokens) == (
        ev["prompt_tokens"],
        ev["completion_tokens"],
    )
    assert c.responses.retrieve(final.id).output_text == final.output_text


# ---------------------------------------------------------------- bad input


def _post(env: Stack, body: dict[str, Any], key: str = KEY_A) -> httpx.Response:
    return httpx.post(
        f"{env.proxy.base_url}/responses",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "gpt"}, "input"),
        ({"model": "gpt", "input": 42}, "input"),
        ({"model": "gpt", "input": ["not an item"]}, "input[0]"),
        ({"model": "gpt", "input": "x", "store": "yes"}, "store"),
        (
            {"model": "gpt", "input": "x", "previous_response_id": "resp_nope"},
            "previous_response_id",
        ),
    ],
)
def test_bad_input_is_a_400_in_openai_shape(env: Stack, body: dict[str, Any], param: str) -> None:
    r = _post(env, body)
    assert r.status_code == 400
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["param"] == param and err["type"] == "invalid_request_error"
    assert env.sims["oa"].stats()["requests_by_endpoint"].get("/v1/responses", 0) >= 0


def test_unknown_builtin_tool_on_a_translated_target_is_a_400(env: Stack) -> None:
    r = _post(env, {"model": "local", "input": "x", "tools": [{"type": "web_search"}]})
    assert r.status_code == 400, r.text
    assert "web_search" in r.json()["error"]["message"]
    assert r.headers["x-hybridgate-backend"] == "local"


def test_item_routes_answer_in_openai_shape(env: Stack) -> None:
    h = {"Authorization": f"Bearer {KEY_A}"}
    base = env.proxy.base_url
    r = httpx.get(f"{base}/responses/resp_unknown", headers=h, timeout=10)
    assert r.status_code == 404 and r.json()["error"]["type"] == "invalid_request_error"
    assert r.headers["x-request-id"]
    r = httpx.put(f"{base}/responses/resp_unknown", headers=h, timeout=10)
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    r = httpx.get(f"{base}/responses/resp_unknown/whatever", headers=h, timeout=10)
    assert r.status_code == 404
    r = httpx.get(f"{base}/responses/resp_unknown", timeout=10)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    for probe in ("..", "%2E%2E", "..%2F..%2Fmetrics", "x%2F..%2F..%2Fmetrics", "a b"):
        r = httpx.get(f"{base}/responses/{probe}", headers=h, timeout=10)
        assert r.status_code == 404, probe
        assert r.json()["error"]["type"] == "invalid_request_error"
    # without /v1, as the SDKs allow
    r = httpx.get(f"{env.proxy.url}/responses/resp_unknown", headers=h, timeout=10)
    assert r.status_code == 404


def test_openapi_documents_the_routes(env: Stack) -> None:
    doc = httpx.get(f"{env.proxy.url}/openapi.json", timeout=10).json()
    assert "post" in doc["paths"]["/v1/responses"]
    assert set(doc["paths"]["/v1/responses/{response_id}"]) == {"get", "delete"}
    assert "post" in doc["paths"]["/v1/responses/{response_id}/cancel"]


# ---------------------------------------------------------------- openai-node


@pytest.mark.parametrize("alias", ["gpt", "local"])
def test_openai_node_sdk(env: Stack, alias: str) -> None:
    seen = run_node("responses.mjs", env.proxy.base_url, KEY_A, alias)
    evs = env.books.next(3)
    for usage, ev in zip(
        (seen["create"]["usage"], seen["stream"]["usage"], seen["next"]["usage"]), evs, strict=True
    ):
        assert (usage["input_tokens"], usage["output_tokens"]) == (
            ev["prompt_tokens"],
            ev["completion_tokens"],
        )
    assert seen["create"]["text"] and seen["stream"]["text"]
    assert seen["stream"]["kinds"][0] == "response.created"
    assert seen["stream"]["kinds"][-1] == "response.completed"
    assert seen["next"]["previous"] == seen["create"]["id"]
    assert evs[2]["prompt_tokens"] > evs[0]["prompt_tokens"]  # the first turn went along
    assert seen["retrieved"] == seen["create"]["id"] and seen["after_delete"] == 404


def test_prometheus_counters_are_what_the_clients_saw(env: Stack) -> None:
    p = env.proxy

    def counters() -> list[float]:
        text = p.metrics_text()
        out = [
            metric_value(text, "hybridgate_tokens_total", backend="oa", kind=k)
            for k in ("prompt", "completion", "reasoning")
        ]
        out.append(metric_value(text, "hybridgate_cost_usd_total", backend="oa"))
        out.append(metric_value(text, "hybridgate_requests_total", backend="oa"))
        return out

    env.books.next(0)
    before = counters()
    c = env.client()
    usages = [c.responses.create(model="gpt", input="One.").usage]
    with c.responses.stream(model="gpt", input="Two, streamed.") as stream:
        for _ in stream:
            pass
        usages.append(stream.get_final_response().usage)
    evs = env.books.next(2)  # the books are written by then: the counters too
    after = counters()
    assert all(u is not None for u in usages)
    seen = [
        sum(u.input_tokens for u in usages if u),
        sum(u.output_tokens for u in usages if u),
        sum(u.output_tokens_details.reasoning_tokens for u in usages if u),
    ]
    delta = [b - a for a, b in zip(before, after, strict=True)]
    assert delta[:3] == seen and seen[2] == 6
    assert delta[3] == pytest.approx(sum(e["cost_usd"] for e in evs), rel=1e-9)
    assert delta[4] == 2


@pytest.mark.parametrize("alias", ["gpt", "local"])
def test_a_tool_loop_with_previous_response_id(env: Stack, alias: str) -> None:
    c = env.client()
    r1 = c.responses.create(model=alias, input="Weather in Paris?", tools=TOOLS)  # type: ignore[arg-type]
    (call,) = [i for i in r1.output if i.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments)
    r2 = c.responses.create(
        model=alias,
        previous_response_id=r1.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 C"}],
        tools=TOOLS,  # type: ignore[arg-type]
    )
    assert r2.output_text and r2.previous_response_id == r1.id
    env.books.next(2)
    sent = json.dumps(env.bodies("oa" if alias == "gpt" else "local")[-1])
    assert "Weather in Paris?" in sent and "Sunny, 21 C" in sent


def test_a_head_on_an_item_route_has_no_body_and_the_connection_goes_on(env: Stack) -> None:
    """A HEAD answer carries no body (RFC 9110 9.3.2): bytes after its head would be read
    as the next answer on a keep-alive connection."""
    with socket.create_connection(("127.0.0.1", env.proxy.port), timeout=10) as s:
        auth = f"Authorization: Bearer {KEY_A}\r\n".encode()
        s.sendall(b"HEAD /v1/responses/resp_unknown HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(65536)
        s.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        while data.count(b"\r\n\r\n") < 2:
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
    first, rest = data.split(b"\r\n\r\n", 1)
    assert first.split(b" ")[1] in (b"404", b"405")
    assert rest.startswith(b"HTTP/1.1 200"), rest[:200]
