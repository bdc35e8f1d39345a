"""Anthropic's Messages API on the request path (issue 19), with real processes: the
official `openai` and `anthropic` SDKs → hybridgate → the simulator's anthropic mode
(Claude, natively) and its vllm mode (an OpenAI-dialect engine, translated). What the SDKs
see is checked against the books (request log, /metrics) and litellm's prices."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from costing.api import api_cost
from costing.prices import PriceTable
from tests.support.proxy import Books, ProxyHandle, run_proxy
from tests.support.sim import SimHandle, run_simulator

KEY = "sk-hg-anthropic-wiring-7c1d"
ANTH_KEY = "sk-ant-upstream-93be"
CLAUDE = "claude-sonnet-4-5"  # priced in litellm's table, cache reads and writes included
READ, WRITE = 3, 2  # the anthropic simulator's cache knobs
LONG = "Hello there, Claude. Tell me about the price of GPUs in the cloud this year."
CONFIDENTIAL = {"x-data-class": "confidential"}
TOOLS_OPENAI = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
TOOLS_ANTHROPIC = [
    {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, ...]]:
    tmp = tmp_path_factory.mktemp("anthropic-wiring")
    fast = ["--ttft-ms", "0", "--itl-ms", "0"]
    anth_args = [
        *fast,
        "--require-key",
        ANTH_KEY,
        "--default-max-tokens",
        "8",
        "--cache-read-tokens",
        str(READ),
        "--cache-creation-tokens",
        str(WRITE),
    ]
    log = tmp / "requests.jsonl"
    with (
        run_simulator(tmp, "anthropic", args=anth_args, name="claude") as claude,
        run_simulator(tmp, "vllm", args=[*fast, "--default-max-tokens", "8"]) as vllm,
    ):
        cfg = {
            "auth": {"keys": [{"key": KEY, "tenant": "team-a", "name": "k1"}]},
            "tenants": {"team-a": {}},
            "request_log": {"path": str(log)},
            "gpu_pools": {"h100": {"gpus": 1, "billing": "rental", "usd_per_gpu_hour": 2.5}},
            "backends": {
                "claude": {
                    "type": "anthropic",
                    "base_url": claude.url,
                    "api_key": ANTH_KEY,
                    "default_max_tokens": 8,
                },
                "local": {"type": "openai", "base_url": vllm.base_url, "pool": "h100"},
                # An OpenAI-type engine that also serves /v1/messages (vLLM, llama.cpp): here
                # the anthropic simulator, so Anthropic clients pass through untranslated.
                "compat": {
                    "type": "openai",
                    "base_url": claude.base_url,
                    "api_key": ANTH_KEY,
                    "speaks": ["openai", "anthropic"],
                },
            },
            "models": {
                "frontier": {"targets": [{"backend": "claude", "model": CLAUDE}]},
                "local": {"targets": [{"backend": "local", "model": "sim-model"}]},
                "compat": {"targets": [{"backend": "compat", "model": CLAUDE}]},
                "mixed": {
                    "strategy": "priority",
                    "targets": [
                        {"backend": "claude", "model": CLAUDE},
                        {"backend": "local", "model": "sim-model"},
                    ],
                },
            },
            "rules": [
                {
                    "name": "confidential",
                    "when": {"header": {"x-data-class": "confidential"}},
                    "only": "self_hosted",
                }
            ],
        }
        with run_proxy(tmp, cfg) as proxy:
            yield proxy, claude, vllm, Books(log)


@pytest.fixture
def env(stack: tuple[Any, ...]) -> Iterator[tuple[ProxyHandle, SimHandle, SimHandle, Books]]:
    proxy, claude, vllm, books = stack
    for sim in (claude, vllm):
        sim.clear_faults()
    books.mark()
    yield proxy, claude, vllm, books
    for sim in (claude, vllm):
        sim.clear_faults()


def oai(proxy: ProxyHandle) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.base_url, api_key=KEY, max_retries=0, timeout=30)


def ant(proxy: ProxyHandle, key: str = KEY) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=proxy.url, api_key=key, max_retries=0, timeout=30)


def claude_requests(claude: SimHandle) -> int:
    return sum(1 for r in claude.stats()["requests"] if r.get("endpoint", "").endswith("/messages"))


def claude_cost(ev: dict[str, Any]) -> float:
    """What litellm's table says the event's tokens cost (cache reads and writes apart)."""
    price = PriceTable.load().get(CLAUDE)
    assert price.cached_input is not None and price.cache_write_input is not None
    return api_cost(
        price,
        ev["prompt_tokens"],
        ev["completion_tokens"],
        ev["cached_tokens"],
        False,
        ev["cache_write_tokens"],
    )


# -- openai SDK → hybridgate → Claude (translated) -----------------------------------------
def test_openai_chat_to_claude_usage_and_cost_match_the_books(env: tuple[Any, ...]) -> None:
    proxy, _, _, books = env
    r = oai(proxy).chat.completions.with_raw_response.create(
        model="frontier", messages=[{"role": "user", "content": LONG}]
    )
    assert r.headers["x-hybridgate-backend"] == "claude"
    c = r.parse()
    assert c.choices[0].message.content and c.choices[0].finish_reason == "length"
    (ev,) = books.next()
    assert ev["outcome"] == "success" and ev["estimated"] is False
    assert c.usage.prompt_tokens == ev["prompt_tokens"] > READ + WRITE
    assert c.usage.completion_tokens == ev["completion_tokens"] == 8
    assert c.usage.prompt_tokens_details.cached_tokens == ev["cached_tokens"] == READ
    assert ev["cache_write_tokens"] == WRITE
    # Tokens × litellm's prices for that model, cache reads and writes included.
    p = PriceTable.load().get(CLAUDE)
    by_hand = (
        (ev["prompt_tokens"] - READ - WRITE) * p.input
        + READ * p.cached_input
        + WRITE * p.cache_write_input
        + 8 * p.output
    )
    assert round(ev["cost_usd"], 2) == round(by_hand, 2)
    assert ev["cost_usd"] == pytest.approx(by_hand, rel=1e-12)
    assert ev["cost_usd"] == pytest.approx(claude_cost(ev), rel=1e-12)
    text = proxy.metrics_text()
    for kind in ("cache_read_prompt", "cache_write_prompt", "cached_prompt"):
        assert f'kind="{kind}"' in text


def test_openai_stream_with_usage_from_claude(env: tuple[Any, ...]) -> None:
    proxy, _, _, books = env
    chunks = list(
        oai(proxy).chat.completions.create(
            model="frontier",
            messages=[{"role": "user", "content": LONG}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    usage = chunks[-1].usage
    assert usage is not None and not chunks[-1].choices
    (ev,) = books.next()
    assert ev["stream"] is True and ev["outcome"] == "success"
    assert usage.prompt_tokens == ev["prompt_tokens"]
    assert usage.completion_tokens == ev["completion_tokens"] == 8
    assert ev["cached_tokens"] == READ and ev["cache_write_tokens"] == WRITE
    assert ev["cost_usd"] == pytest.approx(claude_cost(ev), rel=1e-12)


@pytest.mark.parametrize("stream", [False, True])
def test_openai_tools_round_trip_through_claude(env: tuple[Any, ...], stream: bool) -> None:
    proxy, _, _, books = env
    client = oai(proxy)
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    if stream:
        calls: dict[int, dict[str, str]] = {}
        finish = None
        for chunk in client.chat.completions.create(
            model="frontier", messages=messages, tools=TOOLS_OPENAI, stream=True
        ):
            for ch in chunk.choices:
                finish = ch.finish_reason or finish
                for tc in ch.delta.tool_calls or ():
                    slot = calls.setdefault(tc.index, {"id": "", "name": "", "args": ""})
                    slot["id"] += tc.id or ""
                    slot["name"] += (tc.function.name or "") if tc.function else ""
                    slot["args"] += (tc.function.arguments or "") if tc.function else ""
        assert finish == "tool_calls"
        call = calls[0]
        call_id, name, args = call["id"], call["name"], call["args"]
    else:
        c = client.chat.completions.create(model="frontier", messages=messages, tools=TOOLS_OPENAI)
        assert c.choices[0].finish_reason == "tool_calls"
        tc = c.choices[0].message.tool_calls[0]
        call_id, name, args = tc.id, tc.function.name, tc.function.arguments
    assert name == "get_weather" and "city" in json.loads(args)
    messages += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": "Sunny, 21 C"},
    ]
    done = client.chat.completions.create(model="frontier", messages=messages, tools=TOOLS_OPENAI)
    assert done.choices[0].message.content and not done.choices[0].message.tool_calls
    assert [e["outcome"] for e in books.next(2)] == ["success", "success"]


def test_claude_400_goes_back_in_openai_shape_without_failover(env: tuple[Any, ...]) -> None:
    proxy, claude, _, books = env
    claude.set_faults(status=400, count=1)
    with pytest.raises(openai.BadRequestError) as err:
        oai(proxy).chat.completions.create(
            model="mixed", messages=[{"role": "user", "content": "hi"}]
        )
    body = err.value.body
    assert isinstance(body, dict) and body["type"] == "invalid_request_error"
    assert body["code"] == "invalid_request_error"
    (ev,) = books.next()
    assert len(ev["attempts"]) == 1 and ev["backend"] == "claude" and ev["status"] == 400


@pytest.mark.parametrize("stream", [False, True])
def test_claude_529_fails_over_with_no_client_error(env: tuple[Any, ...], stream: bool) -> None:
    proxy, claude, _, books = env
    claude.set_faults(status=529, count=1)
    client = oai(proxy)
    msgs = [{"role": "user", "content": "hi"}]
    if stream:
        chunks = list(client.chat.completions.create(model="mixed", messages=msgs, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        assert client.chat.completions.create(model="mixed", messages=msgs).choices[0].message
    (ev,) = books.next()
    assert ev["outcome"] == "success" and ev["backend"] == "local"
    assert [a["reason"] for a in ev["attempts"]] == ["529", None]
    assert (
        proxy.metric(
            "hybridgate_failovers_total", from_backend="claude", to_backend="local", reason="529"
        )
        >= 1
    )


def test_confidential_request_never_reaches_claude(env: tuple[Any, ...]) -> None:
    proxy, claude, _, books = env
    before = claude_requests(claude)
    client = oai(proxy)
    for stream in (False, True):
        r = client.chat.completions.with_raw_response.create(
            model="mixed",
            messages=[{"role": "user", "content": "secret"}],
            extra_headers=CONFIDENTIAL,
            stream=stream,
        )
        assert r.headers["x-hybridgate-backend"] == "local"
        r.parse()
    assert (
        ant(proxy)
        .messages.create(
            model="mixed",
            max_tokens=8,
            messages=[{"role": "user", "content": "secret"}],
            extra_headers=CONFIDENTIAL,
        )
        .content
    )
    assert claude_requests(claude) == before
    assert {e["backend"] for e in books.next(3)} == {"local"}


# -- anthropic SDK → hybridgate → Claude (passthrough) or vLLM (translated) ---------------
@pytest.mark.parametrize("alias", ["frontier", "local", "compat"])
def test_anthropic_sdk_message_usage_matches_the_books(env: tuple[Any, ...], alias: str) -> None:
    proxy, _, _, books = env
    raw = ant(proxy).messages.with_raw_response.create(
        model=alias, max_tokens=8, messages=[{"role": "user", "content": LONG}]
    )
    assert raw.headers["x-hybridgate-backend"] == {"frontier": "claude"}.get(alias, alias)
    m = raw.parse()
    assert m.type == "message" and m.content[0].type == "text" and m.content[0].text
    assert m.stop_reason == "max_tokens"
    (ev,) = books.next()
    assert ev["endpoint"] == "messages" and ev["outcome"] == "success"
    u = m.usage
    prompt = (
        u.input_tokens + (u.cache_read_input_tokens or 0) + (u.cache_creation_input_tokens or 0)
    )
    assert prompt == ev["prompt_tokens"] and u.output_tokens == ev["completion_tokens"] == 8
    assert (u.cache_read_input_tokens or 0) == ev["cached_tokens"]
    assert (u.cache_creation_input_tokens or 0) == ev["cache_write_tokens"]
    if alias != "local":  # passed through: the simulator's cache counts reached the books
        assert ev["cached_tokens"] == READ and ev["cache_write_tokens"] == WRITE
        assert ev["cost_usd"] == pytest.approx(claude_cost(ev), rel=1e-12)


@pytest.mark.parametrize("alias", ["frontier", "local", "compat"])
def test_anthropic_sdk_stream_usage_matches_the_books(env: tuple[Any, ...], alias: str) -> None:
    proxy, _, _, books = env
    kinds: list[str] = []
    with ant(proxy).messages.stream(
        model=alias, max_tokens=8, messages=[{"role": "user", "content": "Stream!"}]
    ) as s:
        for event in s:
            kinds.append(event.type)
        final = s.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_delta" in kinds and "message_delta" in kinds
    assert final.content[0].text
    (ev,) = books.next()
    assert ev["stream"] is True and ev["outcome"] == "success"
    u = final.usage
    prompt = (
        u.input_tokens + (u.cache_read_input_tokens or 0) + (u.cache_creation_input_tokens or 0)
    )
    assert prompt == ev["prompt_tokens"] and u.output_tokens == ev["completion_tokens"] == 8


@pytest.mark.parametrize("alias", ["frontier", "local"])
def test_anthropic_sdk_tools_round_trip(env: tuple[Any, ...], alias: str) -> None:
    proxy, _, _, books = env
    client = ant(proxy)
    msgs: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    with client.messages.stream(
        model=alias, max_tokens=64, messages=msgs, tools=TOOLS_ANTHROPIC
    ) as s:
        first = s.get_final_message()
    assert first.stop_reason == "tool_use"
    use = next(b for b in first.content if b.type == "tool_use")
    assert use.name == "get_weather" and "city" in use.input
    msgs += [
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "Sunny"}],
        },
    ]
    done = client.messages.create(model=alias, max_tokens=64, messages=msgs, tools=TOOLS_ANTHROPIC)
    assert done.stop_reason != "tool_use" and done.content[0].type == "text"
    assert [e["outcome"] for e in books.next(2)] == ["success", "success"]


def test_anthropic_sdk_count_tokens(env: tuple[Any, ...]) -> None:
    proxy, _, _, books = env
    client = ant(proxy)
    msgs = [{"role": "user", "content": "How many tokens is this prompt?"}]
    native = client.messages.with_raw_response.count_tokens(model="frontier", messages=msgs)
    assert "x-hybridgate-token-count" not in native.headers
    assert native.parse().input_tokens > 0
    local = client.messages.with_raw_response.count_tokens(model="local", messages=msgs)
    assert local.headers["x-hybridgate-token-count"] == "estimated"
    assert local.parse().input_tokens > 0
    evs = books.next(2)
    assert all(e["prompt_tokens"] == 0 and e["cost_usd"] == 0 for e in evs)


def test_anthropic_route_errors_in_anthropic_shape(env: tuple[Any, ...]) -> None:
    proxy, claude, _, books = env
    with pytest.raises(anthropic.AuthenticationError) as auth:
        ant(proxy, key="wrong").messages.create(
            model="frontier", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )
    assert auth.value.body["type"] == "error"
    assert auth.value.body["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.NotFoundError) as missing:
        ant(proxy).messages.create(
            model="nope", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )
    assert missing.value.body["error"]["type"] == "not_found_error"
    claude.set_faults(status=529, count=1)
    with pytest.raises(anthropic.InternalServerError) as over:
        ant(proxy).messages.create(
            model="frontier", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )
    assert over.value.status_code == 529
    assert over.value.body["error"]["type"] == "overloaded_error"
    # Bearer auth on the same route (the SDK's auth_token), bare path without /v1.
    r = httpx.post(
        f"{proxy.url}/messages",
        headers={"Authorization": f"Bearer {KEY}", "anthropic-version": "2023-06-01"},
        json={"model": "local", "max_tokens": 4, "messages": [{"role": "user", "content": "x"}]},
        timeout=30,
    )
    assert r.status_code == 200 and r.json()["type"] == "message"
    books.next(4)


@pytest.mark.parametrize("alias", ["frontier", "local"])
def test_anthropic_stream_cut_ends_with_an_anthropic_error_event(
    env: tuple[Any, ...], alias: str
) -> None:
    proxy, claude, vllm, books = env
    (claude if alias == "frontier" else vllm).set_faults(cut_stream_after=3)
    body = {
        "model": alias,
        "max_tokens": 8,
        "stream": True,
        "messages": [{"role": "user", "content": LONG}],
    }
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    r = httpx.post(f"{proxy.base_url}/messages", json=body, headers=headers, timeout=30)
    assert r.status_code == 200
    events = [e for e in r.text.split("\n\n") if e.strip()]
    assert events[0].startswith("event: message_start")
    assert events[-1].startswith("event: error\ndata: ")
    err = json.loads(events[-1].split("data: ", 1)[1])
    assert err["type"] == "error" and err["error"]["type"] == "api_error"
    assert "message_stop" not in r.text
    (ev,) = books.next()
    assert ev["outcome"] == "cut" and ev["completion_tokens"] > 0
