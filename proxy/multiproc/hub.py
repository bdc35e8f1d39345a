"""The hub: the one HybridGateApp that runs every sink and operator route for N workers.

It lives in the supervisor process and listens on a unix socket only the workers reach.
Workers POST batches of priced UsageEvents to `/_hub/events` (exactly once: a batch
carries the worker's pid and a sequence number, a retried batch is skipped) and relay
operator requests, naming the client's address in a header (the hub trusts it: only
workers can connect), so `metrics.allow_networks` still judges the real client.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from proxy.metering.cluster_gpu import ClusterPool
from proxy.metering.events import Attempt, UsageEvent
from proxy.metering.shared_gpu import SharedPoolAccount
from proxy.server.exchange import Receive, Scope, Send, read_body
from proxy.server.reload import Reloader

log = logging.getLogger("hybridgate.workers")

EVENTS_PATH = "/_hub/events"
CLIENT_HEADER = b"x-hybridgate-client"
MAX_BATCH_BYTES = 256 * 1024 * 1024


class HubReloader(Reloader):
    """Reloads the hub from a snapshot of the operator's file, then tells the workers.

    The file is copied to `next.yaml`; a valid config becomes `current.yaml`, the file
    every worker reloads (and every restarted worker starts) from, so all processes
    run the config the hub validated, even if the operator's file changes again.
    """

    def __init__(self, gate: Any, source: str | None, run_dir: Path, notify: Callable[[], None]):
        super().__init__(gate, str(run_dir / "next.yaml"))
        self.source = source
        self.current = run_dir / "current.yaml"
        self._notify = notify

    async def reload(self) -> tuple[bool, list[str]]:
        if self.source is None:
            return False, ["<file>: the proxy was started without a config file to re-read"]
        assert self.config_path is not None
        try:
            shutil.copyfile(self.source, self.config_path)
        except OSError as exc:
            return False, [f"<file>: cannot read {self.source}: {exc.strerror}"]
        ok, notes = await super().reload()
        if ok:
            os.replace(self.config_path, self.current)
            self._notify()
        return ok, notes


class Hub:
    """The hub's ASGI entry: event batches in, worker gauges summed, the rest to the app."""

    def __init__(self, gate: Any) -> None:
        self.gate = gate
        self._last_seq: dict[int, int] = {}
        self._inflight: dict[int, dict[str, int]] = {}
        self.batches = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if scope["path"] == EVENTS_PATH and scope["method"] == "POST":
                body = await read_body(receive, dict(scope["headers"]), MAX_BATCH_BYTES)
                self.ingest(body)
                await send({"type": "http.response.start", "status": 204, "headers": []})
                await send({"type": "http.response.body", "body": b""})
                return
            for k, v in scope["headers"]:
                if k == CLIENT_HEADER:
                    scope["client"] = (v.decode("latin-1"), 0)
        await self.gate(scope, receive, send)

    def ingest(self, body: bytes) -> None:
        batch = orjson.loads(body)
        pid = batch["pid"]
        self._inflight[pid] = batch["inflight"]
        self._sum_inflight()
        if batch.get("gpu_parts"):  # its part of the pools' books shared through Redis
            self.gate.runtime.meter.worker_parts[pid] = batch["gpu_parts"]
        if batch["seq"] <= self._last_seq.get(pid, 0):
            return  # a retry of a batch that landed
        self._last_seq[pid] = batch["seq"]
        self.batches += 1
        meter = self.gate.runtime.meter
        for d in batch["events"]:
            d["attempts"] = [Attempt(**a) for a in d["attempts"]]
            meter.deliver(UsageEvent(**d))
        metrics = self.gate.metrics
        for labels in batch["failovers"]:
            metrics.failover(*labels)

    def forget(self, pid: int) -> None:
        """A worker exited: its requests in flight are gone with it, and so are their
        shares of the GPU pools (else they would dilute every later request's share)."""
        self._inflight.pop(pid, None)
        self._last_seq.pop(pid, None)
        self._sum_inflight()
        for name, books in self.gate.runtime.meter.pools.items():
            acct = books.local if isinstance(books, ClusterPool) else books  # the host's
            if isinstance(acct, SharedPoolAccount) and (n := acct.release(pid)):
                log.warning(
                    "worker pid %d exited with %d request(s) in flight on pool %s: "
                    "their GPU time so far stays busy; they are not in the books",
                    pid,
                    n,
                    name,
                )

    def _sum_inflight(self) -> None:
        """The gauges the workers report, summed into the dicts the hub's gauges read."""
        rt = self.gate.runtime
        workers = self._inflight.values()
        totals = rt.inflight
        for name in totals:
            totals[name] = sum(w.get(name, 0) for w in workers)
        # Capped keys/tenants ("key|…", "tenant|…") and queues ("queued|<backend>").
        counts = rt.caps.counts
        named = {k for w in workers for k in w if "|" in k} | set(counts)
        queued: dict[str, int] = {}
        for k in named:
            n = sum(w.get(k, 0) for w in workers)
            if k.startswith("queued|"):
                queued[k[7:]] = n
            else:
                counts[k] = n
        rt.worker_queued = queued
