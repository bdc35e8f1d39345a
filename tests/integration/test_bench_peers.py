"""bench/peers end to end on a small scale: its fake upstream, and its load generator against it.

Counts, not timings: every request the open loop sends is answered, every stream ends with
the usage chunk and `[DONE]`, and the probe accepts a well-formed upstream.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.servers import PYTHON, REPO_ROOT, free_port, managed

PEERS = REPO_ROOT / "bench" / "peers"


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    with managed(
        [PYTHON, str(PEERS / "upstream.py"), "--port", str(port), "--chunks", "5"],
        tmp_path / "upstream.log",
        ready_url=f"http://127.0.0.1:{port}/v1/models",
    ):
        yield f"http://127.0.0.1:{port}/v1/chat/completions"


def _load(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        [PYTHON, str(PEERS / "load.py"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(out.stdout)


def test_probe_checks_plain_and_streamed_answers(upstream: str) -> None:
    r = _load("probe", "--url", upstream)
    assert r["ok"] and r["content_chunks"] == 5 and r["usage_chunk"] and r["done"]
    assert r["plain_usage"] == 9 + 5


def test_open_loop_answers_every_request_sent(upstream: str) -> None:
    r = _load("open", "--url", upstream, "-r", "50", "-d", "1")
    assert r["sent"] == 50 and r["ok"] == 50 and r["errors"] == {}
    assert r["latency_ms"]["n"] == 50


def test_streams_are_complete(upstream: str) -> None:
    r = _load("stream", "--url", upstream, "-c", "2", "-d", "0.5")
    assert r["streams"] > 0 and r["errors"] == {}
    assert r["ttft_ms"]["n"] == r["streams"]


@pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk not installed (bench/peers/run.sh setup)"
)
def test_closed_loop_with_wrk(upstream: str) -> None:
    r = _load("closed", "--url", upstream, "-c", "4", "-d", "1")
    assert r["requests"] > 0 and r["non_2xx"] == 0 and r["socket_errors"] == 0


def test_load_refuses_a_non_loopback_target() -> None:
    out = subprocess.run(
        [
            PYTHON,
            str(PEERS / "load.py"),
            "probe",
            "--url",
            "http://192.0.2.1:80/v1/chat/completions",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode != 0 and "non-loopback" in out.stderr
