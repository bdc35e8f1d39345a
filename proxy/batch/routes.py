"""The Batch API's HTTP routes on the operator surface (not hot): `/v1/files` and
`/v1/batches`, also without `/v1`, with the OpenAI routes' auth (a key → its tenant) and
error shape. A tenant sees only its own files and batches: another's is a 404."""

from __future__ import annotations

import asyncio
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

from proxy.batch.lines import ENDPOINTS
from proxy.batch.service import BatchService, public
from proxy.request.errors import ProxyError
from proxy.server.exchange import read_body

_MULTIPART_SLACK = 64 * 1024  # the form's own bytes around the file


# Not in /openapi.json yet: its document (proxy/server/openapi.py) would need the
# multipart and batch schemas for its fuzzing to hold (docs/architecture.md lists them).
def _both(path: str) -> list[str]:
    return [f"/v1{path}", path]


def _owner(gate: Any, request: Request) -> dict[str, str]:
    p = gate.runtime.auth.client(dict(request.scope["headers"]))
    return {"tenant": p.tenant, "key_name": p.key_name}


async def _body(request: Request, limit: int) -> bytes:
    """The body, refused past `limit` without reading the rest (413)."""
    receive: Any = request.receive  # FastAPI types its messages as MutableMapping
    return await read_body(receive, dict(request.scope["headers"]), limit)


