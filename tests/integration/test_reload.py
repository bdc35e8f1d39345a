"""Hot reload against a running proxy: during a stream, refused configs, and SIGHUP."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from tests.support.proxy import ProxyHandle, metric_value
from tests.support.routing import (
    ADMIN,
    KEY,
    MSGS,
    ask,
    chat_count,
    content_events,
    hybrid_stack,
    parse_sse,
    wait_for,
)
from tests.support.sim import SimHandle

USD_PER_GPU_SECOND = 3.6 / 3600  # hybrid_config's pool


def only(backend: str, model: str) -> dict[str, Any]:
    return {"targets": [{"backend": backend, "model": model}]}


def reload(
    proxy: ProxyHandle, config: dict[str, Any] | str | None, key: str = ADMIN
) -> httpx.Response:
    if config is not None:
        text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
        proxy.config_path.write_text(text)
    return httpx.post(
        f"{proxy.url}/admin/reload", headers={"Authorization": f"Bearer {key}"}, timeout=30
    )


class Stream(threading.Thread):
    """A long stream read in the background; `started` is set at its first event."""

    def __init__(self, proxy: ProxyHandle, max_tokens: int) -> None:
        super().__init__(daemon=True)
        self.proxy, self.max_tokens = proxy, max_tokens
        self.started = threading.Event()
        self.raw = b""
        self.backend: str | None = None

    def run(self) -> None:
        body = {"model": "chat", "messages": MSGS, "max_tokens": self.max_tokens, "stream": True}
        headers = {"Authorization": f"Bearer {KEY}"}
        with httpx.stream(
            "POST", f"{self.proxy.base_url}/chat/completions", json=body, headers=headers,
            timeout=60,
        ) as r:  # fmt: skip
            self.backend = r.headers.get("x-hybridgate-backend")
            for chunk in r.iter_raw():
                self.raw += chunk
                self.started.set()
        self.started.set()


Stack = tuple[ProxyHandle, SimHandle, SimHandle, dict[str, Any]]


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("reload")
    chat = only("local", "sim-model")
    with hybrid_stack(tmp, local_args=["--speed", "1"], chat=chat) as (proxy, local, api):
        yield proxy, local, api, yaml.safe_load(proxy.config_path.read_text())


@pytest.fixture
def stack(running: Stack) -> Stack:
    """The running proxy, back on its first config (itself a reload) for each test."""
    proxy, _, _, base = running
    assert reload(proxy, base).status_code == 200
    return running


def test_reload_during_a_stream_keeps_it_and_routes_new_requests_by_the_new_config(
    stack: Stack,
) -> None:
    proxy, _, _, base = stack
    before = proxy.metrics_text()
    stream = Stream(proxy, max_tokens=150)
    stream.start()
    assert stream.started.wait(30)
    provisioned_before = proxy.metric("hybridgate_gpu_provisioned_seconds_total", pool="h100")

    r = reload(proxy, {**base, "models": {"chat": only("api", "gpt-4o-mini")}})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "reloaded"
    assert stream.is_alive()  # the reload happened while the stream was running
    a = ask(proxy.base_url)
    assert a.status == 200 and a.backend == "api"

    stream.join(60)
    events, done = parse_sse(stream.raw)
    assert stream.backend == "local" and done
    assert content_events(events) == 150 and not any("error" in e for e in events)

    # The books went on through the swap: counters kept, the pool's GPU-seconds kept
    # accruing, and the stream's cost is exactly its share of the pool's busy time.
    after = proxy.metrics_text()

    def m(name: str, **labels: str) -> float:
        return metric_value(after, name, **labels)

    def delta(name: str, **labels: str) -> float:
        return m(name, **labels) - metric_value(before, name, **labels)

    local_ok = {"alias": "chat", "backend": "local", "outcome": "success"}
    assert delta("hybridgate_requests_total", **local_ok) == 1
    assert delta("hybridgate_requests_total", alias="chat", backend="api", outcome="success") == 1
    assert delta("hybridgate_tokens_total", backend="local", kind="completion") == 150
    assert m("hybridgate_gpu_provisioned_seconds_total", pool="h100") > provisioned_before
    busy = m("hybridgate_gpu_busy_seconds_total", pool="h100")
    assert busy > 0
    assert m("hybridgate_cost_usd_total", backend="local") == pytest.approx(
        busy * USD_PER_GPU_SECOND, rel=1e-9
    )


def test_invalid_configs_are_refused_with_their_problems_and_the_old_one_runs_on(
    stack: Stack,
) -> None:
    proxy, _, api, base = stack
    api_before = chat_count(api)
    assert reload(proxy, None, key=KEY).status_code == 401  # a client key is not the admin's

    bad = {**base, "models": {"chat": only("nope", "gpt-4o-mini")}, "breaker": {"cooldown_s": -1}}
    r = reload(proxy, bad)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "invalid_config" and err["type"] == "invalid_request_error"
    assert any(
        p.startswith("models.chat.targets[0].backend: unknown backend 'nope'")
        for p in err["problems"]
    )
    assert any(p.startswith("breaker.cooldown_s") for p in err["problems"])

    r = reload(proxy, "models: [unclosed")
    assert r.status_code == 400 and r.json()["error"]["problems"][0].startswith("<yaml>")

    pools = {"h100": {"gpus": 2, "billing": "rental", "usd_per_gpu_hour": 3.6}}
    r = reload(proxy, {**base, "gpu_pools": pools})
    assert r.status_code == 400
    assert "gpu_pools.h100.gpus" in r.text and "needs a restart" in r.text

    a = ask(proxy.base_url)  # the first config still serves
    assert a.status == 200 and a.backend == "local"
    assert chat_count(api) == api_before


def test_sighup_reloads_the_file(
    stack: Stack,
) -> None:
    proxy, _, _, base = stack
    cfg = {**base, "models": {"chat": only("api", "gpt-4o-mini")}}
    proxy.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    proxy.proc.signal(signal.SIGHUP)
    wait_for(lambda: ask(proxy.base_url).backend == "api", "SIGHUP to reload the config")
    assert proxy.proc.alive()
    # A broken file on SIGHUP is logged and ignored.
    proxy.config_path.write_text("backends: {}\n")
    proxy.proc.signal(signal.SIGHUP)
    wait_for(lambda: "config reload refused" in proxy.proc.log_text(), "the refusal in the log")
    assert ask(proxy.base_url).backend == "api"
