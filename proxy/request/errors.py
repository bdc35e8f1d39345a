"""OpenAI's error shape, everywhere: `{"error": {"message", "type", "param", "code"}}`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from proxy.request.failover import is_context_length_error

CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
MODEL_NOT_FOUND = "model_not_found"

# OpenAI's `type` per status, as its API and SDK use them.
_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error_type_for(status: int) -> str:
    if status in _TYPE_BY_STATUS:
        return _TYPE_BY_STATUS[status]
    return "server_error" if status >= 500 else "invalid_request_error"


def error_body(
    message: str,
    type_: str | None = None,
    param: str | None = None,
    code: str | int | None = None,
    status: int = 400,
) -> bytes:
    return orjson.dumps(
        {
            "error": {
                "message": message,
                "type": type_ or error_type_for(status),
                "param": param,
                "code": code,
            }
        }
    )


class ProxyError(Exception):
    """An error the proxy answers itself, already in OpenAI's terms."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str | None = None,
        param: str | None = None,
        code: str | int | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
        outcome: str = "rejected",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_ or error_type_for(status)
        self.param = param
        self.code = code
        self.headers = headers or []
        self.outcome = outcome

    def body(self) -> bytes:
        return error_body(self.message, self.type, self.param, self.code, self.status)


def normalize_upstream_error(
    status: int,
    body: bytes,
    backend: str,
    redact: Callable[[bytes], bytes] | None = None,
    context_param: str = "messages",
) -> tuple[bytes, str | None]:
    """Upstream error body → (OpenAI-shaped body, its `code` as a string if any).

    vLLM answers in two shapes: the nested OpenAI one (with an integer `code`, often the
    HTTP status) and the old flat `{"object": "error", "message", "type", "param", "code"}`.
    Both, and any non-JSON body, become the nested shape. The message is kept: it is the
    upstream's explanation (e.g. the context length). An upstream may quote the key it was
    sent, so `redact` masks every configured secret, in the raw body (before a non-JSON
    text is cut short) and in the result (after JSON escapes are undone). A context-length
    400 says so the way OpenAI does (`code: context_length_exceeded`, `param` the prompt's
    field), whatever the engine called it, and so does a 404 about the `model` param
    (`code: model_not_found`): SDKs and agents test those codes.
    """
    if redact is not None:
        body = redact(body)
    message: str | None = None
    type_: str | None = None
    param = None
    code: object = None
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        inner = data.get("error")
        err: dict[str, Any] = inner if isinstance(inner, dict) else data
        if isinstance(err.get("message"), str):
            message = err["message"]
        elif isinstance(data.get("error"), str):
            message = data["error"]
        elif isinstance(data.get("detail"), str):
            message = data["detail"]
        type_ = err.get("type") if isinstance(err.get("type"), str) else None
        param = err.get("param") if isinstance(err.get("param"), str) else None
        code = err.get("code")
    if message is None:
        text = body[:300].decode("utf-8", "replace").strip() if body else ""
        message = f"backend '{backend}' returned HTTP {status}" + (f": {text}" if text else "")
    if isinstance(code, int) or code is None:
        code_out: str | int | None = None if code == status else code
    else:
        code_out = str(code)
    if type_ is None or type_ in ("BadRequestError", "NotFoundError", "Bad Request"):
        type_ = error_type_for(status)
    if (code_out is None or isinstance(code_out, int)) and is_context_length_error(status, body):
        code_out, type_, param = CONTEXT_LENGTH_EXCEEDED, "invalid_request_error", context_param
    elif status == 404 and code_out is None and param == "model":
        code_out = MODEL_NOT_FOUND  # vLLM's NotFoundError for a model it does not serve
    out = orjson.dumps(
        {"error": {"message": message, "type": type_, "param": param, "code": code_out}}
    )
    if redact is not None:
        out = redact(out)
    return out, code_out if isinstance(code_out, str) else None
