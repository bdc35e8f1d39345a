"""The upstream simulator as a real subprocess, for tests: start, drive its knobs, stop.

    with run_simulator(tmp_path, mode="vllm", args=["--speed", "10"]) as sim:
        client = openai.OpenAI(base_url=sim.base_url, api_key="x")
        ...
        sim.set_faults(status=503, count=2)
        assert sim.stats()["responses_by_status"]["503"] == 2

/sim/* calls go to a control port that stays up while the `refuse_connections`
fault has the main port dark.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from tests.support.servers import PYTHON, ManagedProcess, free_port, wait_http


class SimHandle:
    def __init__(
        self, tmp_path: Path, mode: str, port: int, args: Sequence[str], name: str = "sim"
    ) -> None:
        self.mode = mode
        self.port = port
        self.control_port = free_port()
        self.args = list(args)
        self.log_path = Path(tmp_path) / f"{name}-{mode}-{port}.log"
        self.process: ManagedProcess | None = None
        self._http = httpx.Client(timeout=10.0)

    # -- addresses ---------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """For an OpenAI client: ends with /v1."""
        return f"{self.url}/v1"

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self.control_port}"

    # -- lifecycle -----------------------------------------------------------------------
    def command(self) -> list[str]:
        return [
            PYTHON, "-m", "simulator", "--mode", self.mode, "--host", "127.0.0.1",
            "--port", str(self.port), "--control-port", str(self.control_port), *self.args,
        ]  # fmt: skip

    def start(self, timeout: float = 30.0) -> SimHandle:
        self.process = ManagedProcess(self.command(), self.log_path)
        try:
            wait_http(f"{self.control_url}/sim/faults", timeout=timeout, proc=self.process.proc)
        except Exception as exc:
            log = self.process.log_text()[-4000:]
            self.process.stop()
            raise RuntimeError(f"{exc}\n--- log {self.log_path} ---\n{log}") from exc
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def kill(self) -> None:
        """SIGKILL: the upstream crashes, connections drop mid-flight."""
        if self.process is not None:
            self.process.kill()

    def restart(self, timeout: float = 30.0) -> SimHandle:
        """Start again on the same ports (stats and faults start fresh)."""
        self.stop()
        return self.start(timeout)

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()

    def close(self) -> None:
        self.stop()
        self._http.close()

    # -- knobs and books -------------------------------------------------------------------
    def stats(self, detail: bool = True) -> dict[str, Any]:
        r = self._http.get(f"{self.control_url}/sim/stats", params={"detail": int(detail)})
        r.raise_for_status()
        return r.json()

    def set_faults(self, **faults: Any) -> dict[str, Any]:
        r = self._http.post(f"{self.control_url}/sim/faults", json=faults)
        r.raise_for_status()
        return r.json()

    def faults(self) -> dict[str, Any]:
        return self._http.get(f"{self.control_url}/sim/faults").json()

    def clear_faults(self) -> dict[str, Any]:
        r = self._http.delete(f"{self.control_url}/sim/faults")
        r.raise_for_status()
        return r.json()

    def reset(self) -> None:
        self._http.post(f"{self.control_url}/sim/reset").raise_for_status()

    def metrics(self) -> str:
        return self._http.get(f"{self.control_url}/metrics").text

    def log_text(self) -> str:
        return self.process.log_text() if self.process else ""


@contextlib.contextmanager
def run_simulator(
    tmp_path: Path,
    mode: str = "vllm",
    port: int | None = None,
    args: Sequence[str] = (),
    name: str = "sim",
) -> Iterator[SimHandle]:
    """A running simulator on loopback, stopped whatever happens."""
    handle = SimHandle(tmp_path, mode, port or free_port(), args, name)
    handle.start()
    try:
        yield handle
    finally:
        handle.close()
