"""The request path for the OpenAI routes, as raw ASGI (DESIGN.md, "The request path").

auth → parse the minimum → router.plan → for each attempt: backend.send → relay
(stream or not) capturing usage → meter.finish(UsageEvent), exactly once.

Raw ASGI rather than FastAPI routes: the proxy forwards bodies it does not need to
validate, so it parses only model/stream/stream_options with orjson and keeps per-request
work to a few dict operations.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from proxy.auth import Principal
from proxy.backends.base import UpstreamFailure, UpstreamResponse
from proxy.errors import ProxyError, error_body, normalize_upstream_error
from proxy.failover import failover_reason
from proxy.metering.events import Attempt, UsageEvent
from proxy.metering.gpu import GpuShare
from proxy.metering.tokens import cheap_prompt_estimate, estimate_prompt_tokens
from proxy.router import PlannedTarget, RouteRequest

log = logging.getLogger("hybridgate.request")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

ENDPOINTS = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}
_UPSTREAM_PATH = {
    "chat": "/chat/completions",
    "completions": "/completions",
    "embeddings": "/embeddings",
}
_REQUIRED_FIELD = {"chat": "messages", "completions": "prompt", "embeddings": "input"}
_JSON = (b"content-type", b"application/json")
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_ids = itertools.count(1)
_ID_PREFIX = f"hg-{os.getpid():x}-"


class ClientGone(Exception):
    """The client disconnected; the upstream request was dropped."""


async def send_error(
    send: Send, err: ProxyError, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = err.body()
    headers = [_JSON, (b"content-length", str(len(body)).encode()), *err.headers, *(extra or [])]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Receive, headers: dict[bytes, bytes], limit: int) -> bytes:
    """The whole body, refusing anything over `limit` without reading the rest."""
    declared = headers.get(b"content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise ProxyError(400, "Invalid Content-Length header.") from None
        if size > limit:
            raise ProxyError(
                413,
                f"Request body of {size} bytes exceeds the limit of {limit} "
                f"bytes (limits.max_body_bytes).",
                code="request_too_large",
            )
    msg = await receive()
    if msg["type"] == "http.disconnect":
        raise ClientGone()
    body: bytes = msg.get("body", b"")
    if not msg.get("more_body"):
        return body
    parts = [body]
    total = len(body)
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise ClientGone()
        chunk = msg.get("body", b"")
        total += len(chunk)
        if total > limit:
            raise ProxyError(
                413,
                f"Request body exceeds the limit of {limit} bytes (limits.max_body_bytes).",
                code="request_too_large",
            )
        parts.append(chunk)
        if not msg.get("more_body"):
            return b"".join(parts)


def parse_request(body: bytes, endpoint: str) -> dict[str, Any]:
    """The body as a dict, with the fields routing relies on checked for type."""
    if not body:
        raise ProxyError(400, "Request body is empty; expected a JSON object.")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ProxyError(400, f"Request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProxyError(400, "Request body must be a JSON object.")
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise ProxyError(
            400,
            "You must provide a model parameter.",
            param="model",
            code="missing_required_parameter" if model is None else "invalid_type",
        )
    field = _REQUIRED_FIELD[endpoint]
    value = data.get(field)
    if value is None:
        raise ProxyError(
            400,
            f"Missing required parameter: '{field}'.",
            param=field,
            code="missing_required_parameter",
        )
    if endpoint == "chat" and (not isinstance(value, list) or not value):
        raise ProxyError(
            400, "'messages' must be a non-empty array.", param="messages", code="invalid_type"
        )
    stream = data.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise ProxyError(400, "'stream' must be a boolean.", param="stream", code="invalid_type")
    so = data.get("stream_options")
    if so is not None and not isinstance(so, dict):
        raise ProxyError(
            400, "'stream_options' must be an object.", param="stream_options", code="invalid_type"
        )
    return data


class Handler:
    """Serves one OpenAI endpoint family against the current runtime."""

    def __init__(self, runtime_ref: Callable[[], Any]) -> None:
        self._rt = runtime_ref

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rt = self._rt()
        t0 = time.perf_counter()
        endpoint = ENDPOINTS[scope["path"]]
        ev = UsageEvent(
            request_id=_ID_PREFIX + str(next(_ids)), started_at=time.time(), endpoint=endpoint
        )
        state = _RequestState(t0)
        rt.requests_inflight += 1
        try:
            await self._serve(rt, scope, receive, send, ev, state)
        except ClientGone:
            ev.outcome = "client_disconnect"
            ev.status = 499
        except ProxyError as err:
            ev.outcome = err.outcome
            ev.status = err.status
            if not state.response_started:
                with contextlib.suppress(Exception):
                    await send_error(send, err)
        except Exception:
            log.exception("internal error serving %s", ev.request_id)
            ev.outcome = "error"
            ev.status = 500
            if not state.response_started:
                with contextlib.suppress(Exception):
                    await send_error(
                        send, ProxyError(500, "Internal proxy error.", type_="server_error")
                    )
        finally:
            rt.requests_inflight -= 1
            end = time.perf_counter()
            ev.duration_s = end - t0
            ev.overhead_s = max(0.0, ev.duration_s - state.upstream_s)
            rt.meter.finish(ev)

    async def _serve(
        self,
        rt: Any,
        scope: Scope,
        receive: Receive,
        send: Send,
        ev: UsageEvent,
        state: _RequestState,
    ) -> None:
        headers = dict(scope["headers"])
        principal: Principal = rt.auth.client(headers)
        ev.tenant = rt.tenant_label(principal.tenant)
        ev.key_name = principal.key_name
        body = await read_body(receive, headers, rt.config.limits.max_body_bytes)
        data = parse_request(body, ev.endpoint)
        state.data = data
        alias_name: str = data["model"]
        alias = rt.router.alias(alias_name)
        if alias is None:
            raise ProxyError(
                404,
                f"The model '{alias_name[:200]}' does not exist or you do not have access to it.",
                param="model",
                code="model_not_found",
            )
        ev.alias = alias_name
        stream = bool(data.get("stream")) and ev.endpoint != "embeddings"
        ev.stream = stream
        route = RouteRequest(
            alias=alias_name,
            tenant=principal.tenant,
            headers=headers,
            body=data,
            est_prompt_tokens=cheap_prompt_estimate(len(body)),
        )
        plan = rt.router.plan(route)
        client_so = data.get("stream_options") or {}
        want_usage = bool(client_so.get("include_usage"))
        want_continuous = bool(client_so.get("continuous_usage_stats"))
        timeout = alias.timeout_s or rt.config.limits.request_timeout_s
        deadline = time.monotonic() + timeout

        watcher = _DisconnectWatcher(receive)
        try:
            await self._attempts(
                rt,
                plan,
                data,
                ev,
                state,
                send,
                stream,
                want_usage,
                want_continuous,
                deadline,
                watcher,
            )
        finally:
            watcher.stop()

    async def _attempts(
        self,
        rt: Any,
        plan: list[PlannedTarget],
        data: dict[str, Any],
        ev: UsageEvent,
        state: _RequestState,
        send: Send,
        stream: bool,
        want_usage: bool,
        want_continuous: bool,
        deadline: float,
        watcher: _DisconnectWatcher,
    ) -> None:
        last_error: ProxyError | None = None
        path = _UPSTREAM_PATH[ev.endpoint]
        n = len(plan)
        for i, target in enumerate(plan):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                last_error = ProxyError(
                    504,
                    f"No backend answered within the request deadline ({ev.alias}).",
                    code="timeout",
                    outcome="error",
                )
                break
            backend = rt.backends[target.backend]
            vllm = rt.engine_kind(target.backend) == "vllm"
            upstream_body = _upstream_body(data, target.model, stream, vllm)
            attempt = Attempt(target.backend, target.model)
            ev.attempts.append(attempt)
            ev.backend, ev.model = target.backend, target.model
            sem = rt.semaphores[target.backend]
            t_attempt = time.perf_counter()
            await sem.acquire()
            rt.inflight[target.backend] += 1
            share: GpuShare | None = rt.meter.begin(target.backend)
            outcome: str | None = None
            try:
                outcome = await self._one_attempt(
                    rt,
                    backend,
                    path,
                    upstream_body,
                    target,
                    ev,
                    state,
                    send,
                    stream,
                    want_usage,
                    want_continuous,
                    deadline,
                    watcher,
                    share,
                    attempt,
                    last=(i == n - 1),
                )
            except _Failover as fo:
                last_error = fo.error
                attempt.reason = fo.reason
                rt.metrics.failover(
                    ev.alias,
                    target.backend,
                    plan[i + 1].backend if i + 1 < n else "none",
                    fo.reason,
                )
                rt.on_failure(target.backend, fo.reason)
                continue
            finally:
                attempt.duration_s = time.perf_counter() - t_attempt
                if share is not None:
                    ev.gpu_seconds += share.end()
                rt.inflight[target.backend] -= 1
                sem.release()
            if outcome is not None:
                rt.on_success(target.backend)
                return
        if last_error is None:
            last_error = ProxyError(
                503,
                f"No backend available for model '{ev.alias}'.",
                code="no_backend_available",
                outcome="error",
            )
        last_error.outcome = "error"
        raise last_error

    async def _one_attempt(
        self,
        rt: Any,
        backend: Any,
        path: str,
        body: bytes,
        target: PlannedTarget,
        ev: UsageEvent,
        state: _RequestState,
        send: Send,
        stream: bool,
        want_usage: bool,
        want_continuous: bool,
        deadline: float,
        watcher: _DisconnectWatcher,
        share: GpuShare | None,
        attempt: Attempt,
        last: bool,
    ) -> str:
        t_up = time.perf_counter()
        remaining = max(0.001, deadline - time.monotonic())
        try:
            upstream: UpstreamResponse = await watcher.run(
                asyncio.wait_for(backend.send(path, body, stream), remaining)
            )
        except UpstreamFailure as exc:
            state.upstream_s += time.perf_counter() - t_up
            raise _Failover(
                exc.reason,
                ProxyError(
                    503 if exc.reason == "connect_error" else 504,
                    f"Backend '{target.backend}' is unavailable ({exc.reason}).",
                    code="backend_unavailable",
                    outcome="error",
                ),
            ) from None
        except TimeoutError:
            state.upstream_s += time.perf_counter() - t_up
            raise _Failover(
                "timeout",
                ProxyError(
                    504,
                    f"Backend '{target.backend}' did not answer before the request deadline.",
                    code="timeout",
                    outcome="error",
                ),
            ) from None
        attempt.status = upstream.status
        if upstream.status >= 400:
            try:
                raw = await watcher.run(upstream.read())
            except ClientGone:
                upstream.close()
                raise
            except Exception:
                raw = b""
            state.upstream_s += time.perf_counter() - t_up
            err_body, code = normalize_upstream_error(upstream.status, raw, target.backend)
            if upstream.status in (401, 403) and not target.self_hosted:
                # Our credentials for the upstream were refused: the client can do nothing
                # about it, and the upstream's text may quote part of the key.
                reason = "auth"
                err = ProxyError(
                    502,
                    f"Backend '{target.backend}' refused the proxy's "
                    f"credentials (HTTP {upstream.status}).",
                    code="upstream_auth_error",
                    outcome="error",
                )
                raise _Failover(reason, err)
            reason = failover_reason(upstream.status, code, raw)
            err = _UpstreamError(upstream.status, err_body, upstream.headers)
            if reason is not None and not last:
                raise _Failover(reason, err)
            if reason is not None:
                rt.on_failure(target.backend, reason)
            ev.status = upstream.status
            ev.outcome = "error"
            state.response_started = True
            await _send_raw(
                send,
                upstream.status,
                err_body,
                [(b"x-hybridgate-backend", target.backend.encode()), *upstream.headers],
            )
            return "error"
        if stream:
            return await self._relay_stream(
                rt,
                upstream,
                target,
                ev,
                state,
                send,
                want_usage,
                want_continuous,
                watcher,
                share,
                t_up,
            )
        try:
            raw = await watcher.run(upstream.read())
        except ClientGone:
            upstream.close()
            raise
        except Exception as exc:
            state.upstream_s += time.perf_counter() - t_up
            raise _Failover(
                "connect_error",
                ProxyError(
                    502,
                    f"Backend '{target.backend}' broke off its answer ({type(exc).__name__}).",
                    code="backend_unavailable",
                    outcome="error",
                ),
            ) from None
        t_first = time.perf_counter()
        state.upstream_s += t_first - t_up
        ev.ttft_s = t_first - state.t0
        if share is not None:
            share.first_token()
        _usage_from_body(raw, ev)
        if ev.prompt_tokens == 0 and ev.completion_tokens == 0:
            _estimate_usage(ev, state, None, raw)
        ev.status = 200
        state.response_started = True
        await _send_raw(
            send, 200, raw, [(b"x-hybridgate-backend", target.backend.encode()), *upstream.headers]
        )
        return "success"

    async def _relay_stream(
        self,
        rt: Any,
        upstream: UpstreamResponse,
        target: PlannedTarget,
        ev: UsageEvent,
        state: _RequestState,
        send: Send,
        want_usage: bool,
        want_continuous: bool,
        watcher: _DisconnectWatcher,
        share: GpuShare | None,
        t_up: float,
    ) -> str:
        from proxy.sse import UsageTap

        tap = UsageTap(strip_usage_chunk=not want_usage, strip_inline_usage=not want_continuous)
        chunks = upstream.chunks()
        first = b""
        try:
            while not first:
                data = await watcher.run(chunks.__anext__())
                first = tap.feed(data)
        except StopAsyncIteration:
            first = tap.flush()
            if not first:
                state.upstream_s += time.perf_counter() - t_up
                raise _Failover(
                    "empty_stream",
                    ProxyError(
                        502,
                        f"Backend '{target.backend}' closed the stream before any data.",
                        code="backend_unavailable",
                        outcome="error",
                    ),
                ) from None
        except ClientGone:
            upstream.close()
            raise
        except Exception as exc:
            state.upstream_s += time.perf_counter() - t_up
            upstream.close()
            raise _Failover(
                "connect_error",
                ProxyError(
                    502,
                    f"Backend '{target.backend}' broke off the stream ({type(exc).__name__}).",
                    code="backend_unavailable",
                    outcome="error",
                ),
            ) from None
        t_first = time.perf_counter()
        state.upstream_s += t_first - t_up
        ev.ttft_s = t_first - state.t0
        if share is not None:
            share.first_token()
        ev.status = 200
        state.response_started = True
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    *_SSE_HEADERS,
                    (b"x-hybridgate-backend", target.backend.encode()),
                    *(h for h in upstream.headers if h[0] != b"content-type"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": first, "more_body": True})
        cut = False
        try:
            while True:
                try:
                    data = await watcher.run(chunks.__anext__())
                except StopAsyncIteration:
                    break
                out = tap.feed(data)
                if out:
                    await send({"type": "http.response.body", "body": out, "more_body": True})
        except ClientGone:
            upstream.close()
            self._stream_usage(ev, state, tap)
            raise
        except Exception:
            cut = True
            upstream.close()
        rest = tap.flush()
        if rest:
            await send({"type": "http.response.body", "body": rest, "more_body": True})
        self._stream_usage(ev, state, tap)
        if not tap.saw_done and not tap.saw_error:
            cut = True
        if cut:
            ev.outcome = "cut"
            msg = (
                f"The backend '{target.backend}' ended the stream before it was complete; "
                f"the answer is truncated."
            )
            err = b"data: " + error_body(msg, "server_error", None, "stream_interrupted") + b"\n\n"
            await send({"type": "http.response.body", "body": err, "more_body": True})
            rt.on_failure(target.backend, "cut")
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return "cut" if cut else "success"

    @staticmethod
    def _stream_usage(ev: UsageEvent, state: _RequestState, tap: Any) -> None:
        usage = tap.usage()
        if usage is not None:
            _apply_usage(usage, ev)
            if tap.saw_done or ev.completion_tokens >= tap.content_events - 1:
                return
        _estimate_usage(ev, state, tap, None)


class _RequestState:
    __slots__ = ("data", "response_started", "t0", "upstream_s")

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.data: dict[str, Any] | None = None
        self.upstream_s = 0.0
        self.response_started = False


class _Failover(Exception):
    def __init__(self, reason: str, error: ProxyError) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error


class _UpstreamError(ProxyError):
    """An upstream error passed back as is (already OpenAI-shaped)."""

    def __init__(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        super().__init__(
            status, "", headers=[h for h in headers if h[0] != b"content-type"], outcome="error"
        )
        self._body = body

    def body(self) -> bytes:
        return self._body


class _DisconnectWatcher:
    """Notices a client disconnect while the proxy waits on the upstream.

    The body has been read, so the next `receive()` only returns on disconnect. The
    watcher task is created lazily, on the first wait, and each wait races it.
    """

    __slots__ = ("_receive", "_task")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._task: asyncio.Task[Any] | None = None

    async def run(self, aw: Awaitable[Any]) -> Any:
        if self._task is None:
            self._task = asyncio.ensure_future(self._receive())
        if self._task.done():
            _close_awaitable(aw)
            raise ClientGone()
        work = asyncio.ensure_future(aw)
        done, _ = await asyncio.wait((work, self._task), return_when=asyncio.FIRST_COMPLETED)
        if work in done:
            return work.result()
        work.cancel()
        with contextlib.suppress(BaseException):
            await work
        raise ClientGone()

    def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()


def _close_awaitable(aw: Awaitable[Any]) -> None:
    close = getattr(aw, "close", None)
    if close is not None:
        close()


async def _send_raw(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    hdrs = [h for h in headers if h[0] != b"content-type"]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [_JSON, (b"content-length", str(len(body)).encode()), *hdrs],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _upstream_body(data: dict[str, Any], model: str, stream: bool, vllm: bool) -> bytes:
    """The client's body with the upstream model, and usage reporting turned on for streams."""
    out = dict(data)
    out["model"] = model
    if stream:
        so = dict(data.get("stream_options") or {})
        so["include_usage"] = True
        if vllm:
            so["continuous_usage_stats"] = True
        out["stream_options"] = so
    return orjson.dumps(out)


