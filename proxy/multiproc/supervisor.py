"""The supervisor of `serve --workers N`: one socket, N workers, the hub, no orphans.

It binds the listening socket once and passes it to N spawned workers (they all accept
on it), creates the GPU pools' shared books before any worker starts (provisioned time
counts from then, once), and runs the hub in its own event loop. A worker that dies is
restarted (with a back-off if it keeps dying). SIGTERM/SIGINT: the workers stop
gracefully (in-flight requests finish, their last events reach the hub), then the hub
drains its sinks, then the run directory goes. SIGHUP or POST /admin/reload: the hub
validates the file, and every worker reloads the config the hub accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from proxy.config import Config, load_config, warnings_for

log = logging.getLogger("hybridgate.workers")

STOP_TIMEOUT_S = 40.0  # beyond uvicorn's 30 s graceful shutdown
RESTART_BACKOFF_S = (0.0, 0.5, 1.0, 2.0, 5.0)


def workers_problems(config: Config, workers: int) -> list[str]:
    """Why `serve --workers N` cannot run this config ([] if it can)."""
    if workers < 1:
        return ["--workers: must be 1 or more"]
    if workers == 1 or not config.state.url.startswith("memory://"):
        return []
    from proxy.state.budgets import Budgets
    from proxy.state.ratelimit import RateLimits

    if Budgets(config).by_tenant or RateLimits(config).by_key:
        return [
            "state.url: budgets and rate limits with --workers > 1 need a shared state store "
            "(redis://...): with memory:// each worker would admit against its own counts "
            "and the limits would hold N times over"
        ]
    return []


class _HubServer:
    """uvicorn serving the hub on a unix socket, signals left to the supervisor."""

    def __init__(self, app: Any, path: str) -> None:
        import uvicorn

        class Quiet(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield

        self.server = Quiet(
            uvicorn.Config(app, uds=path, lifespan="on", log_level="warning", access_log=False)
        )


class Supervisor:
    def __init__(
        self, config_path: str, config: Config, run_dir: Path, sock: socket.socket, n: int
    ):
        self.config_path = config_path  # the run directory's current.yaml
        self.config = config
        self.run_dir = run_dir
        self.sock = sock
        self.n = n
        self.ctx = multiprocessing.get_context("spawn")
        self.procs: list[Any] = [None] * n
        self.deaths = [0] * n
        self.stopping = False
        self.restarts = 0

    def spawn(self, i: int) -> None:
        from proxy.multiproc.worker import worker_main

        p = self.ctx.Process(
            target=worker_main,
            args=(self.config_path, self.sock, str(self.run_dir), os.getpid()),
            name=f"hybridgate-worker-{i}",
            daemon=False,
        )
        p.start()
        self.procs[i] = p

    def signal_workers(self, sig: int) -> None:
        for p in self.procs:
            if p is not None and p.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, sig)

    async def watch(self, hub: Any) -> None:
        """Restart workers that exit while the proxy is not stopping."""
        while not self.stopping:
            await asyncio.sleep(0.1)
            for i, p in enumerate(self.procs):
                if p is None or p.is_alive() or self.stopping:
                    continue
                p.join(0)
                hub.forget(p.pid)
                delay = RESTART_BACKOFF_S[min(self.deaths[i], len(RESTART_BACKOFF_S) - 1)]
                self.deaths[i] += 1
                log.error(
                    "worker %d (pid %d) exited with %s; restarting in %.1fs",
                    i,
                    p.pid,
                    p.exitcode,
                    delay,
                )
                self.procs[i] = None
                asyncio.get_running_loop().call_later(delay, self._respawn, i)

    def _respawn(self, i: int) -> None:
        if not self.stopping and self.procs[i] is None:
            self.spawn(i)
            self.restarts += 1

    async def stop_workers(self) -> None:
        self.stopping = True
        self.signal_workers(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for p in self.procs:
            if p is None:
                continue
            while p.is_alive() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if p.is_alive():
                log.error("worker pid %d did not stop in time: killed", p.pid)
                p.kill()
            p.join(5)


async def _supervise(sup: Supervisor, source: str | None) -> None:
    from proxy.metering.shared_gpu import shared_pool_factory
    from proxy.multiproc.hub import Hub, HubReloader
    from proxy.server.app import HybridGateApp, Serving

    # The hub's pools are the shared books, declared up now (before any worker starts).
    role = Serving(shared_pool_factory(sup.run_dir))
    gate = HybridGateApp(sup.config, config_path=sup.config_path, role=role)
    gate.reloader = HubReloader(
        gate, source, sup.run_dir, lambda: sup.signal_workers(signal.SIGHUP)
    )
    hub = Hub(gate)
    hub_server = _HubServer(hub, str(sup.run_dir / "hub.sock")).server
    serving = asyncio.create_task(hub_server.serve())
    while not hub_server.started:
        if serving.done():
            serving.result()
            raise SystemExit(3)
        await asyncio.sleep(0.02)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    for i in range(sup.n):
        sup.spawn(i)
    watcher = asyncio.create_task(sup.watch(hub))
    log.warning(
        "hybridgate listening on http://%s:%s with %d workers (pids %s)",
        *sup.sock.getsockname()[:2],
        sup.n,
        ", ".join(str(p.pid) for p in sup.procs),
    )
    await stop.wait()
    await sup.stop_workers()
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    hub_server.should_exit = True  # the hub drains its sinks (request log, state) last
    await serving


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        log.error("cannot listen on %s:%s: %s", host, port, exc.strerror)
        raise SystemExit(3) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve_workers(
    config: Config,
    workers: int,
    host: str | None = None,
    port: int | None = None,
    config_path: str | None = None,
) -> None:
    """Run the proxy as N worker processes plus the hub (see the module docstring)."""
    import uvloop

    run_dir = Path(tempfile.mkdtemp(prefix="hybridgate-"))
    sock = None
    try:
        current = run_dir / "current.yaml"
        if config_path is not None:  # every worker starts from the file as validated here
            shutil.copyfile(config_path, current)
            config = load_config(current)
        else:
            raise SystemExit("--workers needs a config file (-c)")
        for warning in warnings_for(config):
            log.warning("%s", warning)
        sock = _bind(host or config.listen.host, config.listen.port if port is None else port)
        sup = Supervisor(str(current), config, run_dir, sock, workers)
        uvloop.run(_supervise(sup, config_path))
    finally:
        if sock is not None:
            sock.close()
        shutil.rmtree(run_dir, ignore_errors=True)
