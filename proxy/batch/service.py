"""OpenAI's Batch API at the proxy: files and batches per tenant, jobs that survive
restarts (docs/architecture.md, "Batch jobs"; config `batch:` in docs/config.md).

Files live as blobs under `batch.dir`/files; file and batch objects and each line's
result in the store (proxy/batch/store.py). Each unfinished batch has one JobRunner
(proxy/batch/runner.py) in the serving process; on start, every batch still active is
resumed. With Redis, a lease per batch keeps a second replica from running it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Any

from proxy.batch.books import BatchBooks, BatchMetrics
from proxy.batch.runner import ACTIVE, JobRunner
from proxy.batch.store import BatchStore, build_store
from proxy.config import BatchConfig, BatchPolicy
from proxy.metering.events import UsageEvent
from proxy.request.errors import ProxyError

log = logging.getLogger("hybridgate.batch")

_LEASE_S = 5.0


def public(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as the API shows it: internal fields (`_owner`, `_parts`) left out."""
    return {k: v for k, v in obj.items() if not k.startswith("_")}


def not_found(kind: str, ident: str) -> ProxyError:
    return ProxyError(
        404, f"No such {kind}: '{ident[:100]}'.", type_="invalid_request_error", code="not_found"
    )


class BatchService:
    def __init__(self, gate: Any) -> None:
        self.gate = gate
        cfg = gate.runtime.config
        self.root = Path(cfg.batch.dir)
        self.blobs = self.root / "files"
        self.store: BatchStore = build_store(
            cfg.state.url, cfg.state.prefix, cfg.state.timeout_s, self.root
        )
        self.metrics = BatchMetrics(gate.metrics.registry)
        self.books = BatchBooks(self._price_of, self.metrics)
        self.runners: dict[str, JobRunner] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._replica = secrets.token_hex(8)
        self._resume: asyncio.Task[None] | None = None

    @property
    def config(self) -> BatchConfig:
        return self.gate.runtime.config.batch

    def policy(self, alias: str) -> BatchPolicy:
        return self.config.aliases.get(alias) or BatchPolicy()

    def _price_of(self, ev: UsageEvent) -> Any:
        meter = self.gate.runtime.meter
        if ev.batch_tier and ev.backend is not None and ev.model is not None:
            return meter.api_prices.get((ev.backend, ev.model))
        return meter.compare_prices.get(ev.alias)

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._resume = asyncio.create_task(self._resume_jobs(), name="batch-resume")

    async def _resume_jobs(self) -> None:
        """Every batch still active, resumed; the store retried until it answers (the
        proxy serves meanwhile: a Redis down at start delays batch jobs, nothing else)."""
        delay = 0.5
        while True:
            try:
                await self.store.load()
                for b in await self.store.batches():
                    if b["status"] in ACTIVE:
                        self.launch(b)
                return
            except Exception as exc:
                log.warning("batch jobs: the store is not answering (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def stop(self) -> None:
        tasks = [t for t in (self._resume, *self._tasks.values()) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self.store.close()

    def launch(self, batch: dict[str, Any]) -> None:
        if batch["id"] in self._tasks:
            return
        task = asyncio.create_task(self._own(batch), name=f"batch-{batch['id']}")
        self._tasks[batch["id"]] = task
        task.add_done_callback(lambda _: self._tasks.pop(batch["id"], None))

    async def _own(self, batch: dict[str, Any]) -> None:
        """Run the job while holding its lease (Redis: one replica at a time)."""
        lease = getattr(self.store, "lease", None)
        if lease is not None:
            while not await lease(batch["id"], self._replica, _LEASE_S):
                await asyncio.sleep(_LEASE_S / 3)
            fresh = await self.store.get_batch(batch["id"])
            if fresh is None or fresh["status"] not in ACTIVE:
                return
            batch = fresh
        runner = self.runners[batch["id"]] = JobRunner(self, batch)
        job = asyncio.create_task(runner.run())
        try:
            while not job.done():
                await asyncio.wait({job}, timeout=_LEASE_S / 3)
                if lease is not None and not job.done():
                    await lease(batch["id"], self._replica, _LEASE_S)
        finally:
            if not job.done():
                job.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await job
            self.runners.pop(batch["id"], None)

    # ------------------------------------------------------------ files

    async def read_blob(self, file_id: str) -> bytes:
        return await asyncio.to_thread((self.blobs / file_id).read_bytes)

    def _write_blob(self, file_id: str, content: bytes) -> None:
        self.blobs.mkdir(parents=True, exist_ok=True)
        tmp = self.blobs / f"{file_id}.tmp"
        with open(tmp, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.blobs / file_id)

    async def _store_file(
        self, file_id: str, filename: str, purpose: str, content: bytes, owner: dict[str, str]
    ) -> dict[str, Any]:
        """The blob on disk first, then its file object: a stored object has its bytes."""
        await asyncio.to_thread(self._write_blob, file_id, content)
        obj = {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
            "status_details": None,
            "expires_at": None,
            "_owner": owner,
        }
        await self.store.put_file(obj)
        return obj

    async def create_file(
        self, owner: dict[str, str], filename: str, purpose: str, content: bytes
    ) -> dict[str, Any]:
        return await self._store_file(
            f"file-{secrets.token_hex(12)}", filename, purpose, content, owner
        )

    async def write_output(
        self, batch: dict[str, Any], what: str, lines: list[bytes]
    ) -> str | None:
        """A batch's output or error file (none when it has no line), the same id on a
        second try (a restart while finalizing)."""
        if not lines:
            return None
        file_id = f"file-{batch['id'].removeprefix('batch_')}{'o' if what == 'output' else 'e'}"
        content = b"\n".join(lines) + b"\n"
        name = f"{batch['id']}_{what}.jsonl"
        await self._store_file(file_id, name, "batch_output", content, batch["_owner"])
        return file_id

    async def owned_file(self, tenant: str, file_id: str) -> dict[str, Any]:
        obj = await self.store.get_file(file_id)
        if obj is None or obj["_owner"]["tenant"] != tenant:
            raise not_found("file", file_id)
        return obj

    async def delete_file(self, tenant: str, file_id: str) -> None:
        obj = await self.owned_file(tenant, file_id)
        for b in await self.store.batches():
            if b["input_file_id"] == file_id and b["status"] in ACTIVE:
                raise ProxyError(
                    409,
                    f"File '{file_id}' is the input of batch '{b['id']}', which is "
                    f"{b['status']}; delete it once the batch has ended.",
                    code="file_in_use",
                )
        await self.store.delete_file(obj["id"])
        with contextlib.suppress(FileNotFoundError):
            (self.blobs / obj["id"]).unlink()

    # ------------------------------------------------------------ batches

    async def create_batch(
        self, owner: dict[str, str], input_file_id: str, endpoint: str, metadata: Any
    ) -> dict[str, Any]:
        f = await self.owned_file(owner["tenant"], input_file_id)
        if f["purpose"] != "batch":
            raise ProxyError(
                400,
                f"File '{input_file_id}' has purpose '{f['purpose']}'; a batch's input needs "
                "purpose 'batch'.",
                param="input_file_id",
                code="invalid_file",
            )
        now = int(time.time())
        batch = {
            "id": f"batch_{secrets.token_hex(12)}",
            "object": "batch",
            "endpoint": endpoint,
            "errors": None,
            "input_file_id": input_file_id,
            "completion_window": "24h",
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": now,
            "in_progress_at": None,
            "expires_at": now + int(self.config.window_s),
            "finalizing_at": None,
            "completed_at": None,
            "failed_at": None,
            "expired_at": None,
            "cancelling_at": None,
            "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": metadata,
            "_owner": owner,
            "_parts": [],
        }
        await self.store.put_batch(batch)
        self.launch(batch)
        return batch

    async def owned_batch(self, tenant: str, batch_id: str) -> dict[str, Any]:
        runner = self.runners.get(batch_id)
        obj = runner.batch if runner is not None else await self.store.get_batch(batch_id)
        if obj is None or obj["_owner"]["tenant"] != tenant:
            raise not_found("batch", batch_id)
        return obj

    async def cancel_batch(self, tenant: str, batch_id: str) -> dict[str, Any]:
        obj = await self.owned_batch(tenant, batch_id)
        if obj["status"] not in ACTIVE:
            raise ProxyError(
                409,
                f"Batch '{batch_id}' is {obj['status']}; only a batch still running can be "
                "cancelled.",
                code="batch_not_cancellable",
            )
        if obj["status"] != "cancelling":
            obj["status"] = "cancelling"
            obj["cancelling_at"] = int(time.time())
            await self.store.put_batch(obj)
        runner = self.runners.get(batch_id)
        if runner is not None:
            runner.cancel_requested = True
            runner.wake.set()
        return obj

    async def list_batches(self, tenant: str) -> list[dict[str, Any]]:
        out = []
        for b in await self.store.batches():
            if b["_owner"]["tenant"] == tenant:
                runner = self.runners.get(b["id"])
                out.append(runner.batch if runner is not None else b)
        out.sort(key=lambda b: (b["created_at"], b["id"]), reverse=True)
        return out

    async def list_files(self, tenant: str) -> list[dict[str, Any]]:
        out = [f for f in await self.store.files() if f["_owner"]["tenant"] == tenant]
        out.sort(key=lambda f: (f["created_at"], f["id"]), reverse=True)
        return out

    # ------------------------------------------------------------ books

    def report(self) -> dict[str, Any]:
        busy = {
            row["pool"]: row["busy_gpu_seconds"] for row in self.gate.runtime.meter.pool_snapshot()
        }
        return self.books.report(busy)
