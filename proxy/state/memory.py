"""`memory://`: the shared counters in this process, for a single replica.

Same contract as Redis (exactly-once batches, expiring rate windows) so the store above
it runs one code path; nothing survives a restart.
"""

from __future__ import annotations

import time

from proxy.state.base import Counts, Remote


class MemoryRemote(Remote):
    kind = "memory"

    def __init__(self) -> None:
        self.data: Counts = {}
        self._expiry: dict[str, float] = {}
        self._last_seq = 0
        self._docs: dict[str, tuple[bytes, float]] = {}  # key -> (value, expires at)

    @property
    def display_url(self) -> str:
        return "memory://"

    async def apply(
        self, seq: int, ops: Counts, expire: dict[str, int], reads: dict[str, list[str]]
    ) -> Counts:
        now = time.time()
        for h in [h for h, at in self._expiry.items() if at <= now]:
            self.data.pop(h, None)
            del self._expiry[h]
        if seq > self._last_seq:
            for h, fields in ops.items():
                target = self.data.setdefault(h, {})
                for f, n in fields.items():
                    target[f] = target.get(f, 0) + n
            self._last_seq = seq
        for h, ttl in expire.items():
            self._expiry[h] = now + ttl
        return {
            h: {f: self.data.get(h, {}).get(f, 0) for f in fields} for h, fields in reads.items()
        }

    async def read_hash(self, h: str) -> dict[str, int]:
        return dict(self.data.get(h, {}))

    async def get_doc(self, key: str) -> bytes | None:
        doc = self._docs.get(key)
        if doc is None:
            return None
        if doc[1] <= time.time():
            del self._docs[key]
            return None
        return doc[0]

    async def put_doc(self, key: str, value: bytes, ttl_s: int) -> None:
        now = time.time()
        if len(self._docs) % 1024 == 1023:  # expired documents swept now and then, O(n)
            for k in [k for k, (_, at) in self._docs.items() if at <= now]:
                del self._docs[k]
        self._docs[key] = (value, now + ttl_s)

    async def delete_doc(self, key: str) -> bool:
        doc = self._docs.pop(key, None)
        return doc is not None and doc[1] > time.time()
