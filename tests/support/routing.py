"""Helpers for the routing, failover, breaker and reload tests: configs and one-call asks."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.support.proxy import ProxyHandle
from tests.support.sim import SimHandle
from tests.support.stack import SIM_ARGS, run_stack

KEY = "sk-routing-test-key-0123456789"
ADMIN = "admin-routing-test-key-98765"
MSGS = [{"role": "user", "content": "Which path is cheaper today?"}]
CHAT = "/v1/chat/completions"


def hybrid_config(
    local: SimHandle | str,
    api: SimHandle | str,
    *,
    chat: dict[str, Any] | None = None,
    local_backend: dict[str, Any] | None = None,
    api_backend: dict[str, Any] | None = None,
    backends: dict[str, Any] | None = None,
    models: dict[str, Any] | None = None,
    **sections: Any,
) -> dict[str, Any]:
    """A self-hosted simulator then an API simulator behind alias `chat` (priority).

    `chat`, `local_backend` and `api_backend` are merged into the alias and the
    backends, `backends` and `models` add more, other keywords replace sections.
    """
    local_url = local if isinstance(local, str) else local.base_url
    api_url = api if isinstance(api, str) else api.base_url
    cfg: dict[str, Any] = {
        "auth": {"admin_key": ADMIN, "keys": [{"key": KEY, "tenant": "team-a"}]},
        "tenants": {"team-a": {}},
        "gpu_pools": {"h100": {"gpus": 1, "billing": "rental", "usd_per_gpu_hour": 3.6}},
        "backends": {
            "local": {"base_url": local_url, "pool": "h100", **(local_backend or {})},
            "api": {"base_url": api_url, "api_key": "sk-upstream", **(api_backend or {})},
            **(backends or {}),
        },
        "models": {
            "chat": {
                "targets": [
                    {"backend": "local", "model": "sim-model"},
                    {"backend": "api", "model": "gpt-4o-mini"},
                ],
                "compare_to": {"model": "gpt-4o-mini"},
                **(chat or {}),
            },
            **(models or {}),
        },
        "health_checks": {"interval_s": 60},
        "breaker": {"failure_threshold": 1000, "cooldown_s": 30},
    }
    cfg.update(sections)
    return cfg


@contextlib.contextmanager
def hybrid_stack(
    tmp_path: Path,
    local_args: Sequence[str] = SIM_ARGS,
    api_args: Sequence[str] = SIM_ARGS,
    proxy_args: Sequence[str] = (),
    **config: Any,
) -> Iterator[tuple[ProxyHandle, SimHandle, SimHandle]]:
    """A vLLM-like and an API-like simulator behind a proxy running `hybrid_config`."""
    with run_stack(
        tmp_path,
        lambda local, api: hybrid_config(local, api, **config),
        local_args=local_args,
        api_args=api_args,
        proxy_args=proxy_args,
    ) as s:
        yield s.proxy, s.local, s.api


def wait_for(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """Poll `check` until it holds (a bound on waiting, not an assertion about speed)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def chat_count(sim: SimHandle) -> int:
    """Chat completion requests the simulator received (health probes not counted)."""
    return int(sim.stats(detail=False)["requests_by_endpoint"].get(CHAT, 0))


@dataclass
class Answer:
    status: int
    backend: str | None
    attempts: int
    text: str  # content of a 200, or the error body
    events: list[dict[str, Any]]  # a stream's data events, parsed ([DONE] excluded)
    done: bool  # a stream ended with [DONE]
    retry_after: str | None

    @property
    def error(self) -> dict[str, Any] | None:
        if self.status != 200:
            return orjson.loads(self.text).get("error")
        for e in self.events:
            if "error" in e:
                return e["error"]
        return None


def ask(
    base_url: str,
    stream: bool = False,
    model: str = "chat",
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
    **body: Any,
) -> Answer:
    """One chat completion over plain HTTP, stream or not, with what the proxy said."""
    payload: dict[str, Any] = {"model": model, "messages": MSGS, "max_tokens": 5, **body}
    if stream:
        payload["stream"] = True
    hdrs = {"Authorization": f"Bearer {KEY}", **(headers or {})}
    url = f"{base_url}/chat/completions"
    with _client().stream("POST", url, json=payload, headers=hdrs, timeout=timeout) as r:
        raw = r.read()
    backend = r.headers.get("x-hybridgate-backend")
    attempts = int(r.headers.get("x-hybridgate-attempts", "0"))
    retry_after = r.headers.get("retry-after")
    if r.status_code != 200 or not stream:
        text = raw.decode()
        if r.status_code == 200:
            text = orjson.loads(raw)["choices"][0]["message"]["content"]
        return Answer(r.status_code, backend, attempts, text, [], False, retry_after)
    events, done = parse_sse(raw)
    text = "".join(
        (c.get("delta") or {}).get("content") or "" for e in events for c in e.get("choices", [])
    )
    return Answer(200, backend, attempts, text, events, done, retry_after)


@functools.cache
def _client() -> httpx.Client:
    """One pooled client: a fresh httpx.Client per call costs more than the request."""
    return httpx.Client()


def parse_sse(raw: bytes) -> tuple[list[dict[str, Any]], bool]:
    events: list[dict[str, Any]] = []
    done = False
    for block in raw.split(b"\n\n"):
        line = block.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            done = True
        else:
            events.append(orjson.loads(data))
    return events, done


def content_events(events: list[dict[str, Any]]) -> int:
    """Stream events that carry generated text (one token each from the simulator)."""
    return sum(
        1 for e in events for c in e.get("choices", []) if (c.get("delta") or {}).get("content")
    )
