"""A scripted OpenAI-like upstream on loopback: each POST answered by a test's function.

For answers the simulator does not give (an error that quotes the Authorization header it
was sent, vLLM's exact context-length body, an answer with or without x-request-id):

    def answer(req: SeenRequest) -> Answer:
        return Answer(400, {"error": {"message": req.headers["authorization"]}})

    with scripted_upstream(answer) as up:
        cfg = {"backends": {"b": {"base_url": up.base_url, ...}}, ...}
"""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SeenRequest:
    path: str
    headers: dict[str, str]  # lower-cased names
    body: dict[str, Any]


@dataclass
class Answer:
    status: int
    body: Any  # a dict/list (sent as JSON) or bytes (sent as they are)
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


class ScriptedUpstream:
    def __init__(self, server: http.server.ThreadingHTTPServer) -> None:
        self.server = server
        self.requests: list[SeenRequest] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/v1"


def _handler_class(
    answer: Callable[[SeenRequest], Answer], up: list[ScriptedUpstream]
) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            req = SeenRequest(
                self.path,
                {k.lower(): v for k, v in self.headers.items()},
                json.loads(raw) if raw else {},
            )
            up[0].requests.append(req)
            self._send(answer(req))

        def do_GET(self) -> None:  # health probes and /models
            self._send(Answer(200, {"object": "list", "data": []}))

        def _send(self, a: Answer) -> None:
            out = a.body if isinstance(a.body, bytes) else json.dumps(a.body).encode()
            self.send_response(a.status)
            self.send_header("Content-Type", a.content_type)
            self.send_header("Content-Length", str(len(out)))
            for k, v in a.headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@contextlib.contextmanager
def scripted_upstream(answer: Callable[[SeenRequest], Answer]) -> Iterator[ScriptedUpstream]:
    """Serve `answer` on a free loopback port in a thread; stopped whatever happens."""
    holder: list[ScriptedUpstream] = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(answer, holder))
    server.daemon_threads = True
    up = ScriptedUpstream(server)
    holder.append(up)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield up
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def sse(*events: dict[str, Any] | str) -> bytes:
    """An SSE body: each event a JSON object or a literal (`[DONE]`)."""
    return b"".join(
        b"data: " + (e.encode() if isinstance(e, str) else json.dumps(e).encode()) + b"\n\n"
        for e in events
    )
