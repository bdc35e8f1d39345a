"""Real servers on loopback for tests: free ports, subprocesses that are always stopped."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType

import httpx

from proxy.ports import free_port as free_port  # the tests' one way to pick a port

REPO_ROOT = Path(__file__).resolve().parents[2]


def load_script(path: Path) -> ModuleType:
    """A script of scripts/ as a module (scripts/ is not a package), under its file's name."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(path.stem, module)
    spec.loader.exec_module(module)
    return module


def wait_http(
    url: str,
    timeout: float = 20.0,
    proc: subprocess.Popen | None = None,
    expect: Sequence[int] = (200,),
) -> None:
    """Poll `url` until it answers one of `expect`; fail early if `proc` died."""
    deadline = time.monotonic() + timeout
    last: object = None
    with httpx.Client(timeout=1.0) as client:  # one client: a new one per poll costs ~0.1 s
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"process exited with {proc.returncode} before {url} was ready")
            try:
                r = client.get(url)
                if r.status_code in expect:
                    return
                last = r.status_code
            except httpx.HTTPError as exc:
                last = exc
            time.sleep(0.05)
    raise TimeoutError(f"{url} not ready after {timeout}s (last: {last!r})")


class ManagedProcess:
    """A subprocess in its own process group, with its output in a log file."""

    def __init__(
        self,
        args: Sequence[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.args = list(args)
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            self.args,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
            cwd=str(cwd or REPO_ROOT),
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_kb(self) -> int:
        """Resident memory now (VmRSS from /proc), in KiB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError(f"no VmRSS for pid {self.proc.pid}")

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole group at once: a crash, as a user would meet it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._log.close()

    def log_text(self) -> str:
        """Everything the process wrote so far (also after stop())."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def managed(
    args: Sequence[str],
    log_path: Path,
    ready_url: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 30.0,
    expect: Sequence[int] = (200,),
) -> Iterator[ManagedProcess]:
    """Start a process, wait until `ready_url` answers, and stop it whatever happens."""
    mp = ManagedProcess(args, log_path, env=env)
    try:
        if ready_url:
            try:
                wait_http(ready_url, timeout=timeout, proc=mp.proc, expect=expect)
            except Exception as exc:
                raise RuntimeError(
                    f"{exc}\n--- log {log_path} ---\n{mp.log_text()[-4000:]}"
                ) from exc
        yield mp
    finally:
        mp.stop()


PYTHON = sys.executable
