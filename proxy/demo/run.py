"""`hybridgate demo`: two simulators and the proxy as subprocesses, a day of traffic, the report.

Every child runs in its own session (Ctrl-C reaches only the demo, which then stops
them in order) and asks the kernel to SIGTERM it if the demo dies first (Linux
PR_SET_PDEATHSIG), so no process outlives the demo, however it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import httpx

from proxy.demo.traffic import Plan, TrafficStats, drive, expected_requests
from proxy.ports import free_port

SELF_HOSTED_MODEL = "meta-llama/Llama-3.3-70B-Instruct"
GPU_BACKENDS = frozenset({"local-vllm"})


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Processes:
    """Children of the demo, each with a log file in `workdir`; stopped in reverse order."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def spawn(self, name: str, args: Sequence[str], env: dict[str, str] | None = None) -> None:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - the child owns it
        try:
            proc = subprocess.Popen(
                list(args),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        finally:
            log.close()
        self.procs.append((name, proc))

    def check(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {proc.returncode}; its log: {self.workdir / name}.log\n"
                    + self.tail(name)
                )

    def tail(self, name: str, chars: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return (self.workdir / f"{name}.log").read_text(errors="replace")[-chars:]
        return ""

    def stop_all(self, timeout: float = 10.0) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for _, proc in reversed(self.procs):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the whole group, stragglers included
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self.procs.clear()


def wait_ready(url: str, procs: Processes, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs.check()
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout:.0f} s")


def run_demo(
    duration: float,
    mean_rps: float,
    port: int,
    exit_after: bool,
    console: Any,
    window: str = "1h",
) -> int:
    """The whole demo; returns the exit code. Children are stopped whatever happens."""
    from proxy.cli.report import fetch_report, print_report

    workdir = Path(tempfile.mkdtemp(prefix="hybridgate-demo-"))
    procs = Processes(workdir)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    # Ctrl-C stops the demo even when it was started with SIGINT ignored (bash ignores it
    # in a script's background jobs, and Python then keeps it ignored).
    previous_int = signal.signal(signal.SIGINT, _raise_interrupt)
    ok = False
    try:
        vllm_port, api_port, proxy_port = free_port(), free_port(), free_port(port)
        py = sys.executable
        console.print("[bold]hybridgate demo[/]: starting a simulated vLLM (the GPU), a "
                      "simulated commercial API and the proxy…")  # fmt: skip
        procs.spawn(
            "vllm-sim",
            [py, "-m", "simulator", "--mode", "vllm", "--port", str(vllm_port),
             "--model", SELF_HOSTED_MODEL, "--seed", "1"],
        )  # fmt: skip
        procs.spawn(
            "api-sim",
            [py, "-m", "simulator", "--mode", "api", "--port", str(api_port),
             "--ttft-ms", "350", "--itl-ms", "6"],
        )  # fmt: skip
        wait_ready(f"http://127.0.0.1:{vllm_port}/health", procs)
        wait_ready(f"http://127.0.0.1:{api_port}/health", procs)
        admin_key = os.environ.get("HYBRIDGATE_ADMIN_KEY") or "admin-" + secrets.token_urlsafe(12)
        app_key = "demo-" + secrets.token_urlsafe(12)
        env = {
            "HYBRIDGATE_ADMIN_KEY": admin_key,
            "HYBRIDGATE_DEMO_KEY": app_key,
            "HYBRIDGATE_DEMO_VLLM_URL": f"http://127.0.0.1:{vllm_port}/v1",
            "HYBRIDGATE_DEMO_API_URL": f"http://127.0.0.1:{api_port}/v1",
            "HYBRIDGATE_DEMO_BATCH_DIR": str(workdir / "batch"),
        }
        config = workdir / "hybridgate-demo.yaml"
        config.write_bytes(resources.files("proxy.demo").joinpath("config.yaml").read_bytes())
        procs.spawn(
            "proxy",
            [py, "-m", "proxy", "serve", "-c", str(config), "--port", str(proxy_port)],
            env=env,
        )
        url = f"http://127.0.0.1:{proxy_port}"
        wait_ready(f"{url}/health/live", procs)
        console.print(f"proxy on {url} (config: {config}); logs in {workdir}")
        plan = Plan(duration_s=duration, mean_rps=mean_rps)
        stats = _drive_with_progress(f"{url}/v1", app_key, plan, console)
        procs.check()
        console.print(
            f"sent {stats.sent:,} requests: {stats.ok:,} answered, {stats.errors:,} errors; "
            "served by "
            + ", ".join(f"{b} {n:,}" for b, n in stats.by_backend.most_common())
            + f"; confidential requests that left the GPU: {stats.confidential_off_gpu}"
        )
        time.sleep(0.2)  # let the last events reach the window
        report = fetch_report(url, window, admin_key)
        print_report(report, console)
        ok = True
        if exit_after:
            return 0
        console.print(
            f"\n[bold]Dashboard:[/] {url}/dashboard#key={admin_key}\n"
            f"Report: hybridgate report --url {url} --window {window} --admin-key {admin_key}\n"
            "Press Ctrl-C to stop."
        )
        while True:
            procs.check()
            time.sleep(1.0)
    except KeyboardInterrupt:
        console.print("stopping…")
        return 0 if ok else 130
    except (RuntimeError, SystemExit) as exc:
        console.print(f"[red]demo failed:[/] {exc}")
        for name, _ in procs.procs:
            console.print(f"--- {name} log (tail) ---\n{procs.tail(name)}")
        return 1
    finally:
        procs.stop_all()
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _drive_with_progress(base_url: str, key: str, plan: Plan, console: Any) -> TrafficStats:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    total = expected_requests(plan)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[clock]}"),
        TextColumn("{task.fields[counts]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("a day of traffic", total=1.0, clock="00:00", counts="")

        def update(fraction: float, stats: TrafficStats) -> None:
            minutes = int(fraction * 24 * 60)
            gpu = sum(n for b, n in stats.by_backend.items() if b in GPU_BACKENDS)
            api = sum(n for b, n in stats.by_backend.items() if b not in GPU_BACKENDS)
            progress.update(
                task,
                completed=fraction,
                clock=f"day {minutes // 60:02d}:{minutes % 60:02d}",
                counts=(
                    f"{stats.sent:,}/~{total:,} sent · {stats.in_flight} in flight · "
                    f"GPU {gpu:,} · API {api:,} · errors {stats.errors:,}"
                ),
            )

        return asyncio.run(drive(base_url, key, plan, update, GPU_BACKENDS))
