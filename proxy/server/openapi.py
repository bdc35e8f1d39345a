"""The proxy's OpenAPI document, including the OpenAI routes served off FastAPI.

`POST /v1/chat/completions`, `/v1/completions` and `/v1/embeddings` are served by the
raw-ASGI Handler (app.py), so FastAPI knows nothing about them. This module adds them
to `app.openapi()` by hand: request bodies with the fields the proxy reads and OpenAI's
common ones (`additionalProperties` allowed: the proxy forwards what it does not read),
responses including OpenAI's error shape, and the security each route needs. The
schema is data; nothing here runs on the request path. It also replaces FastAPI's 422
validation response (the proxy answers 400 in OpenAI's shape) and documents the error
statuses each operator route really returns. The aliases (the `model` enum) are shown
only to callers who may list them.

The OpenAI paths are also registered as POST routes in the ops app that delegate to
the same Handler: the fast path in app.py serves them first, and the route table makes
other methods an OpenAI-shaped 405 rather than a 404.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.routing import Route

from proxy.live.window import WINDOWS
from proxy.request.errors import ProxyError
from proxy.request.handler import ENDPOINTS
from proxy.server.exchange import send_error

_REF = "#/components/schemas/"
_NULL: dict[str, Any] = {"type": "null"}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": _REF + name}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, _NULL]}


def _obj(props: dict[str, Any], required: tuple[str, ...] = (), **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": True}
    if required:
        out["required"] = list(required)
    out.update(extra)
    return out


_STR = {"type": "string"}
_INT = {"type": "integer"}
_TOKENS = {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1}
_TEXT_OR_TOKENS = {
    "anyOf": [
        _STR,
        {"type": "array", "items": _STR, "minItems": 1},
        _TOKENS,
        {"type": "array", "items": _TOKENS, "minItems": 1},
    ]
}

_SCHEMAS: dict[str, Any] = {
    "Error": _obj(
        {
            "error": {
                "type": "object",
                "properties": {
                    "message": _STR,
                    "type": _STR,
                    "param": {"type": ["string", "null"]},
                    "code": {"type": ["string", "integer", "null"]},
                },
                "required": ["message", "type", "param", "code"],
            }
        },
        ("error",),
        description="OpenAI's error shape; every error the proxy answers has it.",
    ),
    "StreamOptions": _obj(
        {
            "include_usage": {
                "type": "boolean",
                "description": "Send a final chunk with the usage (the proxy always asks "
                "the upstream for it, and strips it when this is not set).",
            },
            "continuous_usage_stats": {
                "type": "boolean",
                "description": "vLLM: usage in every chunk.",
            },
        }
    ),
    "ChatMessage": _obj(
        {
            "role": {"enum": ["system", "developer", "user", "assistant", "tool", "function"]},
            "content": {
                "anyOf": [
                    _STR,
                    {"type": "array", "items": _obj({"type": _STR}, ("type",))},
                    _NULL,
                ]
            },
            "name": _STR,
            "tool_call_id": _STR,
            "tool_calls": {"type": "array", "items": {"type": "object"}},
        },
        ("role",),
    ),
    "Tool": _obj(
        {
            "type": {"const": "function"},
            "function": _obj(
                {"name": _STR, "description": _STR, "parameters": {"type": "object"}},
                ("name",),
            ),
        },
        ("type", "function"),
    ),
    "Usage": _obj(
        {
            "prompt_tokens": _INT,
            "completion_tokens": _INT,
            "total_tokens": _INT,
            "prompt_tokens_details": _nullable({"type": "object"}),
        },
        ("prompt_tokens", "total_tokens"),
    ),
    "ChatCompletion": _obj(
        {
            "id": _STR,
            "object": {"const": "chat.completion"},
            "created": _INT,
            "model": _STR,
            "choices": {
                "type": "array",
                "items": _obj(
                    {
                        "index": _INT,
                        "message": _obj({"role": _STR, "content": {"type": ["string", "null"]}}),
                        "finish_reason": {"type": ["string", "null"]},
                    },
                    ("index", "message"),
                ),
            },
            "usage": _nullable(_ref("Usage")),
        },
        ("id", "object", "created", "model", "choices"),
    ),
    "Completion": _obj(
        {
            "id": _STR,
            "object": {"const": "text_completion"},
            "created": _INT,
            "model": _STR,
            "choices": {
                "type": "array",
                "items": _obj(
                    {"index": _INT, "text": _STR, "finish_reason": {"type": ["string", "null"]}},
                    ("index", "text"),
                ),
            },
            "usage": _nullable(_ref("Usage")),
        },
        ("id", "object", "created", "model", "choices"),
    ),
    "Embeddings": _obj(
        {
            "object": {"const": "list"},
            "model": _STR,
            "data": {
                "type": "array",
                "items": _obj(
                    {
                        "object": {"const": "embedding"},
                        "index": _INT,
                        "embedding": {
                            "anyOf": [{"type": "array", "items": {"type": "number"}}, _STR]
                        },
                    },
                    ("index", "embedding"),
                ),
            },
            "usage": _ref("Usage"),
        },
        ("object", "data", "model"),
    ),
    "Response": _obj(
        {
            "id": _STR,
            "object": {"const": "response"},
            "created_at": _INT,
            "status": _STR,
            "model": _STR,
            "output": {"type": "array", "items": {"type": "object"}},
            "previous_response_id": {"type": ["string", "null"]},
            "usage": _nullable(
                _obj({"input_tokens": _INT, "output_tokens": _INT, "total_tokens": _INT})
            ),
        },
        ("id", "object", "status", "output"),
    ),
    "ResponseDeleted": _obj(
        {"id": _STR, "object": {"const": "response"}, "deleted": {"type": "boolean"}},
        ("id", "object", "deleted"),
    ),
    "ResponseItemList": _obj(
        {
            "object": {"const": "list"},
            "data": {"type": "array", "items": {"type": "object"}},
            "first_id": {"type": ["string", "null"]},
            "last_id": {"type": ["string", "null"]},
            "has_more": {"type": "boolean"},
        },
        ("object", "data"),
    ),
    "Model": _obj(
        {"id": _STR, "object": {"const": "model"}, "created": _INT, "owned_by": _STR},
        ("id", "object"),
    ),
    "ModelList": _obj(
        {
            "object": {"const": "list"},
            "data": {"type": "array", "items": _ref("Model")},
        },
        ("object", "data"),
    ),
}


def _common_body(model: dict[str, Any]) -> dict[str, Any]:
    """Fields every generation endpoint shares: the ones the proxy reads first."""
    return {
        "model": model,
        "stream": {
            "type": ["boolean", "null"],
            "default": False,
            "description": "Server-sent events; the proxy always meters the stream's usage.",
        },
        "stream_options": _nullable(_ref("StreamOptions")),
        "max_tokens": {"type": ["integer", "null"], "minimum": 1},
        "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2},
        "top_p": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
        "n": {"type": ["integer", "null"], "minimum": 1, "maximum": 128},
        "stop": {
            "anyOf": [_STR, {"type": "array", "items": _STR, "maxItems": 4}, _NULL],
        },
        "presence_penalty": {"type": ["number", "null"], "minimum": -2, "maximum": 2},
        "frequency_penalty": {"type": ["number", "null"], "minimum": -2, "maximum": 2},
        "seed": {"type": ["integer", "null"]},
        "user": {
            "type": "string",
            "description": "End-user id; `rules[].when.user` can route on it.",
        },
    }


def _request_schemas(aliases: list[str]) -> dict[str, Any]:
    model: dict[str, Any] = {
        "type": "string",
        "minLength": 1,
        "description": "A model alias of this proxy (GET /v1/models); others get 404.",
    }
    if aliases:
        model["enum"] = aliases
    chat = {
        **_common_body(model),
        "messages": {"type": "array", "items": _ref("ChatMessage"), "minItems": 1},
        "max_completion_tokens": {"type": ["integer", "null"], "minimum": 1},
        "metadata": {
            "type": "object",
            "additionalProperties": {"type": "string", "maxLength": 512},
            "maxProperties": 16,
            "description": "Request metadata; `rules[].when.metadata` can route on it "
            "(e.g. a data class pinned to self-hosted backends).",
        },
        "tools": {"type": "array", "items": _ref("Tool")},
        "tool_choice": {
            "anyOf": [{"enum": ["none", "auto", "required"]}, {"type": "object"}],
        },
        "response_format": _obj({"type": {"enum": ["text", "json_object", "json_schema"]}}),
        "logprobs": {"type": ["boolean", "null"]},
        "top_logprobs": {"type": ["integer", "null"], "minimum": 0, "maximum": 20},
        "logit_bias": {"type": ["object", "null"], "additionalProperties": {"type": "number"}},
    }
    completion = {
        **_common_body(model),
        "prompt": _TEXT_OR_TOKENS,
        "echo": {"type": ["boolean", "null"]},
        "suffix": {"type": ["string", "null"]},
        "logprobs": {"type": ["integer", "null"], "minimum": 0, "maximum": 5},
    }
    embeddings = {
        "model": model,
        "input": _TEXT_OR_TOKENS,
        "encoding_format": {"enum": ["float", "base64"]},
        "dimensions": {"type": "integer", "minimum": 1},
        "user": _STR,
    }
    messages = {
        "model": model,
        "messages": {
            "type": "array",
            "items": _obj({"role": {"enum": ["user", "assistant"]}, "content": {}}, ("role",)),
            "minItems": 1,
        },
        "max_tokens": {"type": "integer", "minimum": 1},
        "system": {"anyOf": [_STR, {"type": "array", "items": {"type": "object"}}]},
        "stream": {"type": "boolean"},
        "stop_sequences": {"type": "array", "items": _STR},
        "temperature": {"type": "number", "minimum": 0, "maximum": 1},
        "top_p": {"type": "number"},
        "top_k": {"type": "integer"},
        "tools": {"type": "array", "items": {"type": "object"}},
        "tool_choice": {"type": "object"},
        "metadata": {"type": "object"},
    }
    count = {k: v for k, v in messages.items() if k not in ("max_tokens", "stream")}
    responses = {
        "model": model,
        "input": {"anyOf": [_STR, {"type": "array", "items": {"type": "object"}}]},
        "instructions": {"type": ["string", "null"]},
        "stream": {"type": ["boolean", "null"]},
        "store": {
            "type": ["boolean", "null"],
            "default": True,
            "description": "Keep the response (per tenant, `responses.retention_s`) for "
            "`previous_response_id` and GET/DELETE.",
        },
        "previous_response_id": {"type": ["string", "null"], "minLength": 1},
        "background": {"type": ["boolean", "null"]},
        "tools": {"type": "array", "items": {"type": "object"}},
        "tool_choice": {"anyOf": [{"enum": ["none", "auto", "required"]}, {"type": "object"}]},
        "text": {"type": "object"},
        "reasoning": {"type": ["object", "null"]},
        "max_output_tokens": {"type": ["integer", "null"], "minimum": 1},
        "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2},
        "top_p": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
        "metadata": {"type": ["object", "null"]},
        "user": _STR,
    }
    return {
        "ResponseRequest": _obj(responses, ("model", "input")),
        "MessagesRequest": _obj(messages, ("model", "messages", "max_tokens")),
        "CountTokensRequest": _obj(count, ("model", "messages")),
        "ChatCompletionRequest": _obj(chat, ("model", "messages")),
        "CompletionRequest": _obj(completion, ("model", "prompt")),
        "EmbeddingsRequest": _obj(embeddings, ("model", "input")),
    }


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}


_PROXY_ERRORS = {
    "400": _error(
        "Invalid request: not JSON, not an object, or a field the proxy reads "
        "has the wrong type (`param` names it); also an upstream's 400."
    ),
    "401": _error("Missing or unknown API key."),
    "403": _error(
        "The tenant has an API budget and the alias's API models have no known price "
        "(`unpriced_model`: the message names the `prices:` entry to add)."
    ),
    "404": _error("Unknown model alias."),
    "413": _error("Body over `limits.max_body_bytes`."),
    "429": _error(
        "Tenant over budget (`over_budget: reject`), key over its rate limit, "
        "or the upstream's 429 after failover."
    ),
    "502": _error("The backend failed or refused the proxy's credentials (named, never its key)."),
    "503": _error("No backend available for the alias (breakers open, pinned data)."),
    "504": _error("No answer before the request deadline."),
    "default": _error(
        "An upstream error passed back in OpenAI's shape "
        "(`x-hybridgate-backend` names the backend)."
    ),
}

_ROUTE_HEADERS = {
    "x-hybridgate-backend": {"description": "The backend that answered.", "schema": _STR},
    "x-hybridgate-attempts": {
        "description": "Attempts made; 2 or more means the request failed over.",
        "schema": _STR,
    },
    "x-request-id": {
        "description": "The upstream's request id, else the proxy's (`hg-...`); the request "
        "log records both.",
        "schema": _STR,
    },
}


def _openai_operation(summary: str, request: str, response: str, streams: bool) -> dict[str, Any]:
    ok: dict[str, Any] = {"application/json": {"schema": _ref(response)}}
    if streams:
        ok["text/event-stream"] = {
            # One server-sent event (OpenAPI 3.1 has `schema` describe each event).
            "schema": _obj(
                {"data": {"type": "string"}},
                ("data",),
                description="`data: {chunk}` events, then `data: [DONE]`; an upstream "
                "failure after the first event ends the stream with an `{error}` event.",
            )
        }
    return {
        "summary": summary,
        "operationId": request[0].lower() + request[1:].removesuffix("Request"),
        "tags": ["OpenAI"],
        "security": [{"apiKey": []}],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _ref(request)}},
        },
        "responses": {
            "200": {
                "description": "The backend's answer.",
                "headers": _ROUTE_HEADERS,
                "content": ok,
            },
            **_PROXY_ERRORS,
        },
    }


_ANTHROPIC_SCHEMAS: dict[str, Any] = {
    "AnthropicError": _obj(
        {
            "type": {"const": "error"},
            "error": _obj({"type": _STR, "message": _STR}, ("type", "message")),
        },
        ("type", "error"),
    ),
    "Message": _obj(
        {
            "id": _STR,
            "type": {"const": "message"},
            "role": {"const": "assistant"},
            "model": _STR,
            "content": {"type": "array", "items": {"type": "object"}},
            "stop_reason": {"type": ["string", "null"]},
            "usage": _obj({"input_tokens": _INT, "output_tokens": _INT}),
        },
        ("id", "type", "role", "content"),
    ),
    "MessageTokensCount": _obj({"input_tokens": _INT}, ("input_tokens",)),
}


def _anthropic_operation(
    summary: str, request: str, response: str, streams: bool
) -> dict[str, Any]:
    """An Anthropic Messages route: Anthropic's error shape on every status."""
    ok: dict[str, Any] = {"application/json": {"schema": _ref(response)}}
    if streams:
        ok["text/event-stream"] = {
            "schema": _obj(
                {"event": _STR, "data": _STR},
                ("data",),
                description="Anthropic's events: message_start, content_block_start/delta/"
                "stop, message_delta, message_stop, ping; `error` ends a failed stream.",
            )
        }
    err = {"application/json": {"schema": _ref("AnthropicError")}}
    errors = {
        status: {"description": spec["description"], "content": err}
        for status, spec in _PROXY_ERRORS.items()
    }
    return {
        "summary": summary,
        "operationId": request[0].lower() + request[1:].removesuffix("Request"),
        "tags": ["Anthropic"],
        "security": [{"apiKey": []}],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _ref(request)}},
        },
        "responses": {
            "200": {"description": "The answer.", "headers": _ROUTE_HEADERS, "content": ok},
            **errors,
        },
    }


