"""Stored OpenAI responses (/v1/responses with `store`), per tenant (docs/state.md).

One document per response under `<prefix>:resp:<tenant>:<id>`: the tenant is part of
the key, so one tenant's lookup can never find another's response (it is simply not
there: a 404, never a 403 that would tell the id exists). A document holds what the
next turn and the item routes need: the conversation's input items (history and this
turn's input), the output items, who served it (backend, and whether its id is the
upstream's own, `native`), and for translated targets the response object itself.
Only /v1/responses and its item routes call this; the chat path never does.
"""

from __future__ import annotations

from typing import Any

import orjson

from proxy.request.errors import ProxyError
from proxy.state.base import Remote


class ResponseStore:
    def __init__(self, remote: Remote, prefix: str) -> None:
        self.remote = remote
        self.prefix = prefix

    def _key(self, tenant: str, response_id: str) -> str:
        return f"{self.prefix}:resp:{tenant}:{response_id}"

    async def get(self, tenant: str, response_id: str) -> dict[str, Any] | None:
        try:
            raw = await self.remote.get_doc(self._key(tenant, response_id))
        except Exception as exc:  # Redis down: the answer cannot be known
            raise _unavailable(exc) from None
        if raw is None:
            return None
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        return doc if isinstance(doc, dict) else None

    async def put(
        self, tenant: str, response_id: str, doc: dict[str, Any], retention_s: float
    ) -> None:
        try:
            await self.remote.put_doc(
                self._key(tenant, response_id), orjson.dumps(doc), max(1, int(retention_s))
            )
        except Exception as exc:
            raise _unavailable(exc) from None

    async def delete(self, tenant: str, response_id: str) -> bool:
        try:
            return await self.remote.delete_doc(self._key(tenant, response_id))
        except Exception as exc:
            raise _unavailable(exc) from None


def _unavailable(exc: Exception) -> ProxyError:
    return ProxyError(
        503,
        f"The proxy's state store is unavailable, so stored responses cannot be read or "
        f"written ({type(exc).__name__}).",
        type_="server_error",
        code="state_unavailable",
        outcome="error",
    )
