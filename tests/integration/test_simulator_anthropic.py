"""The simulator's anthropic mode as the official `anthropic` SDK meets it: a real server
on loopback, the SDK's own parsing of bodies, streams, usage and errors."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import httpx
import orjson
import pytest

from simulator.tokens import count_text, filler_text
from tests.support.sim import SimHandle, run_simulator

KEY = "sk-ant-sim"
PROMPT = "Say something about GPUs, please."
USER = [{"role": "user", "content": PROMPT}]
SYSTEM = "You are terse."
TOOLS = [
    {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"],
        },
    }
]
READ, WRITE = 3, 2  # the simulator's cache knobs


@pytest.fixture(scope="module")
def module_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimHandle]:
    args = [
        "--ttft-ms",
        "0",
        "--itl-ms",
        "0",
        "--require-key",
        KEY,
        "--default-max-tokens",
        "8",
        "--cache-read-tokens",
        str(READ),
        "--cache-creation-tokens",
        str(WRITE),
    ]
    with run_simulator(tmp_path_factory.mktemp("anthropic"), "anthropic", args=args) as sim:
        yield sim


@pytest.fixture
def sim(module_sim: SimHandle) -> Iterator[SimHandle]:
    module_sim.clear_faults()
    module_sim.reset()
    yield module_sim
    module_sim.clear_faults()


@pytest.fixture
def client(sim: SimHandle) -> Iterator[anthropic.Anthropic]:
    c = anthropic.Anthropic(base_url=sim.url, api_key=KEY, max_retries=0, timeout=20.0)
    yield c
    c.close()


def prompt_tokens(system: str | None = None, tools: list | None = None) -> int:
    total = count_text(PROMPT) + (count_text(system) if system else 0)
    if tools:
        total += count_text(orjson.dumps(tools).decode())
    return total


def test_create_text_usage_with_cache_fields(client: anthropic.Anthropic, sim: SimHandle) -> None:
    msg = client.messages.create(model="claude-sim", max_tokens=100, system=SYSTEM, messages=USER)
    prompt = prompt_tokens(SYSTEM)
    assert msg.type == "message" and msg.role == "assistant" and msg.model == "claude-sim"
    assert msg.id.startswith("msg_")
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == filler_text(8)
    assert msg.stop_reason == "end_turn" and msg.stop_sequence is None
    u = msg.usage
    assert (u.input_tokens, u.cache_read_input_tokens, u.cache_creation_input_tokens) == (
        prompt - READ - WRITE,
        READ,
        WRITE,
    )
    assert u.output_tokens == 8
    assert msg._request_id is not None  # the `request-id` header, as the API sends it
    rec = sim.stats()["requests"][-1]
    assert rec["endpoint"] == "/v1/messages" and rec["status"] == 200
    assert (rec["prompt_tokens"], rec["cached_tokens"], rec["cache_creation_tokens"]) == (
        prompt,
        READ,
        WRITE,
    )
    assert rec["completion_tokens"] == 8


def test_max_tokens_is_the_stop_reason_when_it_is_the_limit(client: anthropic.Anthropic) -> None:
    msg = client.messages.create(model="claude-sim", max_tokens=3, messages=USER)
    assert msg.stop_reason == "max_tokens" and msg.usage.output_tokens == 3
    assert msg.content[0].text == filler_text(3)


def test_stream_text_event_sequence_and_final_message(client: anthropic.Anthropic) -> None:
    with client.messages.stream(model="claude-sim", max_tokens=100, messages=USER) as stream:
        kinds = [ev.type for ev in stream]
        final = stream.get_final_message()
    # The SDK adds its own `text` events beside content_block_delta; the API's are these.
    api = [k for k in kinds if k != "text"]
    assert api == ["message_start", "content_block_start"] + ["content_block_delta"] * 8 + [
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert final.content[0].text == filler_text(8)
    assert final.stop_reason == "end_turn"
    u = final.usage
    assert (
        u.input_tokens,
        u.cache_read_input_tokens,
        u.cache_creation_input_tokens,
        u.output_tokens,
    ) == (prompt_tokens() - READ - WRITE, READ, WRITE, 8)


def test_stream_raw_bytes_have_event_lines_and_a_ping(sim: SimHandle) -> None:
    body = {"model": "claude-sim", "max_tokens": 2, "messages": USER, "stream": True}
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    r = httpx.post(f"{sim.url}/v1/messages", json=body, headers=headers, timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    names = [ln[7:] for ln in r.text.split("\n") if ln.startswith("event: ")]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert "[DONE]" not in r.text


def test_tool_use_create_and_stream_with_input_json_delta(client: anthropic.Anthropic) -> None:
    msg = client.messages.create(model="claude-sim", max_tokens=50, messages=USER, tools=TOOLS)
    assert msg.stop_reason == "tool_use"
    (block,) = msg.content
    assert block.type == "tool_use" and block.name == "get_weather"
    assert block.id.startswith("toolu_") and block.input == {"city": "sim", "days": 1}
    with client.messages.stream(
        model="claude-sim",
        max_tokens=50,
        messages=USER,
        tools=TOOLS,
        tool_choice={"type": "tool", "name": "get_weather"},
    ) as stream:
        deltas = [ev.delta.partial_json for ev in stream if ev.type == "content_block_delta"]
        final = stream.get_final_message()
    assert len(deltas) == 8 and orjson.loads("".join(deltas)) == {"city": "sim", "days": 1}
    assert final.content[0].input == {"city": "sim", "days": 1}
    assert final.stop_reason == "tool_use"


def test_tool_result_gets_a_text_answer(client: anthropic.Anthropic) -> None:
    first = client.messages.create(model="claude-sim", max_tokens=50, messages=USER, tools=TOOLS)
    call = first.content[0]
    history = [
        *USER,
        {"role": "assistant", "content": [call.model_dump()]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}],
        },
    ]
    second = client.messages.create(
        model="claude-sim", max_tokens=50, messages=history, tools=TOOLS
    )
    assert second.stop_reason == "end_turn" and second.content[0].type == "text"
    none = client.messages.create(
        model="claude-sim", max_tokens=50, messages=USER, tools=TOOLS, tool_choice={"type": "none"}
    )
    assert none.content[0].type == "text"


def test_count_tokens(client: anthropic.Anthropic, sim: SimHandle) -> None:
    got = client.messages.count_tokens(
        model="claude-sim", system=SYSTEM, messages=USER, tools=TOOLS
    )
    assert got.input_tokens == prompt_tokens(SYSTEM, TOOLS)
    rec = sim.stats()["requests"][-1]
    assert rec["endpoint"] == "/v1/messages/count_tokens" and rec["completion_tokens"] == 0


def test_errors_are_the_sdks_typed_exceptions(client: anthropic.Anthropic, sim: SimHandle) -> None:
    sim.set_faults(status=429, count=1, retry_after=2)
    with pytest.raises(anthropic.RateLimitError) as rl:
        client.messages.create(model="claude-sim", max_tokens=5, messages=USER)
    # The status's own message, not the 529's "Overloaded" for every Anthropic-shaped fault.
    assert rl.value.body["error"] == {
        "type": "rate_limit_error",
        "message": "Rate limit reached for requests (simulated fault)",
    }
    assert rl.value.response.headers["retry-after"] == "2"
    sim.set_faults(status=529, count=1)
    with pytest.raises(anthropic.InternalServerError) as ov:
        client.messages.create(model="claude-sim", max_tokens=5, messages=USER)
    assert ov.value.status_code == 529
    assert ov.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    if hasattr(anthropic, "OverloadedError"):
        assert isinstance(ov.value, anthropic.OverloadedError)
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(model="claude-sim", max_tokens=0, messages=USER)
    assert bad.value.body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in bad.value.body["error"]["message"]
    stats = sim.stats()
    assert stats["responses_by_status"] == {"429": 1, "529": 1, "400": 1}
    assert [r["fault"] for r in stats["requests"]] == [True, True, False]


def test_auth_and_version_headers(sim: SimHandle) -> None:
    with (
        anthropic.Anthropic(base_url=sim.url, api_key="wrong", max_retries=0) as c,
        pytest.raises(anthropic.AuthenticationError) as auth,
    ):
        c.messages.create(model="claude-sim", max_tokens=5, messages=USER)
    assert auth.value.body["error"] == {
        "type": "authentication_error",
        "message": "invalid x-api-key",
    }
    body = {"model": "claude-sim", "max_tokens": 5, "messages": USER}
    r = httpx.post(f"{sim.url}/v1/messages", json=body, headers={"x-api-key": KEY}, timeout=10)
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "anthropic-version: header is required"
    r = httpx.post(
        f"{sim.url}/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"}, timeout=10
    )
    assert r.status_code == 401 and r.json()["type"] == "error"


def test_model_filter_and_cut_stream(tmp_path, client: anthropic.Anthropic, sim: SimHandle) -> None:
    sim.set_faults(cut_stream_after=3)
    with (
        pytest.raises((httpx.HTTPError, anthropic.APIError)),
        client.messages.stream(model="claude-sim", max_tokens=100, messages=USER) as stream,
    ):
        for _ in stream:
            pass
    assert sim.stats()["cut"] == 1
    with (
        run_simulator(tmp_path, "anthropic", args=["--model", "claude-x"]) as only,
        anthropic.Anthropic(base_url=only.url, api_key="k", max_retries=0) as c,
    ):
        with pytest.raises(anthropic.NotFoundError) as nf:
            c.messages.create(model="claude-y", max_tokens=5, messages=USER)
        assert nf.value.body["error"]["type"] == "not_found_error"
        assert c.messages.create(model="claude-x", max_tokens=5, messages=USER).usage
