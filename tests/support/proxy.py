"""Start a real `hybridgate serve` process on a free loopback port for a test."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.exposition import Sample, parse_samples, sample_sum
from tests.support.servers import PYTHON, ManagedProcess, free_port, wait_http


class ProxyHandle:
    def __init__(
        self,
        proc: ManagedProcess,
        port: int,
        config_path: Path,
        key: str | None,
        admin_key: str | None,
    ) -> None:
        self.proc = proc
        self.port = port
        self.config_path = config_path
        self.key = key
        self.admin_key = admin_key

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def headers(self, key: str | None = None) -> dict[str, str]:
        k = key or self.key
        return {"Authorization": f"Bearer {k}"} if k else {}

    def metrics_text(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=5).text

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples whose labels include `labels` (0 if none)."""
        return metric_value(self.metrics_text(), name, **labels)

    def ready(self, admin_key: str | None = None) -> httpx.Response:
        """GET /health/ready with the admin key (its details need it)."""
        key = admin_key or self.admin_key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.get(f"{self.url}/health/ready", headers=headers, timeout=5)

    def chat(self, **body: Any) -> httpx.Response:
        return httpx.post(
            f"{self.base_url}/chat/completions", json=body, headers=self.headers(), timeout=30
        )


def parse_metrics(text: str) -> list[Sample]:
    """Every sample of a `/metrics` page as (name, labels, value)."""
    return parse_samples(text)


def metric_value(text: str, name: str, **labels: str) -> float:
    return sample_sum(text, name, **labels)


@contextlib.contextmanager
def run_proxy(
    tmp_path: Path,
    config: dict[str, Any] | str,
    port: int | None = None,
    env: dict[str, str] | None = None,
    name: str = "proxy",
    args: Sequence[str] = (),
) -> Iterator[ProxyHandle]:
    """Write `config` (dict or YAML text), start `hybridgate serve`, stop it afterwards."""
    port = port or free_port()
    if isinstance(config, str):
        text = config
        data = yaml.safe_load(config)
    else:
        data = config
        text = yaml.safe_dump(config, sort_keys=False)
    path = tmp_path / f"{name}-{port}.yaml"
    path.write_text(text)
    keys = (data.get("auth") or {}).get("keys") or []
    key = keys[0]["key"] if keys else None
    admin = (data.get("auth") or {}).get("admin_key")
    proc = ManagedProcess(
        [PYTHON, "-m", "proxy", "serve", "-c", str(path), "--port", str(port), *args],
        tmp_path / f"{name}-{port}.log",
        env=env,
    )
    handle = ProxyHandle(proc, port, path, key, admin)
    try:
        try:
            wait_http(f"{handle.url}/health/live", timeout=30, proc=proc.proc)
        except Exception as exc:
            raise RuntimeError(f"{exc}\n--- proxy log ---\n{proc.log_text()[-4000:]}") from exc
        yield handle
    finally:
        proc.stop()


def read_log(path: Path, expect: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The request log's events once it holds at least `expect` (it is written by a
    background sink, a moment after the answers), or what it holds at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= expect or time.monotonic() > deadline:
            return [json.loads(line) for line in lines]
        time.sleep(0.05)


class Books:
    """The request log read one new event at a time, for modules whose tests run in order
    one request at a time: `mark()` skips what is there, `next(n)` waits for n more."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen = 0

    def _lines(self) -> list[str]:
        return self.path.read_text().splitlines() if self.path.exists() else []

    def mark(self) -> None:
        self.seen = len(self._lines())

    def next(self, n: int = 1) -> list[dict[str, Any]]:
        deadline = time.monotonic() + 10
        while True:
            lines = self._lines()
            if len(lines) >= self.seen + n or time.monotonic() > deadline:
                out = [json.loads(x) for x in lines[self.seen : self.seen + n]]
                self.seen += len(out)
                assert len(out) == n, f"request log has {len(out)} new events, expected {n}"
                return out
            time.sleep(0.05)