def _apply_usage(usage: dict[str, Any], ev: UsageEvent) -> None:
    p = usage.get("prompt_tokens")
    c = usage.get("completion_tokens")
    ev.prompt_tokens = p if isinstance(p, int) and p >= 0 else 0
    ev.completion_tokens = c if isinstance(c, int) and c >= 0 else 0
    details = usage.get("prompt_tokens_details")
    if isinstance(details, dict):
        cached = details.get("cached_tokens")
        if isinstance(cached, int) and cached >= 0:
            ev.cached_tokens = min(cached, ev.prompt_tokens)


def _usage_from_body(raw: bytes, ev: UsageEvent) -> None:
    i = raw.rfind(b'"usage"')
    if i < 0:
        return
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return
    usage = data.get("usage") if isinstance(data, dict) else None
    if isinstance(usage, dict):
        _apply_usage(usage, ev)


def _estimate_usage(ev: UsageEvent, state: _RequestState, tap: Any, raw: bytes | None) -> None:
    """No usage from the upstream: count what we can and flag the event `estimated`.

    Prompt tokens come from the request (tiktoken, loaded lazily); completion tokens
    from the content events relayed (one token per event, as vLLM streams them) or
    the text of a non-streamed answer.
    """
    from proxy.metering.tokens import count_text_tokens

    ev.estimated = True
    if ev.prompt_tokens == 0 and state.data is not None:
        ev.prompt_tokens = estimate_prompt_tokens(state.data)
    if tap is not None:
        ev.completion_tokens = max(ev.completion_tokens, tap.content_events)
    elif raw:
        try:
            data = orjson.loads(raw)
            texts = [
                c.get("message", {}).get("content") or c.get("text") or ""
                for c in data.get("choices", [])
                if isinstance(c, dict)
            ]
            ev.completion_tokens = sum(count_text_tokens(t) for t in texts if isinstance(t, str))
        except Exception:
            pass