_OPENAI_PATHS = {
    "/v1/chat/completions": ("Chat completion", "ChatCompletionRequest", "ChatCompletion", True),
    "/v1/completions": ("Text completion", "CompletionRequest", "Completion", True),
    "/v1/embeddings": ("Embeddings", "EmbeddingsRequest", "Embeddings", False),
    "/v1/responses": (
        "Create a response (OpenAI Responses API)",
        "ResponseRequest",
        "Response",
        True,
    ),
}
_ANTHROPIC_PATHS = {
    "/v1/messages": ("Message (Anthropic Messages API)", "MessagesRequest", "Message", True),
    "/v1/messages/count_tokens": (
        "Count a message's input tokens (Anthropic API; estimated locally without an "
        "Anthropic target: `x-hybridgate-token-count: estimated`)",
        "CountTokensRequest",
        "MessageTokensCount",
        False,
    ),
}
assert set(_OPENAI_PATHS) | set(_ANTHROPIC_PATHS) == set(ENDPOINTS)

_JSON_OBJECT = {"application/json": {"schema": {"type": "object"}}}

# What each operator route answers besides its 200, and the 200's schema where FastAPI
# has none. Keyed by (path, method).
_OPS: dict[tuple[str, str], dict[str, Any]] = {
    ("/v1/models", "get"): {
        "security": [{"apiKey": []}],
        "ok": {"application/json": {"schema": _ref("ModelList")}},
        "errors": ("401",),
    },
    ("/v1/models/{model_id}", "get"): {
        "security": [{"apiKey": []}],
        "ok": {"application/json": {"schema": _ref("Model")}},
        "errors": ("401", "404"),
    },
    ("/health/live", "get"): {
        "ok": {"application/json": {"schema": _obj({"status": {"const": "ok"}}, ("status",))}},
    },
    ("/health/ready", "get"): {
        "ok": _JSON_OBJECT,
        "extra": {
            "503": {
                "description": "Not ready: an alias has no backend up.",
                "content": _JSON_OBJECT,
            }
        },
    },
    ("/admin/reload", "post"): {
        "security": [{"adminKey": []}],
        "ok": _JSON_OBJECT,
        "errors": ("400", "401", "403"),
    },
    ("/costs/report", "get"): {
        "security": [{"adminKey": []}],
        "ok": _JSON_OBJECT,
        "errors": ("400", "401", "403"),
    },
    ("/metrics", "get"): {
        "security": [{"metricsToken": []}, {}],
        "ok": {"text/plain": {"schema": _STR}},
        "errors": ("401", "403"),
    },
}
_OPS_ERRORS = {
    "400": "Invalid parameter or refused config.",
    "401": "Missing or wrong key for this route.",
    "403": "Not configured (no admin key) or not from an allowed network.",
    "404": "Not a model alias of this proxy (OpenAI's `model_not_found`).",
}


