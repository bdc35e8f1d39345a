"""A stored response's own routes: `GET /v1/responses/{id}`, `DELETE /v1/responses/{id}`,
`POST /v1/responses/{id}/cancel`, `GET /v1/responses/{id}/input_items` (docs/dialects.md).

The id is looked up among the caller's tenant's stored responses only: another tenant's
id, an unknown one and an expired one are the same 404 (as OpenAI answers an unknown
id), so existence never leaks. A response a native backend made (its id is the
upstream's) is asked of that backend; one the proxy made from a translation is answered
from the store. Nothing here is metered: no tokens are spent.
"""

from __future__ import annotations

import contextlib
import itertools
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import orjson

from proxy.backends.base import UpstreamFailure
from proxy.request.errors import ProxyError, normalize_upstream_error
from proxy.server.exchange import ClientGone, Exchange, decode_body

if TYPE_CHECKING:
    from proxy.runtime import Runtime

_JSON = (b"content-type", b"application/json")
_REQUEST_ID = b"x-request-id"
_BACKEND = b"x-hybridgate-backend"
_ID = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,255}")  # no "." or ".." path segment
_PREFIXES = ("/v1/responses/", "/responses/")
_ROUTES = {"": ("GET", "DELETE"), "cancel": ("POST",), "input_items": ("GET",)}
_ids = itertools.count(1)


def not_found(response_id: str) -> ProxyError:
    return ProxyError(
        404,
        f"Response with id '{response_id[:200]}' not found.",
        param="response_id",
        code="not_found",
    )


async def serve_stored(rt: Runtime, exchange: Exchange, line: str) -> None:
    """One request to a stored response's route; `line` is "METHOD /path?query"."""
    rid = f"hg-item-{next(_ids)}"
    try:
        status, headers, body = await _serve(rt, exchange, line)
    except ClientGone:
        return
    except ProxyError as err:
        status, headers, body = err.status, err.headers, err.body()
    if all(h[0] != _REQUEST_ID for h in headers):
        headers = [*headers, (_REQUEST_ID, rid.encode())]
    with contextlib.suppress(Exception):
        await exchange.respond(status, [_JSON, *headers], body)


async def _serve(rt: Runtime, exchange: Exchange, line: str) -> tuple[int, list[Any], bytes]:
    method, _, url = line.partition(" ")
    path, _, query = url.partition("?")
    rest = next(unquote(path[len(p) :]) for p in _PREFIXES if path.startswith(p))
    response_id, _, action = rest.partition("/")
    headers = dict(exchange.headers)
    principal = rt.auth.client(headers)  # 401 before anything is said about the id
    allowed = _ROUTES.get(action)
    if allowed is None or not _ID.fullmatch(response_id):
        raise ProxyError(404, f"Invalid URL ({method} {path[:200]})", code="unknown_url")
    if method not in allowed:
        raise ProxyError(
            405, f"Method {method} is not allowed for {path[:200]}.", code="method_not_allowed"
        )
    limit = rt.config.limits.max_body_bytes
    body = await exchange.body(limit)
    encoding = headers.get(b"content-encoding")
    if body and encoding is not None:
        body = decode_body(body, encoding, limit)
    doc = await rt.responses.get(principal.tenant, response_id)
    if doc is None:
        raise not_found(response_id)
    if doc.get("native"):
        return await _forward(rt, doc, method, path, query, body, principal.tenant, response_id)
    return await _local(rt, doc, method, action, response_id, principal.tenant)


async def _local(
    rt: Runtime, doc: dict[str, Any], method: str, action: str, response_id: str, tenant: str
) -> tuple[int, list[Any], bytes]:
    """A response the proxy made (a translated target): answered from the store."""
    if method == "DELETE":
        await rt.responses.delete(tenant, response_id)
        return 200, [], orjson.dumps({"id": response_id, "object": "response", "deleted": True})
    if action == "cancel":  # only background responses can be; translated ones never are
        raise ProxyError(
            400,
            "Only responses created with background=true can be cancelled.",
            param="response_id",
            code="invalid_request",
        )
    if action == "input_items":
        items = [
            {**item, "id": item.get("id") or f"msg_{response_id[-24:]}_{i}"}
            for i, item in enumerate(doc.get("input", [])[doc.get("turn", 0) :])
            if isinstance(item, dict)
        ]
        items.reverse()  # OpenAI's default order: newest first ("desc")
        page = {
            "object": "list",
            "data": items,
            "first_id": items[0]["id"] if items else None,
            "last_id": items[-1]["id"] if items else None,
            "has_more": False,
        }
        return 200, [], orjson.dumps(page)
    response = doc.get("response") or {"id": response_id, "object": "response"}
    return 200, [], orjson.dumps(response)


async def _forward(
    rt: Runtime,
    doc: dict[str, Any],
    method: str,
    path: str,
    query: str,
    body: bytes,
    tenant: str,
    response_id: str,
) -> tuple[int, list[Any], bytes]:
    """A native response: asked of the backend whose upstream id it is."""
    name = doc.get("backend")
    backend = rt.backends.get(name) if isinstance(name, str) else None
    call = getattr(backend, "call", None)
    if call is None:  # the backend left the config since
        raise not_found(response_id)
    upstream_path = path[path.index("/responses/") :] + (f"?{query}" if query else "")
    try:
        resp = await call(method, upstream_path, body)
        raw = await resp.read()
    except (UpstreamFailure, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", type(exc).__name__)
        raise ProxyError(
            502,
            f"Backend '{name}' that holds this response is unavailable ({reason}).",
            code="backend_unavailable",
            outcome="error",
        ) from None
    headers: list[Any] = [(_BACKEND, str(name).encode())]
    headers += [h for h in resp.headers if h[0] != b"content-type"]
    if resp.status >= 400:
        redact = rt.redact
        raw, _ = normalize_upstream_error(
            resp.status, raw, str(name), redact.bytes if redact else None
        )
        if resp.status == 404:  # gone upstream: forget it here too
            await rt.responses.delete(tenant, response_id)
    elif method == "DELETE":
        await rt.responses.delete(tenant, response_id)
    return resp.status, headers, raw
