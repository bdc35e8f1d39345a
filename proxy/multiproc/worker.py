"""A worker process of `serve --workers N`: the OpenAI routes, with events sent to the hub.

The request path is the single-process one (Handler, Runtime, Meter pricing each event)
with two differences: GPU shares are taken on the pool books every worker maps, and the
meter's only sink appends the priced event to a list that a background task POSTs to
the hub in batches. Failover counts and in-flight gauges ride along in the same batch.
Every other route is relayed to the hub as is, except /health/live (this worker's).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from proxy.metering.events import UsageEvent
from proxy.metering.prometheus import Metrics
from proxy.metering.shared_gpu import shared_pool_factory
from proxy.multiproc.hub import CLIENT_HEADER, EVENTS_PATH
from proxy.request.errors import ProxyError
from proxy.server.app import AsgiApp, HybridGateApp, Role
from proxy.server.exchange import Receive, Scope, Send, read_body, send_error

log = logging.getLogger("hybridgate.workers")

_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"host", CLIENT_HEADER}
_LIVE = b'{"status":"ok","worker":%d}'  # which worker answered: supervisors and tests ask
GAUGE_INTERVAL_S = 1.0  # with no traffic, the in-flight gauges still reach the hub this often
RETRY_S = 0.2
SHUTDOWN_FLUSH_S = 10.0


class Forwarder:
    """Priced events, failovers and in-flight counts to the hub, batched, off the request path."""

    def __init__(self, hub_socket: str, inflight: Any, gpu_parts: Any = dict) -> None:
        self.hub_socket = hub_socket
        self.inflight = inflight  # () -> {backend: requests in flight in this worker}
        self.gpu_parts = gpu_parts  # () -> {pool: [busy, idle]}: its part of shared books
        self.events: list[UsageEvent] = []
        self.failovers: list[tuple[str, str, str, str]] = []
        self.sent = 0
        self._seq = 0
        self._unacked: bytes | None = None  # the batch that has not landed yet
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    def add(self, ev: UsageEvent) -> None:  # the meter's fast sink: one list append
        self.events.append(ev)
        if len(self.events) == 1:
            self._wake.set()

    def failover(self, labels: tuple[str, str, str, str]) -> None:
        self.failovers.append(labels)
        self._wake.set()

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=self.hub_socket),
                auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
            )
        return self._session

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="hybridgate-forwarder")

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), GAUGE_INTERVAL_S)
            self._wake.clear()
            if not await self.flush():
                await asyncio.sleep(RETRY_S)

    async def flush(self) -> bool:
        """Send the unacknowledged batch, or a new one. False if the hub did not take it."""
        if self._unacked is None:
            events, self.events = self.events, []
            failovers, self.failovers = self.failovers, []
            self._seq += 1
            self._unacked = orjson.dumps(
                {
                    "pid": os.getpid(),
                    "seq": self._seq,
                    "inflight": self.inflight(),
                    "gpu_parts": self.gpu_parts(),
                    "events": events,
                    "failovers": failovers,
                }
            )
            n = len(events)
        else:
            n = 0
        try:
            async with self.session().post(f"http://hub{EVENTS_PATH}", data=self._unacked) as r:
                if r.status != 204:
                    raise aiohttp.ClientError(f"hub answered {r.status}")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("worker %d: events not delivered to the hub yet (%s)", os.getpid(), exc)
            return False
        self._unacked = None
        self.sent += n
        return True

    async def stop(self) -> None:
        """Stop the loop and deliver what is left (the hub outlives the workers)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        loop = asyncio.get_running_loop()
        give_up = loop.time() + SHUTDOWN_FLUSH_S
        while self._unacked is not None or self.events or self.failovers:
            if not await self.flush() and loop.time() >= give_up:
                log.error(
                    "worker %d: %d events lost: the hub is gone", os.getpid(), len(self.events)
                )
                break
        if self._session is not None:
            await self._session.close()


class WorkerMetrics(Metrics):
    """The worker's registry is never scraped: failovers go to the hub's."""

    forwarder: Forwarder | None = None

    def failover(self, alias: str, from_backend: str, to_backend: str, reason: str) -> None:
        if self.forwarder is not None:
            self.forwarder.failover((alias, from_backend, to_backend, reason))


