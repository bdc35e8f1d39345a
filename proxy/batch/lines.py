"""The lines of a batch input file: each one a request, or its own error (never the job's).

OpenAI's input format: one JSON object per line, `{"custom_id", "method": "POST", "url",
"body"}`, the url the batch's endpoint, custom_ids unique within the file. A line that
breaks a rule gets an error record in the error file; the other lines run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

ENDPOINTS = {"/v1/chat/completions": "chat", "/v1/embeddings": "embeddings"}
_REQUIRED = {"/v1/chat/completions": "messages", "/v1/embeddings": "input"}


@dataclass(slots=True)
class Line:
    index: int  # 0-based position in the input file
    custom_id: str
    body: dict[str, Any]

    @property
    def alias(self) -> str:
        return str(self.body["model"])


@dataclass(slots=True)
class BadLine:
    index: int
    custom_id: str | None
    code: str
    message: str


def parse_lines(content: bytes, endpoint: str, aliases: frozenset[str]) -> list[Line | BadLine]:
    """Every non-blank line of the file as a Line or a BadLine, in order."""
    out: list[Line | BadLine] = []
    seen: set[str] = set()
    index = -1
    for raw in content.split(b"\n"):
        if not raw.strip():
            continue
        index += 1
        out.append(_parse(raw, index, endpoint, aliases, seen))
    return out


def _parse(
    raw: bytes, index: int, endpoint: str, aliases: frozenset[str], seen: set[str]
) -> Line | BadLine:
    n = index + 1
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return BadLine(index, None, "invalid_json_line", f"Line {n} is not valid JSON: {exc}")
    if not isinstance(obj, dict):
        return BadLine(index, None, "invalid_json_line", f"Line {n} is not a JSON object.")
    cid = obj.get("custom_id")
    if not isinstance(cid, str) or not cid:
        return BadLine(index, None, "missing_custom_id", f"Line {n} has no string 'custom_id'.")
    if cid in seen:
        return BadLine(
            index, cid, "duplicate_custom_id", f"Line {n}: custom_id '{cid[:100]}' is not unique."
        )
    seen.add(cid)
    if obj.get("method", "POST") != "POST":
        return BadLine(index, cid, "invalid_method", f"Line {n}: 'method' must be 'POST'.")
    if obj.get("url") != endpoint:
        return BadLine(
            index,
            cid,
            "mismatched_url",
            f"Line {n}: 'url' must be the batch's endpoint {endpoint}.",
        )
    body = obj.get("body")
    if not isinstance(body, dict):
        return BadLine(index, cid, "invalid_body", f"Line {n}: 'body' must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or model not in aliases:
        return BadLine(
            index,
            cid,
            "model_not_found",
            f"Line {n}: model '{str(model)[:100]}' does not exist or you do not have access to it.",
        )
    if body.get(_REQUIRED[endpoint]) is None:
        field = _REQUIRED[endpoint]
        return BadLine(index, cid, "invalid_body", f"Line {n}: body needs '{field}'.")
    if body.get("stream"):
        return BadLine(index, cid, "invalid_body", f"Line {n}: batch requests cannot stream.")
    return Line(index, cid, body)