def _patch_ops(paths: dict[str, Any], aliases: list[str]) -> None:
    for (path, method), spec in _OPS.items():
        op = paths.get(path, {}).get(method)
        if op is None:
            continue
        responses = op["responses"]
        responses.pop("422", None)  # validation errors are OpenAI-shaped 400s here
        responses["200"]["content"] = spec["ok"]
        for code in spec.get("errors", ()):
            responses[code] = _error(_OPS_ERRORS[code])
        responses.update(spec.get("extra", {}))
        if "security" in spec:
            op["security"] = spec["security"]
        for param in op.get("parameters", []):
            if param["name"] == "model_id":
                param["description"] = "A model alias of this proxy; others get 404."
                if aliases:
                    param["schema"] = {"type": "string", "enum": aliases}
            if path == "/costs/report" and param["name"] == "window":
                param["schema"] = {"enum": list(WINDOWS), "default": "1h"}
                responses["400"] = _error("Unknown window.")


def build_schema(app: FastAPI, aliases: list[str]) -> dict[str, Any]:
    """FastAPI's document for the ops routes, plus the OpenAI routes and real errors."""
    doc = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    schemas.update(copy.deepcopy(_SCHEMAS))
    schemas.update(copy.deepcopy(_ANTHROPIC_SCHEMAS))
    schemas.update(_request_schemas(aliases))
    doc["components"]["securitySchemes"] = {
        "apiKey": {
            "type": "http",
            "scheme": "bearer",
            "description": "A client key from auth.keys (none needed when no keys "
            "are configured). Also accepted as `api-key` or `x-api-key`.",
        },
        "adminKey": {"type": "http", "scheme": "bearer", "description": "auth.admin_key."},
        "metricsToken": {
            "type": "http",
            "scheme": "bearer",
            "description": "metrics.token, when one is configured.",
        },
    }
    paths = doc.setdefault("paths", {})
    _patch_ops(paths, aliases)
    for path, (summary, request, response, streams) in _OPENAI_PATHS.items():
        paths[path] = {"post": _openai_operation(summary, request, response, streams)}
    for path, (summary, request, response, streams) in _ANTHROPIC_PATHS.items():
        paths[path] = {"post": _anthropic_operation(summary, request, response, streams)}
    paths.update(_stored_response_paths())
    return doc


