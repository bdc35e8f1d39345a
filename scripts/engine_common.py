"""What scripts/llama_engine.py and scripts/vllm_engine.py share: the install lock, server
state files, health, stopping a server's process group. Standard library only (the scripts
run before anything else is installed)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import queue
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any


def elapsed(t0: float) -> str:
    s = int(time.monotonic() - t0)
    return f"{s // 60}m{s % 60:02d}s"


@contextlib.contextmanager
def install_lock(root: Path, say: Callable[[str], None]) -> Iterator[None]:
    """Serialise installs: parallel test workers or two checkouts may install at once."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "install.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say("another install is running; waiting for it")
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def tail(path: Path, n: int = 60) -> str:
    with open(path, errors="replace") as fh:
        return "".join(deque(fh, maxlen=n))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def health_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1.0) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def pid_runs(pid: int, marker: bytes) -> bool:
    """Guard against a recycled pid: only a process whose command line has `marker`."""
    try:
        return marker in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def running(run_dir: Path, marker: bytes) -> list[dict]:
    """Servers `start` started that are still alive; stale state files are removed."""
    out = []
    for f in sorted(run_dir.glob("server-*.json")) if run_dir.is_dir() else []:
        state = json.loads(f.read_text())
        if pid_runs(state["pid"], marker):
            out.append(state)
        else:
            f.unlink(missing_ok=True)
    return out


def stop(run_dir: Path, marker: bytes, port: int | None, timeout: float) -> list[int]:
    """SIGTERM the process groups `start` started (or the one on `port`), SIGKILL after."""
    stopped = []
    for state in running(run_dir, marker):
        if port is not None and state["port"] != port:
            continue
        pid = state["pid"]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_runs(pid, marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):  # what lingers of the group (children)
            os.killpg(pid, signal.SIGKILL)
        (run_dir / f"server-{state['port']}.json").unlink(missing_ok=True)
        stopped.append(state["port"])
    return stopped


def run_logged(
    cmd: Sequence[str],
    log: Path,
    env: dict[str, str],
    t0: float,
    say: Callable[[str], None],
    show: re.Pattern[str],
    progress: re.Pattern[str] | None = None,
    heartbeat_s: float = 30.0,
) -> tuple[int, list[str]]:
    """Run one install step with all its output in `log`: lines matching `show` are shown,
    a build's percentage (`progress`, e.g. cmake's `[ 42%]`) once per step, a heartbeat when
    it is quiet. The exit code and the last 60 lines."""
    proc = subprocess.Popen(
        list(cmd),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        text=True,
        errors="replace",
    )
    lines: queue.Queue[str | None] = queue.Queue()
    last: deque[str] = deque(maxlen=60)

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    last_pct, last_shown = -1, time.monotonic()
    with open(log, "a") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n")
        while True:
            try:
                line = lines.get(timeout=heartbeat_s)
            except queue.Empty:
                say(f"  ... still working ({elapsed(t0)})")
                continue
            if line is None:
                break
            fh.write(line)
            last.append(line)
            text = line.rstrip()
            m = progress.match(text) if progress is not None else None
            if m and int(m.group(1)) != last_pct:
                last_pct = int(m.group(1))
                say(f"  build {last_pct:3d}% ({elapsed(t0)}) {m.group(2)[:90]}")
                last_shown = time.monotonic()
            elif not m and show.match(text):
                say(f"  {text.strip()[:150]}")
                last_shown = time.monotonic()
            elif time.monotonic() - last_shown > heartbeat_s:
                say(f"  ... still working ({elapsed(t0)})")
                last_shown = time.monotonic()
    return proc.wait(), list(last)


class EngineError(RuntimeError):
    """Install or start failed; the message says what, which step, and where the log is."""


def launch(
    cmd: Sequence[str], run_dir: Path, port: int, name: str, timeout: float, env: dict | None
) -> dict[str, Any]:
    """Start a server in its own process group, its output in run_dir/server-PORT.log, and
    wait for GET /health → 200; its state (also written to run_dir/server-PORT.json)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / f"server-{port}.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            list(cmd),
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    while not health_ok(url):
        if proc.poll() is not None:
            raise EngineError(
                f"step 'start': {name} exited with {proc.returncode}; log {log}:\n{tail(log, 40)}"
            )
        if time.monotonic() - t0 > timeout:
            os.killpg(proc.pid, signal.SIGKILL)
            raise EngineError(f"step 'start': {name} not healthy after {timeout}s; log {log}")
        time.sleep(0.1)
    state = {
        "pid": proc.pid,
        "port": port,
        "url": url,
        "base_url": f"{url}/v1",
        "log": str(log),
        "started_in_s": round(time.monotonic() - t0, 1),
        "command": list(cmd),
    }
    (run_dir / f"server-{port}.json").write_text(json.dumps(state, indent=2))
    return state


def report_running(servers: list[dict], say: Callable[[str], None]) -> int:
    """`status`'s server lines; exit code 0 if a server is up, 3 if none."""
    for st in servers:
        health = "healthy" if health_ok(st["url"]) else "NOT healthy"
        say(f"running: pid {st['pid']} {st['base_url']} {health}")
    if not servers:
        say("no server running")
    return 0 if servers else 3


def cache_dir(engine: str) -> Path:
    """${HYBRIDGATE_CACHE:-~/.cache/hybridgate}/ENGINE: outside every checkout."""
    base = os.environ.get("HYBRIDGATE_CACHE") or str(Path.home() / ".cache" / "hybridgate")
    return Path(base).expanduser() / engine