def _json(obj: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json")


def _page(items: list[dict[str, Any]], after: str | None, limit: int) -> dict[str, Any]:
    if not 1 <= limit <= 100:
        raise ProxyError(400, "'limit' must be between 1 and 100.", param="limit")
    if after is not None:
        ids = [i["id"] for i in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    page = items[:limit]
    return {
        "object": "list",
        "data": [public(i) for i in page],
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(items) > limit,
    }


def _count_lines(text: str) -> int:
    return sum(1 for line in text.split("\n") if line.strip())


def parse_upload(content_type: str, body: bytes) -> tuple[str | None, str, bytes | None]:
    """(purpose, filename, file bytes) of a multipart/form-data body."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise ProxyError(
            400, "Upload a file as multipart/form-data with fields 'file' and 'purpose'."
        )
    head = b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n"
    msg = BytesParser(policy=HTTP).parsebytes(head + body)
    if not msg.is_multipart():
        raise ProxyError(400, "The multipart body could not be parsed.", code="invalid_body")
    purpose: str | None = None
    filename = "upload.jsonl"
    content: bytes | None = None
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            payload = b""
        if name == "purpose":
            purpose = payload.decode("utf-8", "replace").strip()
        elif name == "file":
            filename = part.get_filename() or filename
            content = payload
    return purpose, filename, content


def register_routes(app: FastAPI, gate: Any) -> None:
    svc: BatchService = gate.batch

    async def upload(request: Request) -> Response:
        owner = _owner(gate, request)
        cfg = svc.config
        limit = cfg.max_file_bytes + _MULTIPART_SLACK
        body = await _body(request, limit)
        purpose, filename, content = await asyncio.to_thread(  # up to max_file_bytes: off the loop
            parse_upload, request.headers.get("content-type", ""), body
        )
        if purpose is None:
            raise ProxyError(
                400, "Missing required parameter: 'purpose'.", param="purpose",
                code="missing_required_parameter",
            )  # fmt: skip
        if purpose != "batch":
            raise ProxyError(
                400,
                f"Purpose '{purpose[:50]}' is not supported here; this proxy stores files "
                "for the Batch API only (purpose 'batch').",
                param="purpose",
                code="invalid_purpose",
            )
        if content is None:
            raise ProxyError(
                400, "Missing required parameter: 'file'.", param="file",
                code="missing_required_parameter",
            )  # fmt: skip
        if len(content) > cfg.max_file_bytes:
            raise ProxyError(
                413,
                f"File of {len(content)} bytes exceeds the limit of {cfg.max_file_bytes} "
                "bytes (batch.max_file_bytes).",
                param="file",
                code="file_too_large",
            )
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError:
            raise ProxyError(
                400, "A batch file must be UTF-8 JSONL text.", param="file", code="invalid_file"
            ) from None
        lines = await asyncio.to_thread(_count_lines, text)
        if lines == 0:
            raise ProxyError(400, "The file has no lines.", param="file", code="invalid_file")
        if lines > cfg.max_lines:
            raise ProxyError(
                400,
                f"The file has {lines} lines; a batch holds at most {cfg.max_lines} "
                "(batch.max_lines).",
                param="file",
                code="too_many_lines",
            )
        obj = await svc.create_file(owner, filename[:255], purpose, content)
        return _json(public(obj))

    async def list_files(
        request: Request, purpose: str | None = None, limit: int = 100, after: str | None = None
    ) -> Response:
        owner = _owner(gate, request)
        items = await svc.list_files(owner["tenant"])
        if purpose is not None:
            items = [f for f in items if f["purpose"] == purpose]
        return _json(_page(items, after, min(limit, 100) if limit > 0 else limit))

    async def get_file(file_id: str, request: Request) -> Response:
        owner = _owner(gate, request)
        return _json(public(await svc.owned_file(owner["tenant"], file_id)))

    async def file_content(file_id: str, request: Request) -> Response:
        owner = _owner(gate, request)
        obj = await svc.owned_file(owner["tenant"], file_id)
        try:
            data = await svc.read_blob(obj["id"])
        except FileNotFoundError:
            raise ProxyError(
                404, f"File '{file_id}' has no content left.", code="not_found"
            ) from None
        return Response(data, media_type="application/octet-stream")

    async def delete_file(file_id: str, request: Request) -> Response:
        owner = _owner(gate, request)
        await svc.delete_file(owner["tenant"], file_id)
        return _json({"id": file_id, "object": "file", "deleted": True})

    async def create_batch(request: Request) -> Response:
        owner = _owner(gate, request)
        body = await _body(request, 1024 * 1024)
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ProxyError(400, f"Request body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ProxyError(400, "Request body must be a JSON object.")
        for field in ("input_file_id", "endpoint", "completion_window"):
            if not isinstance(data.get(field), str):
                raise ProxyError(
                    400, f"Missing required parameter: '{field}'.", param=field,
                    code="missing_required_parameter",
                )  # fmt: skip
        if data["endpoint"] not in ENDPOINTS:
            raise ProxyError(
                400,
                f"Endpoint '{data['endpoint'][:100]}' is not supported; use one of "
                f"{', '.join(ENDPOINTS)}.",
                param="endpoint",
                code="invalid_endpoint",
            )
        if data["completion_window"] != "24h":
            raise ProxyError(
                400,
                "'completion_window' must be '24h'.",
                param="completion_window",
                code="invalid_completion_window",
            )
        metadata = data.get("metadata")
        if metadata is not None and (
            not isinstance(metadata, dict)
            or len(metadata) > 16
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
        ):
            raise ProxyError(
                400, "'metadata' must be at most 16 string pairs.", param="metadata",
                code="invalid_metadata",
            )  # fmt: skip
        obj = await svc.create_batch(owner, data["input_file_id"], data["endpoint"], metadata)
        return _json(public(obj))

    async def get_batch(batch_id: str, request: Request) -> Response:
        owner = _owner(gate, request)
        return _json(public(await svc.owned_batch(owner["tenant"], batch_id)))

    async def list_batches(request: Request, limit: int = 20, after: str | None = None) -> Response:
        owner = _owner(gate, request)
        return _json(_page(await svc.list_batches(owner["tenant"]), after, limit))

    async def cancel_batch(batch_id: str, request: Request) -> Response:
        owner = _owner(gate, request)
        return _json(public(await svc.cancel_batch(owner["tenant"], batch_id)))

    for path in _both("/files"):
        app.add_api_route(path, upload, methods=["POST"], include_in_schema=False)
        app.add_api_route(path, list_files, methods=["GET"], include_in_schema=False)
    for path in _both("/files/{file_id}"):
        app.add_api_route(path, get_file, methods=["GET"], include_in_schema=False)
        app.add_api_route(path, delete_file, methods=["DELETE"], include_in_schema=False)
    for path in _both("/files/{file_id}/content"):
        app.add_api_route(path, file_content, methods=["GET"], include_in_schema=False)
    for path in _both("/batches"):
        app.add_api_route(path, create_batch, methods=["POST"], include_in_schema=False)
        app.add_api_route(path, list_batches, methods=["GET"], include_in_schema=False)
    for path in _both("/batches/{batch_id}"):
        app.add_api_route(path, get_batch, methods=["GET"], include_in_schema=False)
    for path in _both("/batches/{batch_id}/cancel"):
        app.add_api_route(path, cancel_batch, methods=["POST"], include_in_schema=False)
