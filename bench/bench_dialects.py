"""Micro-benchmark of stream translation between dialects, per event, against a same-run
passthrough baseline.

- passthrough: UsageTap.feed (what the proxy does today to a stream in the client's own
  dialect) on the OpenAI chunks of a 200-token answer, one event per feed;
- Anthropic → OpenAI: AnthropicToOpenAIStream.feed on the Anthropic events of the same
  answer (message_start, ping, a block start, 200 text deltas, stop, message_delta,
  message_stop), one event per feed, plus finish();
- OpenAI → Anthropic: OpenAIToAnthropicStream.feed on the OpenAI chunks, one per feed;
- the same three with a tool call (arguments streamed in 200 pieces);
- OpenAI chat → Responses (ChatToResponsesStream) on the OpenAI chunks, and Anthropic →
  Responses (AnthropicToResponsesStream: the same writer reading Anthropic's events) on
  the Anthropic events;
- per request, the Responses translations that are not per event: an agent-style request
  (instructions, a tool round in the input, three tools) to a chat body and, chained, to
  an Anthropic body; a chat answer (JSON bytes in) to a response object (JSON bytes out),
  through the ResponsesTranslation glue (bind + request + answer).

Reported: µs per upstream event for each, and the translation's extra over passthrough
(issue 19's target: ≤ 15 µs per event). Times are this process's CPU time
(`process_time_ns`), so a shared, loaded machine's preemption does not count; its cache
contention still does, so compare the lines of one run, not runs on different days.

    python bench/bench_dialects.py [--reps 7] [--streams 200]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from proxy.config import Backend as BackendConfig  # noqa: E402
from proxy.dialects.anthropic_stream import (  # noqa: E402
    AnthropicToOpenAIStream,
    OpenAIToAnthropicStream,
)
from proxy.dialects.responses_response import response_echo  # noqa: E402
from proxy.dialects.responses_stream import (  # noqa: E402
    AnthropicToResponsesStream,
    ChatToResponsesStream,
)
from proxy.request.dialect import RESPONSES_TO_ANTHROPIC, RESPONSES_TO_CHAT  # noqa: E402
from proxy.request.sse import UsageTap  # noqa: E402
from tests.support.dialects import anthropic_sse, openai_sse  # noqa: E402

TOKENS = 200


def answers(tool: bool) -> tuple[list[bytes], list[bytes]]:
    """The same answer as Anthropic's events and as OpenAI's chunks, one event each."""
    words = "".join(f" word{i}" for i in range(TOKENS))
    cuts = list(itertools.accumulate((len(f" word{i}") for i in range(TOKENS)), initial=0))
    if tool:
        args = {"q": words}
        content = [{"type": "tool_use", "id": "toolu_01abc", "name": "search", "input": args}]
        arg_text = orjson.dumps(args).decode()
        cuts = [i * len(arg_text) // TOKENS for i in range(TOKENS)]
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "toolu_01abc",
                    "type": "function",
                    "function": {"name": "search", "arguments": arg_text},
                }
            ],
        }
    else:
        content = [{"type": "text", "text": words}]
        message = {"role": "assistant", "content": words}
    msg = {
        "id": "msg_01abcdefghijklmnopqrstuv",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": content,
        "stop_reason": "tool_use" if tool else "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 120,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 64,
            "output_tokens": TOKENS,
        },
    }
    completion = {
        "id": "chatcmpl-0123456789abcdef",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "meta-llama/Llama-3.1-8B-Instruct",
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": "tool_calls" if tool else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 184,
            "completion_tokens": TOKENS,
            "total_tokens": 384,
            "prompt_tokens_details": {"cached_tokens": 64},
        },
    }
    split = lambda raw: [e + b"\n\n" for e in raw.split(b"\n\n") if e]  # noqa: E731
    return split(anthropic_sse(msg, cuts)), split(openai_sse(completion, cuts))


def per_event_us(run: Callable[[], int], streams: int, reps: int) -> float:
    """Median over reps of the time per upstream event, in µs."""
    times = []
    for _ in range(reps):
        events = 0
        t0 = time.process_time_ns()
        for _ in range(streams):
            events += run()
        times.append((time.process_time_ns() - t0) / events / 1000)
    return statistics.median(times)


def passthrough(events: list[bytes]) -> Callable[[], int]:
    def run() -> int:
        tap = UsageTap(strip_usage_chunk=False, strip_inline_usage=False, inline_expected=False)
        for e in events:
            tap.feed(e)
        tap.flush()
        tap.usage()
        return len(events)

    return run


def translate(events: list[bytes], make: Callable[[], Any]) -> Callable[[], int]:
    def run() -> int:
        t = make()
        for e in events:
            t.feed(e)
        t.finish()
        return len(events)

    return run


AGENT_REQUEST: dict[str, Any] = {
    "model": "alias",
    "instructions": "You are a coding agent. Use the tools to answer.",
    "input": [
        {"role": "user", "content": "What is in the repository's README?"},
        {
            "type": "function_call",
            "call_id": "call_1",
            "name": "read_file",
            "arguments": '{"path": "README.md"}',
        },
        {"type": "function_call_output", "call_id": "call_1", "output": "# hybridgate\n" * 20},
        {"role": "user", "content": "Summarise it in one line."},
    ],
    "tools": [
        {
            "type": "function",
            "name": name,
            "description": f"The {name} tool.",
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
        }
        for name in ("read_file", "list_dir", "grep")
    ],
    "max_output_tokens": 512,
    "stream": True,
    "store": True,
    "reasoning": {"effort": "low"},
}


ECHO = response_echo(AGENT_REQUEST)


def per_request_us(run: Callable[[], None], n: int, reps: int) -> float:
    """Median over reps of the time per call, in µs."""
    times = []
    for _ in range(reps):
        t0 = time.process_time_ns()
        for _ in range(n):
            run()
        times.append((time.process_time_ns() - t0) / n / 1000)
    return statistics.median(times)


def responses_requests(n: int, reps: int) -> None:
    chat_cfg = BackendConfig(base_url="http://127.0.0.1:8000", pool="gpu")
    claude_cfg = BackendConfig(type="anthropic")
    body = orjson.loads(
        orjson.dumps(
            {
                "id": "chatcmpl-0123456789abcdef",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": "meta-llama/Llama-3.1-8B-Instruct",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "word " * TOKENS},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 184, "completion_tokens": TOKENS, "total_tokens": 384},
            }
        )
    )
    raw_answer = orjson.dumps(body)

    def to_chat() -> None:
        RESPONSES_TO_CHAT.bind(AGENT_REQUEST, "resp_0123").request(
            AGENT_REQUEST, "llama", chat_cfg, None
        )

    def to_anthropic() -> None:
        RESPONSES_TO_ANTHROPIC.bind(AGENT_REQUEST, "resp_0123").request(
            AGENT_REQUEST, "claude", claude_cfg, None
        )

    bound = RESPONSES_TO_CHAT.bind(AGENT_REQUEST, "resp_0123")

    def answer() -> None:
        bound.answer(raw_answer, "drop")

    print("\nResponses, per request (bind + translate; the answer: JSON bytes in and out)")
    print(f"  request -> chat                        {per_request_us(to_chat, n, reps):6.2f} µs")
    print(
        f"  request -> Anthropic (through chat)    {per_request_us(to_anthropic, n, reps):6.2f} µs"
    )
    print(f"  chat answer ({TOKENS} tokens) -> response  {per_request_us(answer, n, reps):6.2f} µs")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--streams", type=int, default=200)
    a = p.parse_args()
    print(
        f"{TOKENS}-token answers, {a.streams} streams x {a.reps} reps, median µs per upstream event"
    )
    for tool in (False, True):
        anth, oai = answers(tool)
        base = per_event_us(passthrough(oai), a.streams, a.reps)
        a2o = per_event_us(
            translate(anth, lambda: AnthropicToOpenAIStream(include_usage=True)), a.streams, a.reps
        )
        o2a = per_event_us(translate(oai, OpenAIToAnthropicStream), a.streams, a.reps)
        kind = "tool call" if tool else "text"
        print(f"\n{kind}: {len(anth)} Anthropic events, {len(oai)} OpenAI events")
        print(f"  passthrough (UsageTap, OpenAI chunks)  {base:6.2f} µs/event")
        print(f"  Anthropic -> OpenAI                    {a2o:6.2f} µs/event  (+{a2o - base:.2f})")
        print(f"  OpenAI -> Anthropic                    {o2a:6.2f} µs/event  (+{o2a - base:.2f})")
        o2r = per_event_us(
            translate(oai, lambda: ChatToResponsesStream("resp_0123", 1, ECHO)),
            a.streams,
            a.reps,
        )
        a2r = per_event_us(
            translate(anth, lambda: AnthropicToResponsesStream("resp_0123", 1, ECHO)),
            a.streams,
            a.reps,
        )
        print(f"  OpenAI chat -> Responses               {o2r:6.2f} µs/event  (+{o2r - base:.2f})")
        print(f"  Anthropic -> Responses                 {a2r:6.2f} µs/event  (+{a2r - base:.2f})")
    responses_requests(2000, a.reps)


if __name__ == "__main__":
    main()