def _stored_response_paths() -> dict[str, Any]:
    """GET/DELETE /v1/responses/{id}, its cancel and input items (proxy/request/stored.py):
    the caller's tenant's stored responses only; any other id is a 404."""
    param = [
        {
            "name": "response_id",
            "in": "path",
            "required": True,
            "schema": _STR,
            "description": "A response id this tenant created (with `store`).",
        }
    ]

    def op(summary: str, schema: str, op_id: str) -> dict[str, Any]:
        return {
            "summary": summary,
            "operationId": op_id,
            "tags": ["OpenAI"],
            "security": [{"apiKey": []}],
            "parameters": param,
            "responses": {
                "200": {
                    "description": "OK.",
                    "content": {"application/json": {"schema": _ref(schema)}},
                },
                "400": _error("Not cancellable (not a background response)."),
                "401": _PROXY_ERRORS["401"],
                "404": _error("No such response for this tenant (unknown, expired, deleted)."),
                "502": _PROXY_ERRORS["502"],
            },
        }

    base = "/v1/responses/{response_id}"
    return {
        base: {
            "get": op("Retrieve a stored response", "Response", "retrieveResponse"),
            "delete": op("Delete a stored response", "ResponseDeleted", "deleteResponse"),
        },
        base + "/cancel": {
            "post": op("Cancel a background response", "Response", "cancelResponse")
        },
        base + "/input_items": {
            "get": op("A stored response's input items", "ResponseItemList", "listInputItems")
        },
    }


