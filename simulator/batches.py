"""api mode: OpenAI's Batch API (files and batches), so a proxy's provider path is tested
end to end.

A batch runs its lines through this server's own POST routes (over loopback HTTP, so
each line is an ordinary request: the same answers, stats, faults and latency), at most
`--batch-concurrency` at a time, and stays `in_progress` at least `--batch-seconds`
(divided by `--speed`: the time-scale knob). Output and error files are written as OpenAI
writes them. `/sim/stats` counts `batch_lines_by_custom_id` (how often each custom_id
was run), the truth a test checks exactly-once against.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
from aiohttp import BodyPartReader, web

TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
ENDPOINTS = frozenset({"/v1/chat/completions", "/v1/embeddings", "/v1/completions"})


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _error(status: int, message: str, param: str | None = None) -> web.Response:
    body = {
        "error": {"message": message, "type": "invalid_request_error", "param": param, "code": None}
    }
    return _json(body, status)


class BatchApi:
    def __init__(self, seconds: float, concurrency: int, port: Callable[[], int]) -> None:
        self.seconds = seconds
        self.concurrency = concurrency
        self._port = port  # callable: the main port once bound
        self.files: dict[str, dict[str, Any]] = {}
        self.content: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.by_custom_id: dict[str, int] = {}
        self.batches_created = 0

    def routes(self, r: web.UrlDispatcher) -> None:
        r.add_post("/v1/files", self.upload)
        r.add_get("/v1/files/{id}", self.get_file)
        r.add_get("/v1/files/{id}/content", self.file_content)
        r.add_post("/v1/batches", self.create)
        r.add_get("/v1/batches", self.list)
        r.add_get("/v1/batches/{id}", self.get)
        r.add_post("/v1/batches/{id}/cancel", self.cancel)

    def stats(self) -> dict[str, Any]:
        return {
            "batches_created": self.batches_created,
            "batch_lines_by_custom_id": dict(self.by_custom_id),
        }

    def reset(self) -> None:
        self.by_custom_id.clear()
        self.batches_created = 0

    def _file(self, content: bytes, filename: str, purpose: str) -> dict[str, Any]:
        fid = f"file-sim{secrets.token_hex(8)}"
        obj = {
            "id": fid,
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
            "status_details": None,
        }
        self.files[fid] = obj
        self.content[fid] = content
        return obj

    async def upload(self, request: web.Request) -> web.Response:
        purpose, filename, content = None, "upload.jsonl", None
        async for part in await request.multipart():
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "purpose":
                purpose = (await part.read()).decode()
            elif part.name == "file":
                filename = part.filename or filename
                content = bytes(await part.read())
        if purpose != "batch" or content is None:
            return _error(400, "Upload 'file' with purpose 'batch'.", "purpose")
        return _json(self._file(content, filename, purpose))

    async def get_file(self, request: web.Request) -> web.Response:
        obj = self.files.get(request.match_info["id"])
        return _json(obj) if obj else _error(404, "No such File object.", "id")

    async def file_content(self, request: web.Request) -> web.Response:
        data = self.content.get(request.match_info["id"])
        if data is None:
            return _error(404, "No such File object.", "id")
        return web.Response(body=data, content_type="application/octet-stream")

    async def create(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        fid = body.get("input_file_id")
        if fid not in self.files:
            return _error(400, f"Invalid input_file_id '{fid}'.", "input_file_id")
        if body.get("endpoint") not in ENDPOINTS:
            return _error(400, "Invalid endpoint.", "endpoint")
        if body.get("completion_window") != "24h":
            return _error(400, "completion_window must be 24h.", "completion_window")
        now = int(time.time())
        bid = f"batch_sim{secrets.token_hex(8)}"
        batch = {
            "id": bid,
            "object": "batch",
            "endpoint": body["endpoint"],
            "errors": None,
            "input_file_id": fid,
            "completion_window": "24h",
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": now,
            "in_progress_at": None,
            "expires_at": now + 86400,
            "finalizing_at": None,
            "completed_at": None,
            "failed_at": None,
            "expired_at": None,
            "cancelling_at": None,
            "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": body.get("metadata"),
        }
        self.batches[bid] = batch
        self.batches_created += 1
        self.tasks[bid] = asyncio.create_task(self._run(batch, request.headers))
        return _json(batch)

    async def list(self, request: web.Request) -> web.Response:
        limit = int(request.query.get("limit", "20"))
        data = sorted(self.batches.values(), key=lambda b: b["created_at"], reverse=True)
        return _json({"object": "list", "data": data[:limit], "has_more": len(data) > limit})

    async def get(self, request: web.Request) -> web.Response:
        obj = self.batches.get(request.match_info["id"])
        return _json(obj) if obj else _error(404, "No such Batch object.", "id")

    async def cancel(self, request: web.Request) -> web.Response:
        obj = self.batches.get(request.match_info["id"])
        if obj is None:
            return _error(404, "No such Batch object.", "id")
        if obj["status"] not in TERMINAL:
            obj["status"] = "cancelling"
            obj["cancelling_at"] = int(time.time())
        return _json(obj)

    async def _run(self, batch: dict[str, Any], headers: Any) -> None:
        t0 = time.monotonic()
        lines = [
            orjson.loads(raw)
            for raw in self.content[batch["input_file_id"]].split(b"\n")
            if raw.strip()
        ]
        batch.update(status="in_progress", in_progress_at=int(time.time()))
        batch["request_counts"]["total"] = len(lines)
        auth = {"authorization": headers.get("authorization", "")}
        out: list[tuple[int, bytes]] = []
        err: list[tuple[int, bytes]] = []
        sem = asyncio.Semaphore(self.concurrency)
        url = f"http://127.0.0.1:{self._port()}"

        async def one(i: int, line: dict[str, Any], session: aiohttp.ClientSession) -> None:
            async with sem:
                if batch["status"] == "cancelling":
                    return
                cid = str(line.get("custom_id"))
                self.by_custom_id[cid] = self.by_custom_id.get(cid, 0) + 1
                async with session.post(url + line["url"], json=line["body"], headers=auth) as r:
                    body = await r.json(content_type=None)
                    rid = r.headers.get("x-request-id")
                rec = {
                    "id": f"batch_req_sim{secrets.token_hex(8)}",
                    "custom_id": cid,
                    "response": {"status_code": r.status, "request_id": rid, "body": body},
                    "error": None,
                }
                (out if r.status == 200 else err).append((i, orjson.dumps(rec)))
                key = "completed" if r.status == 200 else "failed"
                batch["request_counts"][key] += 1

        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(one(i, line, session) for i, line in enumerate(lines)))
        while batch["status"] != "cancelling" and time.monotonic() - t0 < self.seconds:
            await asyncio.sleep(min(0.05, self.seconds))
        batch.update(status="finalizing", finalizing_at=int(time.time()))
        for what, rows in (("output_file_id", out), ("error_file_id", err)):
            if rows:
                content = b"\n".join(r for _, r in sorted(rows)) + b"\n"
                batch[what] = self._file(content, f"{batch['id']}.jsonl", "batch_output")["id"]
        now = int(time.time())
        if batch["status"] == "cancelling" or batch.get("cancelling_at"):
            batch.update(status="cancelled", cancelled_at=now)
        else:
            batch.update(status="completed", completed_at=now)
