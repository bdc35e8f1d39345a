"""The ASGI lifespan protocol, once: run `startup` and `shutdown` when the server says so."""

from __future__ import annotations

import gc
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("hybridgate")


async def run_lifespan(
    receive: Callable[[], Awaitable[dict[str, Any]]],
    send: Callable[[dict[str, Any]], Awaitable[None]],
    startup: Callable[[], Awaitable[None]],
    shutdown: Callable[[], Awaitable[None]],
) -> None:
    """A failed startup is reported to the server (which then exits) instead of raising."""
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            try:
                await startup()
            except Exception as exc:
                log.exception("startup failed")
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            # What startup built lives as long as the process: out of the collector's sight,
            # a full collection walks the request path's objects only (it took ~45 ms
            # walking the ~65k objects of imports and config, a pause in some request).
            gc.collect()
            gc.freeze()
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            await shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return