def install(app: FastAPI, gate: Any) -> None:
    """Hook for build_ops_app: the document at /openapi.json and the OpenAI routes' 405s.

    The document names the model aliases only to callers who may list them (a client or
    admin key, or an open proxy), as GET /v1/models does; others get `model: string`.
    """
    for path in ENDPOINTS:
        for p in (path, path.removeprefix("/v1")):
            app.router.routes.append(
                Route(p, endpoint=_Delegate(gate), methods=["POST"], include_in_schema=False)
            )
    cache: dict[tuple[str, ...], dict[str, Any]] = {}

    def document(aliases: tuple[str, ...]) -> dict[str, Any]:
        if aliases not in cache:
            if len(cache) > 8:  # reloads changed the aliases: forget the old ones
                cache.clear()
            cache[aliases] = build_schema(app, list(aliases))
        return cache[aliases]

    async def openapi_json(request: Request) -> JSONResponse:
        rt = gate.runtime
        headers = dict(request.scope["headers"])
        try:
            rt.auth.client(headers)
            may_list = True
        except ProxyError:
            may_list = rt.auth.is_admin(headers)
        return JSONResponse(document(tuple(rt.config.models) if may_list else ()))

    url = app.openapi_url or "/openapi.json"
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) != url]
    app.add_route(url, openapi_json, include_in_schema=False)
    app.openapi = lambda: document(())  # type: ignore[method-assign]


class _Delegate:
    """ASGI endpoint of the OpenAI routes in the ops app, so that other methods get a 405
    naming POST. A POST never reaches it under `hybridgate serve` (our protocol serves the
    OpenAI routes from the socket); under another ASGI server it says so."""

    def __init__(self, gate: Any) -> None:
        self._gate = gate

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        err = ProxyError(
            501,
            "The OpenAI routes are served by hybridgate's own HTTP protocol "
            "(hybridgate serve), not by the ASGI app under another server.",
            type_="server_error",
            code="not_implemented",
        )
        await send_error(send, err)