class Worker(Role):
    """A worker's role: events to the hub, /health/live its own, every other route relayed
    to the hub, and the config the hub validated taken up at start."""

    records_spend = False  # the hub records spend from the events

    def __init__(self, config_path: str, run_dir: Path, loaded_ino: int) -> None:
        super().__init__(shared_pool_factory(run_dir))
        self.config_path = config_path
        self.run_dir = run_dir
        self.loaded_ino = loaded_ino  # the hub replaces the file (a new inode) on reload

    def metrics(self) -> Metrics:
        return WorkerMetrics()

    def wire(self, gate: HybridGateApp) -> AsgiApp:
        runtime = gate.runtime
        self.forwarder = Forwarder(
            str(self.run_dir / "hub.sock"),
            lambda: gate.runtime.gauges(),
            lambda: gate.runtime.meter.gpu_parts(),
        )
        assert isinstance(gate.metrics, WorkerMetrics)
        gate.metrics.forwarder = self.forwarder
        runtime.meter.add_fast_sink(self.forwarder.add)
        return HubRelay(gate, self.forwarder)

    async def start(self, gate: HybridGateApp) -> None:
        self.forwarder.start()
        if os.stat(self.config_path).st_ino != self.loaded_ino:
            # the hub accepted a new config while this worker was starting (its SIGHUP
            # was ignored until now): take it up
            gate.reloader._on_sighup()

    async def stop(self, gate: HybridGateApp) -> None:
        await self.forwarder.stop()


class HubRelay:
    """A worker's answer to every route but the OpenAI ones: its own /health/live, the rest
    relayed to the hub."""

    def __init__(self, gate: HybridGateApp, forwarder: Forwarder) -> None:
        self.gate = gate
        self.forwarder = forwarder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/health/live":
            live = _LIVE % os.getpid()
            await _send(send, 200, live, [(b"content-type", b"application/json")])
        else:
            await self.relay(scope, receive, send)

    async def relay(self, scope: Scope, receive: Receive, send: Send) -> None:
        """An operator request, answered by the hub."""
        if scope["path"].startswith("/_hub/"):
            await send_error(send, ProxyError(404, "Not Found", code="not_found"))
            return
        try:
            headers = dict(scope["headers"])
            limit = self.gate.runtime.config.limits.max_body_bytes
            body = await read_body(receive, headers, limit)
        except ProxyError as err:
            await send_error(send, err)
            return
        except Exception:  # the client went away
            return
        out = [
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"] if k not in _HOP
        ]
        client = scope.get("client")
        if client:
            out.append((CLIENT_HEADER.decode(), str(client[0])))
        url = "http://hub" + scope["raw_path"].decode("latin-1")
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")
        try:
            async with self.forwarder.session().request(
                scope["method"], url, headers=out, data=body, allow_redirects=False
            ) as r:
                hdrs = [(k.lower(), v) for k, v in r.raw_headers if k.lower() not in _HOP]
                await send({"type": "http.response.start", "status": r.status, "headers": hdrs})
                async for chunk in r.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
        except (aiohttp.ClientError, OSError) as exc:
            log.warning("relaying %s to the hub failed: %s", scope["path"], exc)
            with contextlib.suppress(Exception):
                await send_error(
                    send,
                    ProxyError(503, "The proxy's hub is unavailable.", code="hub_unavailable"),
                )


async def _send(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _die_with_parent(parent: int) -> None:
    """SIGTERM this worker if the supervisor dies (even by SIGKILL): no orphans."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before prctl
        os._exit(0)


def worker_main(config_path: str, sock: Any, run_dir: str, parent: int) -> None:
    """Entry point of a spawned worker process."""
    import uvicorn

    from proxy.config import load_config
    from proxy.server.run import uvicorn_options

    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the reloader takes it over
    _die_with_parent(parent)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    loaded_ino = os.stat(config_path).st_ino
    config = load_config(config_path)
    app = HybridGateApp(
        config, config_path=config_path, role=Worker(config_path, Path(run_dir), loaded_ino)
    )
    server = uvicorn.Server(uvicorn.Config(app, **uvicorn_options(config)))
    server.run(sockets=[sock])
