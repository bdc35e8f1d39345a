"""The request log: one JSON line per UsageEvent, written off the request path.

It is a slow sink of the Meter (batches, in the background), so a slow disk never slows a
request. It holds no secrets: the key's config name, never the key; the alias, never the
prompt.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from pathlib import Path
from typing import IO

import orjson

from proxy.metering.events import UsageEvent


class RequestLog:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[bytes] = self.path.open("ab")

    def _write(self, lines: bytes) -> None:
        self._fh.write(lines)
        self._fh.flush()

    @staticmethod
    def _lines(batch: list[UsageEvent]) -> bytes:
        return b"".join(orjson.dumps(asdict(ev)) + b"\n" for ev in batch)

    async def __call__(self, batch: list[UsageEvent]) -> None:
        await asyncio.to_thread(self._write, self._lines(batch))

    def write_now(self, batch: list[UsageEvent]) -> None:
        """On the caller's thread: the cluster books' sync, once per interval (meter.py)."""
        self._write(self._lines(batch))

    def close(self) -> None:
        self._fh.close()
