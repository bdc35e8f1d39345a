"""Where shared counters live: the interface a state backend implements.

The StateStore (store.py) keeps every decision local and O(1); a Remote only has to do
one thing, in one round trip: apply a batch of counter increments exactly once (the
batch carries this replica's sequence number, so a retried batch is a no-op), set
expiries, and answer the current values of the counters the replica reads.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

Counts = dict[str, dict[str, int]]  # hash -> field -> integer


class Remote(ABC):
    kind: str = "?"

    @property
    @abstractmethod
    def display_url(self) -> str:
        """The backend's address with any password masked (for health and logs)."""

    @abstractmethod
    async def apply(
        self, seq: int, ops: Counts, expire: dict[str, int], reads: dict[str, list[str]]
    ) -> Counts:
        """Add `ops` unless batch `seq` of this replica was applied already (seq 0: read
        only), set `expire` (seconds) on those hashes, and return the `reads` fields."""

    @abstractmethod
    async def read_hash(self, h: str) -> dict[str, int]:
        """Every field of one hash (reports; never on the request path)."""

    # Stored documents (OpenAI's stored responses, proxy/state/responses.py): one key, one
    # blob, an expiry. Only routes that need state call these, never the chat path.
    @abstractmethod
    async def get_doc(self, key: str) -> bytes | None:
        """The document under `key`, or None (absent or expired)."""

    @abstractmethod
    async def put_doc(self, key: str, value: bytes, ttl_s: int) -> None:
        """Store `value` under `key` for `ttl_s` seconds."""

    @abstractmethod
    async def delete_doc(self, key: str) -> bool:
        """Remove `key`; whether it was there."""

    async def close(self) -> None:  # noqa: B027 - optional for backends holding nothing
        """Release connections."""
