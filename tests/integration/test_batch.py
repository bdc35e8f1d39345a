"""Batch jobs (proxy/batch/): OpenAI's Batch API at the proxy, with the official SDK's
`client.files` and `client.batches` against a real proxy process and real simulators.

- a 500-line batch on a mostly idle pool runs entirely self-hosted, each line once, and
  its books (request log, live report, Prometheus) equal the sum of its lines;
- with the pool saturated by live traffic, the lines go to the provider's Batch API (the
  api-mode simulator) and are priced at its batch tier;
- a proxy SIGKILLed mid-batch resumes (state in a real redis-server) with every line
  done exactly once: the simulator counts each line's marker;
- a tenant sees only its own files and batches; bad lines get per-line errors.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.proxy import ProxyHandle, read_log, run_proxy
from tests.support.redis import run_redis
from tests.support.servers import free_port
from tests.support.sim import SimHandle, run_simulator

KEY_A, KEY_B, ADMIN = "sk-batch-tenant-a", "sk-batch-tenant-b", "sk-batch-admin"
DONE = ("completed", "failed", "expired", "cancelled")
PRICE_MODEL = "gpt-4o-mini"  # litellm's table has its batch tier


def config(tmp: Path, sim: SimHandle, api: SimHandle | None = None, **batch: Any) -> dict[str, Any]:
    backends: dict[str, Any] = {
        "local": {"base_url": sim.base_url, "pool": "p", "max_concurrency": 8}
    }
    targets = [{"backend": "local", "model": "sim-model"}]
    if api is not None:
        backends["oai"] = {"base_url": api.base_url, "api_key": "sk-upstream", "batch": True}
        targets.append({"backend": "oai", "model": PRICE_MODEL})
    return {
        "auth": {
            "admin_key": ADMIN,
            "keys": [{"key": KEY_A, "tenant": "a"}, {"key": KEY_B, "tenant": "b"}],
        },
        "gpu_pools": {"p": {"gpus": 1, "billing": "rental", "usd_per_gpu_hour": 2.0}},
        "backends": backends,
        "models": {"chat": {"targets": targets, "compare_to": {"model": PRICE_MODEL}}},
        "health_checks": {"interval_s": 60},
        "request_log": {"path": str(tmp / "requests.jsonl")},
        "batch": {"dir": str(tmp / "batch"), "window_s": 120, "poll_interval_s": 0.2, **batch},
    }


def jsonl(n: int, prefix: str = "r", max_tokens: int = 4) -> bytes:
    """n chat lines; each body's `user` is its custom_id, the simulator's marker."""
    lines = [
        {
            "custom_id": f"{prefix}{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "chat",
                "max_tokens": max_tokens,
                "user": f"{prefix}{i}",
                "messages": [{"role": "user", "content": f"line {i}"}],
            },
        }
        for i in range(n)
    ]
    return "\n".join(json.dumps(x) for x in lines).encode() + b"\n"


def client(proxy: ProxyHandle, key: str = KEY_A) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.base_url, api_key=key, max_retries=0, timeout=20)


def submit(c: openai.OpenAI, content: bytes) -> Any:
    f = c.files.create(file=("in.jsonl", content), purpose="batch")
    return c.batches.create(
        input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
    )


def wait_done(c: openai.OpenAI, batch_id: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        b = c.batches.retrieve(batch_id)
        if b.status in DONE:
            return b
        assert time.monotonic() < deadline, f"batch still {b.status}: {b.request_counts}"
        time.sleep(0.1)


def results(c: openai.OpenAI, b: Any) -> list[dict[str, Any]]:
    out = []
    for fid in (b.output_file_id, b.error_file_id):
        if fid:
            out += [json.loads(x) for x in c.files.content(fid).text.splitlines()]
    return out


def report(proxy: ProxyHandle) -> dict[str, Any]:
    r = httpx.get(
        f"{proxy.url}/costs/report", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10
    )
    r.raise_for_status()
    return r.json()["batch"]  # type: ignore[no-any-return]


def batch_events(tmp: Path, expect: int) -> list[dict[str, Any]]:
    return [e for e in read_log(tmp / "requests.jsonl", expect) if e["kind"] == "batch"]


def test_idle_pool_runs_500_lines_self_hosted_and_books_balance(tmp_path: Path) -> None:
    with (
        run_simulator(tmp_path, "vllm", args=["--speed", "100"]) as sim,
        run_simulator(tmp_path, "api", args=["--speed", "100"], name="api") as api,
        run_proxy(
            tmp_path,
            config(tmp_path, sim, api, aliases={"chat": {"provider": "oai", "max_inflight": 6}}),
        ) as proxy,
    ):
        c = client(proxy)
        b = wait_done(c, submit(c, jsonl(500)).id)
        assert b.status == "completed"
        assert (b.request_counts.total, b.request_counts.completed) == (500, 500)
        lines = results(c, b)
        assert sorted(x["custom_id"] for x in lines) == sorted(f"r{i}" for i in range(500))
        assert all(x["response"]["status_code"] == 200 for x in lines)
        assert all(x["response"]["body"]["object"] == "chat.completion" for x in lines)
        # Every line ran once, on our GPUs; the provider never saw a batch.
        by_user = sim.stats(detail=False)["requests_by_user"]
        assert by_user == {f"r{i}": 1 for i in range(500)}
        assert api.stats(detail=False)["batches_created"] == 0
        assert (
            proxy.metric("hybridgate_batch_lines_total", outcome="completed", ran="self_hosted")
            == 500
        )
        # The books are the sum of the lines: one kind=batch event each.
        events = batch_events(tmp_path, 500)
        assert len(events) == 500
        assert all(e["self_hosted"] and e["pool"] == "p" for e in events)
        books = report(proxy)
        assert books["lines"] == {"self_hosted": 500}
        gpu = sum(e["gpu_seconds"] for e in events)
        assert gpu > 0
        assert books["busy_gpu_seconds_filled"] == pytest.approx(gpu, rel=1e-9)
        assert books["idle_cost_absorbed_usd"] == pytest.approx(
            sum(e["cost_usd"] for e in events), rel=1e-9
        )
        assert proxy.metric("hybridgate_batch_gpu_seconds_total", pool="p") == pytest.approx(
            gpu, rel=1e-9
        )
        tokens = sum(e["prompt_tokens"] + e["completion_tokens"] for e in events)
        assert books["tokens"] == tokens
        # Priced at the API: the batch tier is half the regular one for this model.
        assert books["same_lines_at_api_batch_usd"] > 0
        assert books["same_lines_at_api_regular_usd"] == pytest.approx(
            2 * books["same_lines_at_api_batch_usd"], rel=1e-9
        )
        assert books["marginal_cost_usd"] == 0


@contextlib.contextmanager
def live_load(proxy: ProxyHandle, n: int, max_tokens: int) -> Iterator[threading.Event]:
    """n clients sending long live requests back to back until the block ends."""
    stop = threading.Event()

    def loop() -> None:
        with httpx.Client(timeout=60) as h:
            while not stop.is_set():
                h.post(
                    f"{proxy.base_url}/chat/completions",
                    headers={"Authorization": f"Bearer {KEY_B}"},
                    json={
                        "model": "chat",
                        "max_tokens": max_tokens,
                        "messages": [{"role": "user", "content": "live"}],
                    },
                )

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    try:
        yield stop
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)


def test_saturated_pool_sends_the_batch_to_the_provider_at_batch_prices(
    tmp_path: Path,
) -> None:
    policy = {
        "provider": "oai",
        "utilization_threshold": 0.5,
        "forward_after_stall_s": 0.5,
    }
    with (
        run_simulator(tmp_path, "vllm", args=["--speed", "4"]) as sim,
        run_simulator(
            tmp_path, "api", args=["--speed", "50", "--batch-seconds", "10"], name="api"
        ) as api,
        run_proxy(tmp_path, config(tmp_path, sim, api, aliases={"chat": policy})) as proxy,
    ):
        c = client(proxy)
        with live_load(proxy, 8, 400):  # 8 live requests fill the 8 slots
            deadline = time.monotonic() + 10
            while proxy.metric("hybridgate_inflight_requests", backend="local") < 8:
                assert time.monotonic() < deadline, "live load never filled the pool"
                time.sleep(0.02)
            b = submit(c, jsonl(40, "s"))
            deadline = time.monotonic() + 20
            while api.stats(detail=False)["batches_created"] == 0:
                assert time.monotonic() < deadline, "the batch never reached the provider"
                time.sleep(0.05)
        b = wait_done(c, b.id)
        assert b.status == "completed"
        assert b.request_counts.completed == 40
        assert api.stats(detail=False)["batch_lines_by_custom_id"] == {
            f"s{i}": 1 for i in range(40)
        }
        # None ran on our GPUs: the pool never had room below the threshold.
        assert not any(k.startswith("s") for k in sim.stats(detail=False)["requests_by_user"])
        assert (
            proxy.metric("hybridgate_batch_lines_total", outcome="completed", ran="provider") == 40
        )
        lines = results(c, b)
        assert sorted(x["custom_id"] for x in lines) == sorted(f"s{i}" for i in range(40))
        assert all(x["response"]["body"]["model"] == PRICE_MODEL for x in lines)
        events = batch_events(tmp_path, 40)
        events = [e for e in events if e["kind"] == "batch"]
        assert len(events) == 40 and all(e["batch_tier"] for e in events)
        books = report(proxy)
        assert books["lines"] == {"provider": 40}
        cost = sum(e["cost_usd"] for e in events)
        assert cost > 0
        assert books["provider_batch_cost_usd"] == pytest.approx(cost, rel=1e-9)
        # Priced at the batch tier: exactly what the same lines cost at batch prices.
        assert books["same_lines_at_api_batch_usd"] == pytest.approx(cost, rel=1e-9)
        assert books["saved_vs_api_regular_usd"] == pytest.approx(cost, rel=1e-9)


def test_proxy_killed_mid_batch_resumes_each_line_exactly_once(tmp_path: Path) -> None:
    port = free_port()
    with (
        run_redis(tmp_path) as redis_server,
        run_simulator(tmp_path, "vllm", args=["--speed", "2"]) as sim,
    ):
        cfg = config(tmp_path, sim, aliases={"chat": {"max_inflight": 4}})
        cfg["state"] = {"url": redis_server.url}
        with run_proxy(tmp_path, cfg, port=port, name="first") as proxy:
            c = client(proxy)
            b = submit(c, jsonl(120, "k", max_tokens=8))
            deadline = time.monotonic() + 30
            while c.batches.retrieve(b.id).request_counts.completed < 30:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            proxy.proc.kill()  # SIGKILL, lines in flight
        with run_proxy(tmp_path, cfg, port=port, name="second") as proxy:
            c = client(proxy)
            done = wait_done(c, b.id)
            lines = results(c, done)
        assert done.status == "completed"
        assert done.request_counts.total == 120
        ids = [x["custom_id"] for x in lines]
        assert sorted(ids) == sorted(f"k{i}" for i in range(120))  # each line once
        interrupted = {
            x["custom_id"]
            for x in lines
            if x["error"] and x["error"]["code"] == "batch_line_interrupted"
        }
        assert len(interrupted) <= 4  # at most the lines in flight at the kill
        assert done.request_counts.failed == len(interrupted)
        by_user = sim.stats(detail=False)["requests_by_user"]
        assert max(by_user.values()) == 1  # no line ran twice
        ran = {x["custom_id"] for x in lines if x["response"]}
        assert all(by_user.get(cid) == 1 for cid in ran)
        assert len(ran) + len(interrupted) == 120


def test_tenants_see_only_their_own_files_and_batches(tmp_path: Path) -> None:
    with (
        run_simulator(tmp_path, "vllm", args=["--speed", "100"]) as sim,
        run_proxy(tmp_path, config(tmp_path, sim)) as proxy,
    ):
        a, other = client(proxy), client(proxy, KEY_B)
        f = a.files.create(file=("in.jsonl", jsonl(3)), purpose="batch")
        b = wait_done(a, a.batches.create(
            input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
        ).id)  # fmt: skip
        assert b.status == "completed"
        calls = [
            lambda: other.files.retrieve(f.id),
            lambda: other.files.content(f.id),
            lambda: other.files.content(b.output_file_id),
            lambda: other.files.delete(f.id),
            lambda: other.batches.retrieve(b.id),
            lambda: other.batches.cancel(b.id),
            lambda: other.batches.create(
                input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
            ),
        ]
        for call in calls:
            with pytest.raises(openai.NotFoundError) as err:
                call()
            assert err.value.body["code"] == "not_found"  # type: ignore[index]
        assert other.batches.list().data == []
        assert other.files.list().data == []
        assert [x.id for x in a.batches.list().data] == [b.id]
        assert {x.id for x in a.files.list().data} == {f.id, b.output_file_id}
        r = httpx.get(f"{proxy.base_url}/batches/{b.id}", timeout=5)  # no key at all
        assert r.status_code == 401 and r.json()["error"]["type"]


def test_bad_lines_get_their_own_errors_and_the_job_completes(tmp_path: Path) -> None:
    good = jsonl(3, "g").decode().splitlines()
    line = json.loads(good[0])
    bad = [
        "{not json",
        json.dumps([1, 2]),
        json.dumps({**line, "custom_id": None}),
        good[1],  # a duplicate custom_id (g1 twice)
        json.dumps({**line, "custom_id": "wrong-url", "url": "/v1/embeddings"}),
        json.dumps({**line, "custom_id": "no-model", "body": {**line["body"], "model": "nope"}}),
        json.dumps({**line, "custom_id": "no-messages", "body": {"model": "chat"}}),
        json.dumps({**line, "custom_id": "streams", "body": {**line["body"], "stream": True}}),
    ]
    with (
        run_simulator(tmp_path, "vllm", args=["--speed", "100"]) as sim,
        run_proxy(tmp_path, config(tmp_path, sim)) as proxy,
    ):
        c = client(proxy)
        b = wait_done(c, submit(c, "\n".join(good + bad).encode()).id)
        assert b.status == "completed"
        assert (b.request_counts.total, b.request_counts.completed) == (11, 3)
        assert b.request_counts.failed == 8
        errors = [json.loads(x) for x in c.files.content(b.error_file_id).text.splitlines()]
        codes = [e["error"]["code"] for e in errors]
        assert codes == [
            "invalid_json_line", "invalid_json_line", "missing_custom_id",
            "duplicate_custom_id", "mismatched_url", "model_not_found", "invalid_body",
            "invalid_body",
        ]  # fmt: skip
        assert all(e["response"] is None and e["error"]["message"] for e in errors)
        assert proxy.metric("hybridgate_batch_lines_total", outcome="invalid") == 8
        # The API's own refusals, in OpenAI's error shape.
        with pytest.raises(openai.BadRequestError) as err:
            c.files.create(file=("x.jsonl", b'{"a": 1}\n'), purpose="fine-tune")
        assert err.value.body["param"] == "purpose"  # type: ignore[index]
        f = c.files.create(file=("in.jsonl", jsonl(1)), purpose="batch")
        with pytest.raises(openai.BadRequestError):
            c.batches.create(
                input_file_id=f.id, endpoint="/v1/completions", completion_window="24h"
            )
        with pytest.raises(openai.BadRequestError):
            c.batches.create(
                input_file_id=f.id,
                endpoint="/v1/chat/completions",
                completion_window="1h",  # type: ignore[arg-type]
            )
        with pytest.raises(openai.BadRequestError):
            c.files.create(file=("empty.jsonl", b"\n\n"), purpose="batch")


def test_file_size_cap_and_pagination(tmp_path: Path) -> None:
    with (
        run_simulator(tmp_path, "vllm", args=["--speed", "100"]) as sim,
        run_proxy(tmp_path, config(tmp_path, sim, max_file_bytes=2000)) as proxy,
    ):
        c = client(proxy)
        with pytest.raises(openai.APIStatusError) as err:
            c.files.create(file=("big.jsonl", jsonl(40)), purpose="batch")
        assert err.value.status_code == 413
        ids = [submit(c, jsonl(1, f"p{i}-")).id for i in range(3)]
        for i in ids:
            wait_done(c, i)
        first = c.batches.list(limit=2)
        assert len(first.data) == 2 and first.has_more
        rest = c.batches.list(limit=2, after=first.data[-1].id)
        assert len(rest.data) == 1 and not rest.has_more
        assert {x.id for x in first.data + rest.data} == set(ids)


def test_cancel_and_expiry_say_why(tmp_path: Path) -> None:
    with (
        run_simulator(tmp_path, "vllm", args=["--speed", "2"]) as sim,
        run_proxy(
            tmp_path,
            config(
                tmp_path,
                sim,
                window_s=3,
                aliases={"chat": {"max_inflight": 1, "utilization_threshold": 0.2}},
            ),
        ) as proxy,
    ):
        c = client(proxy)
        # The pool's 8 slots × 0.2: one line at a time; 200 lines cannot finish in 3 s.
        expired = wait_done(c, submit(c, jsonl(200, "e", max_tokens=16)).id)
        assert expired.status == "expired"
        assert expired.expired_at is not None
        assert expired.errors is not None and expired.errors.data
        message = expired.errors.data[0].message or ""
        assert "utilization_threshold" in message and "no batch provider" in message
        lines = results(c, expired)
        assert len(lines) == 200
        left = [x for x in lines if x["error"] and x["error"]["code"] == "batch_expired"]
        assert left and expired.request_counts.completed + len(left) == 200
        b = submit(c, jsonl(200, "c", max_tokens=16))
        cancelled = c.batches.cancel(b.id)
        assert cancelled.status in ("cancelling", "cancelled")
        cancelled = wait_done(c, b.id)
        assert cancelled.status == "cancelled" and cancelled.cancelled_at is not None
        lines = results(c, cancelled)
        assert len(lines) == 200
        assert any(x["error"] and x["error"]["code"] == "batch_cancelled" for x in lines)
        with pytest.raises(openai.APIStatusError) as err:
            c.batches.cancel(b.id)
        assert err.value.status_code == 409


def test_batch_lines_never_push_live_requests_to_the_api(tmp_path: Path) -> None:
    """A spillover alias sends live requests to the API past `spillover.max_inflight`
    live requests on the GPU; batch lines in flight must not count toward it."""
    with (
        run_simulator(tmp_path, "vllm", args=["--speed", "1"]) as sim,
        run_simulator(tmp_path, "api", args=["--speed", "50"], name="api") as api,
    ):
        cfg = config(
            tmp_path,
            sim,
            api,
            aliases={"chat": {"utilization_threshold": 1.0, "max_inflight": 5}},
        )
        cfg["backends"]["oai"]["batch"] = False
        cfg["models"]["chat"]["strategy"] = "spillover"
        cfg["models"]["chat"]["spillover"] = {"max_inflight": 6}
        with run_proxy(tmp_path, cfg) as proxy:
            c = client(proxy)
            b = submit(c, jsonl(40, "x", max_tokens=400))
            deadline = time.monotonic() + 20
            while proxy.metric("hybridgate_inflight_requests", backend="local") < 5:
                assert time.monotonic() < deadline, "the batch never filled its 5 lines"
                time.sleep(0.02)
            served: list[str] = []

            def live() -> None:
                r = httpx.post(
                    f"{proxy.base_url}/chat/completions",
                    headers={"Authorization": f"Bearer {KEY_B}"},
                    json={
                        "model": "chat",
                        "max_tokens": 2,
                        "messages": [{"role": "user", "content": "live"}],
                    },
                    timeout=30,
                )
                assert r.status_code == 200
                served.append(r.headers["x-hybridgate-backend"])

            threads = [threading.Thread(target=live) for _ in range(3)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=30)
            assert served == ["local"] * 3  # 3 live + 5 batch: live alone is under 6
            c.batches.cancel(b.id)
            assert wait_done(c, b.id).status == "cancelled"


def test_embeddings_lines_run_too(tmp_path: Path) -> None:
    with (
        run_simulator(tmp_path, "vllm", args=["--speed", "100"]) as sim,
        run_proxy(tmp_path, config(tmp_path, sim)) as proxy,
    ):
        c = client(proxy)
        content = "\n".join(
            json.dumps({"custom_id": f"e{i}", "method": "POST", "url": "/v1/embeddings",
                        "body": {"model": "chat", "input": f"text {i}", "user": f"e{i}"}})
            for i in range(5)
        ).encode()  # fmt: skip
        f = c.files.create(file=("emb.jsonl", content), purpose="batch")
        b = c.batches.create(input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h")
        b = wait_done(c, b.id)
        assert (b.status, b.request_counts.completed) == ("completed", 5)
        lines = results(c, b)
        assert all(x["response"]["body"]["object"] == "list" for x in lines)
        assert all(x["response"]["body"]["data"][0]["embedding"] for x in lines)
        events = batch_events(tmp_path, 5)
        assert [e["endpoint"] for e in events] == ["embeddings"] * 5


def test_proxy_killed_while_the_provider_runs_the_batch_submits_it_once(
    tmp_path: Path,
) -> None:
    port = free_port()
    with (
        run_redis(tmp_path) as redis_server,
        run_simulator(tmp_path, "vllm", args=["--speed", "100"]) as sim,
        run_simulator(
            tmp_path, "api", args=["--speed", "1", "--batch-seconds", "4"], name="api"
        ) as api,
    ):
        cfg = config(tmp_path, sim, api, aliases={"chat": {"mode": "provider", "provider": "oai"}})
        cfg["state"] = {"url": redis_server.url}
        with run_proxy(tmp_path, cfg, port=port, name="first") as proxy:
            c = client(proxy)
            b = submit(c, jsonl(20, "v"))
            deadline = time.monotonic() + 20
            while api.stats(detail=False)["batches_created"] == 0:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            proxy.proc.kill()  # the provider's batch is still in progress
        with run_proxy(tmp_path, cfg, port=port, name="second") as proxy:
            c = client(proxy)
            done = wait_done(c, b.id)
            lines = results(c, done)
            assert (
                proxy.metric("hybridgate_batch_lines_total", outcome="completed", ran="provider")
                == 20
            )
        assert done.status == "completed" and done.request_counts.completed == 20
        assert sorted(x["custom_id"] for x in lines) == sorted(f"v{i}" for i in range(20))
        stats = api.stats(detail=False)
        assert stats["batches_created"] == 1  # polled again after the restart, not resubmitted
        assert stats["batch_lines_by_custom_id"] == {f"v{i}": 1 for i in range(20)}
