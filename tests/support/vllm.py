"""A real vLLM server on loopback for tests, started from the engine scripts/vllm_engine.py
installed. The command line and environment come from that script, so tests and humans run
the same server.

vLLM costs ~47 s to start and ~3.9 GB of memory on CPU: tests/e2e/conftest.py starts one per
test session (`vllm_server`), and tests measure deltas of its counters; only the test that
kills an engine starts its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType

import httpx

from tests.support.exposition import sample_sum, samples_by_key
from tests.support.servers import (
    REPO_ROOT,
    ManagedProcess,
    free_port,
    load_script,
    managed,
)

ENGINE_SCRIPT = REPO_ROOT / "scripts" / "vllm_engine.py"
START_TIMEOUT_S = 300.0  # ~47 s on 2 idle cores; several times that beside other work


@cache
def engine() -> ModuleType:
    """scripts/vllm_engine.py as a module."""
    return load_script(ENGINE_SCRIPT)


@dataclass
class VllmServer:
    """A running vLLM OpenAI server: where it listens and what it counts."""

    process: ManagedProcess | None  # None: a server this test session did not start
    port: int
    max_num_seqs: int
    max_model_len: int
    model: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """What an OpenAI client takes as base_url."""
        return f"{self.url}/v1"

    def metrics_text(self) -> str:
        r = httpx.get(f"{self.url}/metrics", timeout=10.0)
        r.raise_for_status()
        return r.text

    def metrics(self) -> dict[str, float]:
        """vLLM's own series from GET /metrics (`vllm:` names), keyed with their labels."""
        return samples_by_key(self.metrics_text())

    def counter(self, name: str) -> float:
        """One `vllm:` series summed over its labels (model_name, engine)."""
        return sample_sum(self.metrics_text(), name)

    def tokens(self) -> tuple[float, float]:
        """(prompt, generation) tokens as vLLM counts them."""
        text = self.metrics_text()
        return (
            sample_sum(text, "vllm:prompt_tokens_total"),
            sample_sum(text, "vllm:generation_tokens_total"),
        )

    def kill(self) -> None:
        """SIGKILL the group (API server and engine core): a crash."""
        assert self.process is not None, "not ours to kill"
        self.process.kill()

    def log_text(self) -> str:
        return self.process.log_text() if self.process is not None else ""


def running_vllm_server(url: str) -> VllmServer:
    """A vLLM started by `python scripts/vllm_engine.py start` (its default flags), for
    HYBRIDGATE_VLLM_URL: a developer's warm server instead of one more ~1 min start."""
    eng = engine()
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    models = httpx.get(f"{url.rstrip('/')}/v1/models", timeout=10).json()["data"]
    assert [m["id"] for m in models] == [eng.MODEL_NAME], models
    return VllmServer(
        process=None,
        port=port,
        max_num_seqs=eng.MAX_NUM_SEQS,
        max_model_len=models[0]["max_model_len"],
        model=eng.MODEL_NAME,
    )


@contextlib.contextmanager
def run_vllm_server(tmp_path: Path, timeout: float = START_TIMEOUT_S) -> Iterator[VllmServer]:
    """Start vLLM on a free port with the engine script's flags, wait for /health → 200,
    stop its group whatever happens.

    Needs `python scripts/vllm_engine.py install` to have run (tests/e2e does it first)."""
    eng = engine()
    info = eng.installed_info()
    seqs, window = eng.MAX_NUM_SEQS, eng.MAX_MODEL_LEN
    port = free_port()
    cmd = eng.server_command(info, port, max_num_seqs=seqs, max_model_len=window)
    log = tmp_path / f"vllm-{port}.log"
    ready_url = f"http://127.0.0.1:{port}/health"
    with managed(cmd, log, ready_url=ready_url, env=eng.SERVER_ENV, timeout=timeout) as mp:
        yield VllmServer(
            process=mp, port=port, max_num_seqs=seqs, max_model_len=window, model=eng.MODEL_NAME
        )
