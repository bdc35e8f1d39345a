"""A provider's Batch API (`type: openai` backends with `batch: true`): upload the lines,
create a batch, poll it, fetch its output and error files. Not on the request path: plain
httpx, one client per call."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from proxy.config import Backend

TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})


class ProviderError(Exception):
    pass


class ProviderBatches:
    def __init__(self, name: str, backend: Backend) -> None:
        self.name = name
        assert backend.base_url is not None
        self.base = backend.base_url.rstrip("/")
        headers = dict(backend.headers)
        if backend.api_key is not None:
            headers["authorization"] = f"Bearer {backend.api_key.get_secret_value()}"
        self._headers = headers
        self._timeout = httpx.Timeout(backend.timeouts.read_s, connect=backend.timeouts.connect_s)

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(headers=self._headers, timeout=self._timeout)

    async def _json(self, r: httpx.Response, what: str) -> dict[str, Any]:
        if r.status_code >= 400:
            raise ProviderError(f"{self.name}: {what} answered HTTP {r.status_code}")
        try:
            data = r.json()
        except ValueError:
            raise ProviderError(f"{self.name}: {what} answered something not JSON") from None
        if not isinstance(data, dict):
            raise ProviderError(f"{self.name}: {what} answered something not an object")
        return data

    async def submit(self, jsonl: bytes, endpoint: str, metadata: dict[str, str]) -> dict[str, Any]:
        """Upload `jsonl` and create a batch of it: the provider's batch object."""
        async with self._client() as c:
            files = {"file": ("hybridgate-batch.jsonl", jsonl, "application/jsonl")}
            up = await self._json(
                await c.post(f"{self.base}/files", data={"purpose": "batch"}, files=files),
                "file upload",
            )
            body = {
                "input_file_id": up["id"],
                "endpoint": endpoint,
                "completion_window": "24h",
                "metadata": metadata,
            }
            return await self._json(
                await c.post(f"{self.base}/batches", json=body), "batch creation"
            )

    async def find(self, metadata: dict[str, str]) -> dict[str, Any] | None:
        """A batch created earlier with this metadata (a submit whose answer a crash lost)."""
        async with self._client() as c:
            page = await self._json(
                await c.get(f"{self.base}/batches", params={"limit": 100}), "batch list"
            )
        data: list[dict[str, Any]] = page.get("data") or []
        for b in data:
            meta = b.get("metadata") or {}
            if all(meta.get(k) == v for k, v in metadata.items()):
                return b
        return None

    async def get(self, batch_id: str) -> dict[str, Any]:
        async with self._client() as c:
            return await self._json(await c.get(f"{self.base}/batches/{batch_id}"), "batch poll")

    async def cancel(self, batch_id: str) -> None:
        async with self._client() as c:
            await c.post(f"{self.base}/batches/{batch_id}/cancel")

    async def lines(self, file_id: str | None) -> list[dict[str, Any]]:
        """A result file's lines (none without a file)."""
        if not file_id:
            return []
        async with self._client() as c:
            r = await c.get(f"{self.base}/files/{file_id}/content")
        if r.status_code >= 400:
            raise ProviderError(f"{self.name}: file {file_id} answered HTTP {r.status_code}")
        out = []
        for raw in r.content.split(b"\n"):
            if raw.strip():
                try:
                    obj = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(obj, dict):
                    out.append(obj)
        return out
