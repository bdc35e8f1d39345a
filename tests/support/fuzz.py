"""The fuzz stack (a proxy in front of two never-faulting simulators) and the rules every
fuzzed answer must keep: no 5xx from the proxy itself, OpenAI's error shape on non-2xx."""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson

from proxy.config import load_config, warnings_for
from tests.support.proxy import ProxyHandle
from tests.support.routing import ADMIN, KEY, hybrid_stack

BODY_LIMIT = 64 * 1024  # small, so bodies near the limit are cheap to generate
ALIASES = ("chat", "frontier", "spill", "embed")
# Fast upstreams that never fault; a small context window keeps every answer short.
LOCAL_ARGS = ("--speed", "1000", "--max-model-len", "512", "--default-max-tokens", "4")
API_ARGS = ("--ttft-ms", "0", "--itl-ms", "0", "--max-model-len", "512",
            "--default-max-tokens", "4")  # fmt: skip


@contextlib.contextmanager
def fuzz_stack(tmp_path: Path) -> Iterator[ProxyHandle]:
    """Every body-reading feature on: cheapest (reads max_tokens), spillover, rules on
    metadata, user and headers, a vLLM target (stream_options rewritten) and an API one."""
    with hybrid_stack(
        tmp_path,
        local_args=LOCAL_ARGS,
        api_args=API_ARGS,
        chat={"strategy": "cheapest"},
        models={
            "frontier": {"targets": [{"backend": "api", "model": "gpt-4o-mini"}]},
            "spill": {
                "strategy": "spillover",
                "spillover": {"max_inflight": 1},
                "targets": [
                    {"backend": "local", "model": "sim-model"},
                    {"backend": "api", "model": "gpt-4o-mini"},
                ],
            },
            "embed": {"targets": [{"backend": "api", "model": "text-embedding-3-small"}]},
        },
        rules=[
            {
                "when": {"metadata": {"data_class": "confidential"}},
                "only": "self_hosted",
                "route_to": "chat",
            },
            {"when": {"user": "batch-job"}, "prefer": "api"},
            {"when": {"header": {"x-route": "frontier"}}, "route_to": "frontier"},
        ],
        limits={"max_body_bytes": BODY_LIMIT, "request_timeout_s": 20},
    ) as (proxy, _, _):
        # A config `check` is happy with: the proxy's own 5xx would then be a bug.
        assert warnings_for(load_config(str(proxy.config_path))) == []
        yield proxy
        assert_still_healthy(proxy)


def client_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}"}


def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN}"}


@dataclass
class Tally:
    """What the fuzzer saw: cases, statuses, and 5xx that the upstream (not the proxy) sent."""

    cases: int = 0
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    upstream_5xx: int = 0

    def summary(self, name: str, seconds: float) -> str:
        common = ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items()))
        return (
            f"{name}: {self.cases} cases in {seconds:.1f} s ({common}); "
            f"upstream 5xx passed back: {self.upstream_5xx}"
        )


def check_answer(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    tally: Tally,
    anthropic: bool = False,
) -> None:
    """The proxy never answers 5xx itself, and every non-2xx is OpenAI's error shape
    (Anthropic's on the /v1/messages routes: `anthropic`)."""
    tally.cases += 1
    tally.statuses[status] += 1
    if status >= 500:
        # An upstream's own 5xx is passed back with the backend named; the proxy's never is.
        assert headers.get("x-hybridgate-backend"), f"proxy answered {status}: {body[:500]!r}"
        tally.upstream_5xx += 1
    if 200 <= status < 300:
        return
    assert headers.get("content-type", "").startswith("application/json"), (status, body[:300])
    if anthropic:
        data = orjson.loads(body)
        assert data["type"] == "error", body[:300]
        assert isinstance(data["error"]["type"], str) and data["error"]["type"], body[:300]
        assert isinstance(data["error"]["message"], str) and data["error"]["message"], body[:300]
        return
    err = orjson.loads(body)["error"]
    assert isinstance(err, dict), body[:300]
    assert {"message", "type", "param", "code"} <= set(err), body[:300]
    assert isinstance(err["message"], str) and err["message"], body[:300]
    assert isinstance(err["type"], str) and err["type"], body[:300]
    assert err["param"] is None or isinstance(err["param"], str), body[:300]
    assert err["code"] is None or isinstance(err["code"], str | int), body[:300]


def assert_still_healthy(proxy: ProxyHandle) -> None:
    """After fuzzing: the process is alive, serves, and never hit an unhandled error."""
    assert proxy.proc.alive(), proxy.proc.log_text()[-3000:]
    assert httpx.get(f"{proxy.url}/health/live", timeout=10).status_code == 200
    r = httpx.post(
        f"{proxy.base_url}/chat/completions",
        headers=client_headers(),
        json={"model": "chat", "max_tokens": 2, "messages": [{"role": "user", "content": "ok"}]},
        timeout=20,
    )
    assert r.status_code == 200, r.text
    log = proxy.proc.log_text()
    assert "Traceback" not in log and "internal error" not in log, log[-3000:]
