"""A real llama-server on loopback for tests, started from the engine that scripts/llama_engine.py
installed. The command line comes from that script, so tests and humans run the same server."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType

import httpx

from tests.support.exposition import samples_by_key
from tests.support.servers import REPO_ROOT, ManagedProcess, free_port, load_script, managed

ENGINE_SCRIPT = REPO_ROOT / "scripts" / "llama_engine.py"


@cache
def engine() -> ModuleType:
    """scripts/llama_engine.py as a module."""
    return load_script(ENGINE_SCRIPT)


@dataclass
class LlamaServer:
    """A running llama-server: where it listens and what it counts."""

    process: ManagedProcess
    port: int
    slots: int
    ctx: int
    model: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """What an OpenAI client takes as base_url."""
        return f"{self.url}/v1"

    @property
    def ctx_per_slot(self) -> int:
        """llama-server splits -c across the -np slots: the longest request one slot takes."""
        return self.ctx // self.slots

    def metrics(self) -> dict[str, float]:
        """The engine's own counters from GET /metrics (`llamacpp:` names)."""
        r = httpx.get(f"{self.url}/metrics", timeout=5.0)
        r.raise_for_status()
        return samples_by_key(r.text)

    def kill(self) -> None:
        """SIGKILL the server: a crash, as a proxy in front of it would meet one."""
        self.process.kill()

    def log_text(self) -> str:
        return self.process.log_text()


@contextlib.contextmanager
def run_llama_server(
    tmp_path: Path, slots: int = 4, ctx: int = 4096, threads: int = 1, timeout: float = 60.0
) -> Iterator[LlamaServer]:
    """Start llama-server on a free port, wait for /health → 200, stop it whatever happens.

    One thread by default, not the script's two: the tests share two cores with the client,
    the proxy and the simulator, and llama.cpp's spinning threads collapse when oversubscribed
    (measured under load: 1-8 tokens/s with -t 2, 12-15 with -t 1).
    Needs `python scripts/llama_engine.py install` to have run (tests/e2e does it first)."""
    eng = engine()
    info = eng.installed_info()
    port = free_port()
    cmd = eng.server_command(info, port, slots=slots, ctx=ctx, threads=threads)
    log = tmp_path / f"llama-server-{port}.log"
    with managed(cmd, log, ready_url=f"http://127.0.0.1:{port}/health", timeout=timeout) as mp:
        yield LlamaServer(process=mp, port=port, slots=slots, ctx=ctx, model=eng.MODEL_ALIAS)
