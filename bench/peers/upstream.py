"""A fake OpenAI upstream fast enough not to be what a proxy benchmark measures.

The simulator (aiohttp, a GPU step model) costs far more CPU per request than the
proxies it would be timing; this one is an asyncio protocol on httptools under uvloop
that answers from bytes built once per model, so a proxy's added latency and CPU stand
out against a direct call to it. It speaks just what the peer comparison sends:

- `POST /v1/chat/completions`: a `chat.completion` with `usage`, or with `"stream": true`
  an SSE stream of `--chunks` content chunks, a usage chunk when
  `stream_options.include_usage` is set, and `data: [DONE]`;
- `GET /v1/models` (readiness).

`--ttft-ms` delays the first chunk (or the whole answer), `--itl-ms` each further chunk.

    python bench/peers/upstream.py --port 18000 [--chunks 50] [--ttft-ms 0] [--itl-ms 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import uvloop
from h1server import RequestProtocol

PROMPT_TOKENS = 9


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _head(status: str, ctype: bytes, length: int | None) -> bytes:
    framing = b"Transfer-Encoding: chunked" if length is None else b"Content-Length: %d" % length
    return (
        b"HTTP/1.1 "
        + status.encode()
        + b"\r\nContent-Type: "
        + ctype
        + b"\r\n"
        + framing
        + b"\r\n\r\n"
    )


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class Answers:
    """The response bytes for one model, built once: the hot path only writes them."""

    def __init__(self, model: str, chunks: int) -> None:
        usage = {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": chunks,
            "total_tokens": PROMPT_TOKENS + chunks,
        }
        base = {"id": "chatcmpl-bench", "created": 1700000000, "model": model}
        body = _json(
            {
                **base,
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "hi " * chunks},
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            }
        )
        self.full = _head("200 OK", b"application/json", len(body)) + body
        self.stream_head = _head("200 OK", b"text/event-stream", None)
        chunk = {**base, "object": "chat.completion.chunk"}

        def event(obj: Any) -> bytes:
            return _chunk(b"data: " + _json(obj) + b"\n\n")

        self.events = [
            event({**chunk, "choices": [{"index": 0, "delta": {"content": "hi "}}]})
            for _ in range(chunks)
        ]
        self.events.append(
            event({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        )
        self.usage_event = event({**chunk, "choices": [], "usage": usage})
        self.done = _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"


class Upstream(RequestProtocol):
    """One connection: each request answered from `Answers` once its body is complete."""

    def __init__(self, opts: argparse.Namespace, answers: dict[str, Answers]) -> None:
        super().__init__()
        self.opts = opts
        self.answers = answers

    def on_request(self, method: bytes, url: bytes, body: bytes) -> None:
        path = url.split(b"?", 1)[0]
        if method == b"GET" and path == b"/v1/models":
            self.write(_models())
        elif method == b"POST" and path == b"/v1/chat/completions":
            self._chat(body)
        else:
            self.write(_error(404, "not found"))

    def _chat(self, raw: bytes) -> None:
        try:
            req = json.loads(raw)
            model = str(req["model"])
        except (ValueError, KeyError, TypeError):
            self.write(_error(400, "body must be JSON with a model"))
            return
        answers = self.answers.get(model)
        if answers is None:
            answers = self.answers[model] = Answers(model, self.opts.chunks)
        if not req.get("stream"):
            self._later(self.opts.ttft_ms, answers.full)
            return
        tail = (
            [answers.usage_event] if (req.get("stream_options") or {}).get("include_usage") else []
        )
        parts = [answers.stream_head, *answers.events, *tail, answers.done]
        if self.opts.itl_ms <= 0:
            self._later(self.opts.ttft_ms, b"".join(parts))
            return
        # head + first chunk after the TTFT, then one chunk per ITL
        self._later(self.opts.ttft_ms, parts[0] + parts[1])
        for i, part in enumerate(parts[2:], start=1):
            self._later(self.opts.ttft_ms + i * self.opts.itl_ms, part)

    def _later(self, delay_ms: float, data: bytes) -> None:
        if delay_ms <= 0:
            self.write(data)
        else:
            asyncio.get_running_loop().call_later(delay_ms / 1000, self.write, data)


def _models() -> bytes:
    body = _json({"object": "list", "data": [{"id": "bench-model", "object": "model"}]})
    return _head("200 OK", b"application/json", len(body)) + body


def _error(status: int, message: str) -> bytes:
    body = _json(
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        }
    )
    reason = {400: "Bad Request", 404: "Not Found"}[status]
    return _head(f"{status} {reason}", b"application/json", len(body)) + body


async def serve(opts: argparse.Namespace) -> None:
    answers: dict[str, Answers] = {}
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Upstream(opts, answers), "127.0.0.1", opts.port, backlog=4096
    )
    async with server:
        await server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--chunks", type=int, default=50, help="content chunks per stream")
    ap.add_argument("--ttft-ms", type=float, default=0.0)
    ap.add_argument("--itl-ms", type=float, default=0.0)
    uvloop.run(serve(ap.parse_args()))


if __name__ == "__main__":
    main()
