"""Where batch jobs live between restarts: file and batch objects, and each line's result.

Two stores with one contract. `redis://` state: hashes in the state store's Redis
(`<prefix>:batch:files`, `<prefix>:batch:jobs`, `<prefix>:batch:lines:<id>`), shared by
replicas and durable with Redis. `memory://` state: the same records as JSON files under
`batch.dir` (a record per file and batch; results appended, one JSON line each, flushed
and fsynced before the line counts as done), so a single process resumes too.

A line's record is written once (`claim` / `put_line` never overwrite a result): a line
that has a result is never run again, whatever restarts happen.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from pathlib import Path
from typing import Any, Protocol

Record = dict[str, Any]


class BatchStore(Protocol):
    async def load(self) -> None: ...

    async def put_file(self, obj: Record) -> None: ...

    async def get_file(self, file_id: str) -> Record | None: ...

    async def delete_file(self, file_id: str) -> None: ...

    async def files(self) -> list[Record]: ...

    async def put_batch(self, obj: Record) -> None: ...

    async def get_batch(self, batch_id: str) -> Record | None: ...

    async def batches(self) -> list[Record]: ...

    async def put_line(self, batch_id: str, index: int, record: Record) -> bool:
        """Record line `index`'s state once it is final, or its `started` mark; False if
        a final record was there already (it is kept)."""
        ...

    async def lines(self, batch_id: str) -> dict[int, Record]: ...

    async def close(self) -> None: ...


def _dumps(obj: Record) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(f".{threading.get_ident()}.tmp")  # one per writing thread
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class DirStore:
    """Records as files under `root` (memory:// state): one process, durable on disk."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._files: dict[str, Record] = {}
        self._batches: dict[str, Record] = {}
        self._lines: dict[str, dict[int, Record]] = {}
        self._lock = threading.Lock()
        # Record writes run in threads: one at a time, in call order, so the last write of
        # a record (a cancel racing the runner's save) is the one on disk and in memory.
        self._write_order = asyncio.Lock()

    def _dir(self, sub: str) -> Path:
        """A folder of the store, made on first write (a proxy that never sees a batch
        leaves nothing on disk)."""
        path = self.root / sub
        path.mkdir(parents=True, exist_ok=True)
        return path

    async def load(self) -> None:
        for sub, into in (("files", self._files), ("batches", self._batches)):
            for p in (self.root / sub).glob("*.json"):
                try:
                    obj = json.loads(p.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    continue
                into[obj["id"]] = obj
        for p in (self.root / "lines").glob("*.jsonl"):
            lines: dict[int, Record] = {}
            for raw in p.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(raw)
                except ValueError:  # a record torn by a crash mid-write: never counted done
                    continue
                index = rec.pop("_i")
                if index not in lines or not lines[index].get("final"):
                    lines[index] = rec
            self._lines[p.stem] = lines

    async def put_file(self, obj: Record) -> None:
        path = self._dir("files") / f"{obj['id']}.json"
        async with self._write_order:
            await asyncio.to_thread(_write_atomic, path, _dumps(obj))  # fsync: off the loop
            self._files[obj["id"]] = obj

    async def get_file(self, file_id: str) -> Record | None:
        return self._files.get(file_id)

    async def delete_file(self, file_id: str) -> None:
        self._files.pop(file_id, None)
        (self.root / "files" / f"{file_id}.json").unlink(missing_ok=True)

    async def files(self) -> list[Record]:
        return list(self._files.values())

    async def put_batch(self, obj: Record) -> None:
        path = self._dir("batches") / f"{obj['id']}.json"
        async with self._write_order:
            await asyncio.to_thread(_write_atomic, path, _dumps(obj))
            self._batches[obj["id"]] = obj

    async def get_batch(self, batch_id: str) -> Record | None:
        return self._batches.get(batch_id)

    async def batches(self) -> list[Record]:
        return list(self._batches.values())

    async def put_line(self, batch_id: str, index: int, record: Record) -> bool:
        lines = self._lines.setdefault(batch_id, {})
        old = lines.get(index)
        if old is not None and old.get("final"):
            return False
        path = self._dir("lines") / f"{batch_id}.jsonl"
        await asyncio.to_thread(self._append, path, _dumps({"_i": index, **record}) + "\n")
        lines[index] = record
        return True

    def _append(self, path: Path, text: str) -> None:
        """One record appended and fsynced (in a thread: the loop serves live traffic)."""
        with self._lock, open(path, "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    async def lines(self, batch_id: str) -> dict[int, Record]:
        return dict(self._lines.get(batch_id, {}))

    async def close(self) -> None:
        return None


# Sets a line's record unless a final one is there: KEYS[1] hash, ARGV index, record, final.
_PUT_LINE = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old and string.find(old, '"final":true', 1, true) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


# Takes or renews a lease: KEYS[1] the lease, ARGV holder, ttl ms.
_LEASE = """
local v = redis.call('GET', KEYS[1])
if v == false or v == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""


class RedisStore:
    """Records in Redis hashes (redis:// state): shared by replicas, durable with Redis."""

    def __init__(self, url: str, prefix: str, timeout_s: float) -> None:
        import redis.asyncio as aioredis

        self.client = aioredis.Redis.from_url(
            url, socket_connect_timeout=timeout_s, client_name="hybridgate-batch"
        )
        self.p = f"{prefix}:batch"
        self._put_line = self.client.register_script(_PUT_LINE)
        self._lease = self.client.register_script(_LEASE)

    async def lease(self, batch_id: str, holder: str, ttl_s: float) -> bool:
        """One replica runs a batch: True while `holder` holds its lease (taken or renewed)."""
        key = f"{self.p}:lease:{batch_id}"
        return bool(await self._lease(keys=[key], args=[holder, int(ttl_s * 1000)]))

    async def load(self) -> None:
        await self.client.ping()

    async def _put(self, h: str, obj: Record) -> None:
        await self.client.hset(f"{self.p}:{h}", obj["id"], _dumps(obj))

    async def _get(self, h: str, key: str) -> Record | None:
        raw = await self.client.hget(f"{self.p}:{h}", key)
        return None if raw is None else json.loads(raw)

    async def _all(self, h: str) -> list[Record]:
        return [json.loads(v) for v in (await self.client.hgetall(f"{self.p}:{h}")).values()]

    async def put_file(self, obj: Record) -> None:
        await self._put("files", obj)

    async def get_file(self, file_id: str) -> Record | None:
        return await self._get("files", file_id)

    async def delete_file(self, file_id: str) -> None:
        await self.client.hdel(f"{self.p}:files", file_id)

    async def files(self) -> list[Record]:
        return await self._all("files")

    async def put_batch(self, obj: Record) -> None:
        await self._put("jobs", obj)

    async def get_batch(self, batch_id: str) -> Record | None:
        return await self._get("jobs", batch_id)

    async def batches(self) -> list[Record]:
        return await self._all("jobs")

    async def put_line(self, batch_id: str, index: int, record: Record) -> bool:
        key = f"{self.p}:lines:{batch_id}"
        return bool(await self._put_line(keys=[key], args=[index, _dumps(record)]))

    async def lines(self, batch_id: str) -> dict[int, Record]:
        raw = await self.client.hgetall(f"{self.p}:lines:{batch_id}")
        return {int(k): json.loads(v) for k, v in raw.items()}

    async def close(self) -> None:
        await self.client.aclose()


def build_store(state_url: str, prefix: str, timeout_s: float, root: Path) -> BatchStore:
    if state_url.startswith("memory://"):
        return DirStore(root / "state")
    return RedisStore(state_url, prefix, timeout_s)
