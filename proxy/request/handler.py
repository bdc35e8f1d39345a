"""The request path for the OpenAI routes (docs/architecture.md, "The request path").

auth → parse the minimum → router.plan → for each attempt: backend.send → relay
(stream or not) capturing usage → meter.finish(UsageEvent), exactly once.

Not FastAPI routes: the proxy forwards bodies it does not need to validate, so it parses
only model/stream/stream_options with orjson and keeps per-request work to a few dict
operations. It speaks to the HTTP server through an `Exchange` (proxy/server/exchange.py): plain
ASGI anywhere, or straight from our own uvicorn protocol (proxy/server/fastpath.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from proxy.backends.base import UpstreamFailure, UpstreamRefused, UpstreamResponse
from proxy.dialects import Dialect, TranslationError
from proxy.dialects.anthropic_request import anthropic_to_openai_chat
from proxy.dialects.anthropic_response import openai_usage
from proxy.dialects.responses_response import usage_from_responses
from proxy.metering.events import Attempt, UsageEvent
from proxy.metering.gpu import Share
from proxy.metering.tokens import cheap_prompt_estimate, estimate_prompt_tokens
from proxy.metering.usage import apply_usage, estimate_usage, stream_usage, usage_from_body
from proxy.request.auth import Principal
from proxy.request.concurrency import Slots, saturated_error
from proxy.request.dialect import (
    ROUTE_DIALECT,
    AnthropicTap,
    PreformattedError,
    ResponsesTap,
    Translation,
    anthropic_body_usage,
    anthropic_proxy_error,
    to_anthropic_error,
    translation_for,
    translation_refused,
)
from proxy.request.errors import ProxyError, error_body, normalize_upstream_error
from proxy.request.failover import failover_reason
from proxy.request.internal import InternalCall
from proxy.request.responses import HoldEnd, Turn, reasoning_tokens
from proxy.request.sse import UsageTap
from proxy.request.stored import serve_stored
from proxy.request.timeouts import Deadline, deadline_in
from proxy.routing.router import Plan, PlannedTarget, RouteRequest
from proxy.server.exchange import (
    ClientGone,
    Exchange,
    Headers,
    check_declared_length,
    decode_body,
)

if TYPE_CHECKING:  # annotations only: the runtime imports the world
    from proxy.backends.base import Backend
    from proxy.runtime import Runtime

log = logging.getLogger("hybridgate.request")

ENDPOINTS = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
    "/v1/messages": "messages",  # Anthropic's Messages API (docs/dialects.md)
    "/v1/messages/count_tokens": "count_tokens",
    "/v1/responses": "responses",  # OpenAI's Responses API (proxy/request/responses.py)
}
# Bare paths (base_url without /v1) reach the same handlers, as with OpenAI's own SDKs.
FAST_PATHS = {**{p: p for p in ENDPOINTS}, **{p[3:]: p for p in ENDPOINTS}}
_UPSTREAM_PATH = {
    "chat": "/chat/completions",
    "completions": "/completions",
    "embeddings": "/embeddings",
    "messages": "/messages",
    "count_tokens": "/messages/count_tokens",
    "responses": "/responses",
}
_REQUIRED_FIELD = {
    "chat": "messages",
    "completions": "prompt",
    "embeddings": "input",
    "messages": "messages",
    "count_tokens": "messages",
    "responses": "input",
}
_ANTHROPIC_HEADERS = (b"anthropic-version", b"anthropic-beta")
_LIST_FIELD = frozenset({"chat", "messages", "count_tokens"})  # a non-empty array
_JSON = (b"content-type", b"application/json")
_BACKEND = b"x-hybridgate-backend"
_ATTEMPTS = b"x-hybridgate-attempts"  # 2 or more: the request failed over
_REQUEST_ID = b"x-request-id"
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_NO_DEADLINE = contextlib.nullcontext()
_ERROR_KEY = b'"error"'  # in a streamed event: the upstream's error, to redact
_LAST_EVENT_WAIT_S = 1.0  # for the upstream's end after the answer's last event
_RESPONSES = Dialect.OPENAI_RESPONSES  # (a global: cheaper than the enum's attribute)
_ids = itertools.count(1)
_ID_PREFIX = f"hg-{os.getpid():x}-"


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
    if endpoint in _LIST_FIELD and (not isinstance(value, list) or not value):
        raise ProxyError(
            400, "'messages' must be a non-empty array.", param="messages", code="invalid_type"
        )
    if endpoint == "embeddings" or endpoint == "count_tokens":  # never streamed
        return data
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
    """Serves the OpenAI routes against whatever runtime is current when a request arrives."""

    def __init__(self, runtime_ref: Callable[[], Runtime]) -> None:
        self._rt = runtime_ref

    async def serve(self, exchange: Exchange, path: str, call: InternalCall | None = None) -> None:
        rt = self._rt()
        endpoint = ENDPOINTS.get(path)
        if endpoint is None:  # "METHOD /v1/responses/{id}[/...]": a stored response
            await serve_stored(rt, exchange, path)
            return
        ev = UsageEvent(
            request_id=_ID_PREFIX + str(next(_ids)),
            started_at=time.time(),
            endpoint=endpoint,
        )
        req = _Request(rt, ev, exchange, time.perf_counter())
        if call is not None:  # a request of the proxy's own (proxy/request/internal.py)
            ev.kind = call.kind
            req.internal = call
        rt.requests_inflight += 1
        try:
            await req.serve()
        except ClientGone:
            ev.outcome = "client_disconnect"
            ev.status = 499
        except ProxyError as err:
            ev.outcome = err.outcome
            ev.status = err.status
            if not req.response_started:
                headers = [_JSON, *err.headers]
                if all(h[0] != _REQUEST_ID for h in err.headers):  # an upstream error has one
                    headers.append((_REQUEST_ID, ev.request_id.encode()))
                body = err.body()
                if req.anthropic and not isinstance(err, _UpstreamError | PreformattedError):
                    body = anthropic_proxy_error(err)  # the route's own error shape
                with contextlib.suppress(Exception):
                    await exchange.respond(err.status, headers, body)
        except Exception:
            log.exception("internal error serving %s", ev.request_id)
            ev.outcome = "error"
            ev.status = 500
            if not req.response_started:
                internal = ProxyError(500, "Internal proxy error.", type_="server_error")
                headers = [_JSON, (_REQUEST_ID, ev.request_id.encode())]
                body = anthropic_proxy_error(internal) if req.anthropic else internal.body()
                with contextlib.suppress(Exception):
                    await exchange.respond(500, headers, body)
        finally:
            if req.lease:
                rt.caps.release(req.lease)
            rt.requests_inflight -= 1
            ev.duration_s = time.perf_counter() - req.t0
            ev.overhead_s = max(0.0, ev.duration_s - req.upstream_s)
            if call is None:
                rt.meter.finish(ev)
            else:
                call.finish(ev)


class _Request:
    """One request in flight: what it asked for, how far it got, and its UsageEvent."""

    __slots__ = (
        "_chunks",
        "_error_body",
        "anthropic",
        "data",
        "deadline",
        "dialect",
        "ev",
        "exchange",
        "extra",
        "internal",
        "lease",
        "response_started",
        "rt",
        "stream",
        "stream_deadline",
        "t0",
        "turn",
        "upstream",
        "upstream_s",
        "want_continuous",
        "want_usage",
        "xl",
    )

    def __init__(self, rt: Runtime, ev: UsageEvent, exchange: Exchange, t0: float) -> None:
        self.rt = rt
        self.ev = ev
        self.exchange = exchange
        self.t0 = t0
        self.upstream_s = 0.0
        self.response_started = False
        self.data: dict[str, Any] | None = None
        self.upstream: UpstreamResponse | None = None
        self.stream = False
        self.want_usage = False
        self.want_continuous = False
        self.deadline = 0.0
        self.stream_deadline = 0.0
        self.lease: tuple[tuple[str, int, str], ...] = ()  # caps counted, released once
        self.dialect: Dialect = ROUTE_DIALECT[ev.endpoint]
        self.anthropic = self.dialect is Dialect.ANTHROPIC_MESSAGES  # Anthropic's error shape
        self.xl: Translation | None = None  # the current attempt's translation, if any
        self.extra = b""  # the client's anthropic-* header lines, for Anthropic targets
        self.turn: Turn | None = None  # /v1/responses: the conversation this turn continues
        self.internal: InternalCall | None = None

    async def serve(self) -> None:
        rt, ev, exchange = self.rt, self.ev, self.exchange
        headers = dict(exchange.headers)
        internal = self.internal
        principal: Principal = rt.auth.client(headers) if internal is None else internal.principal
        ev.tenant = rt.tenant_label(principal.tenant)
        ev.key_name = principal.key_name
        limit = rt.config.limits.max_body_bytes
        check_declared_length(headers.get(b"content-length"), limit)  # before it is invited
        body = await exchange.body(limit)
        encoding = headers.get(b"content-encoding")
        if encoding is not None:
            body = decode_body(body, encoding, limit)
        data = self.data = parse_request(body, ev.endpoint)
        if self.dialect is _RESPONSES:  # its conversation: one state lookup
            self.turn = Turn(data, principal.tenant)
            await self.turn.load(rt)
        if self.anthropic:
            for name in _ANTHROPIC_HEADERS:
                value = headers.get(name)
                if value is not None and b"\r" not in value and b"\n" not in value:
                    self.extra += name + b": " + value + b"\r\n"
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
        if principal.caps:  # the key's or tenant's concurrency cap: 429 past it
            rt.caps.take(principal.caps)
            self.lease = principal.caps  # released by Handler.serve, whatever happens
        # Budgets and rate limits (local state, O(1)): 429, or self-hosted targets only.
        only = "self_hosted" if rt.state.admit(ev.tenant, ev.key_name, alias_name) else None
        if only is None and ev.tenant in rt.budgeted_tenants:
            only = "priced"  # never an API model whose spend the budget cannot count
        if internal is not None and internal.only is not None and only != "self_hosted":
            only = internal.only
        self.stream = ev.stream = bool(data.get("stream")) and ev.endpoint != "embeddings"
        route = RouteRequest(
            alias=alias_name,
            tenant=principal.tenant,
            headers=headers,
            body=data,
            est_prompt_tokens=cheap_prompt_estimate(len(body)),
            only=only,
        )
        plan = rt.router.plan(route)
        ev.alias = plan.alias  # a rule's route_to may have chosen another alias
        client_so = (data.get("stream_options") or {}) if self.stream else {}
        self.want_usage = bool(client_so.get("include_usage"))
        self.want_continuous = bool(client_so.get("continuous_usage_stats"))
        loop = exchange.task.get_loop()  # (get_running_loop() costs a getpid() on 3.11)
        now = loop.time()
        self.deadline = now + (plan.spec.timeout_s or rt.config.limits.request_timeout_s)
        if self.stream:  # the whole relay ends by this; its first event by both
            stream_s = plan.spec.stream_timeout_s or rt.config.limits.stream_timeout_s
            self.stream_deadline = now + stream_s
            if self.stream_deadline < self.deadline:
                self.deadline = self.stream_deadline
        watcher = exchange.watch()
        try:
            if ev.endpoint == "count_tokens":
                await self.count_tokens(plan)
            else:
                await self.attempts(plan)
        except asyncio.CancelledError:
            if not watcher.gone:
                raise
            exchange.task.uncancel()
            if self.upstream is not None:
                self.upstream.close()
            raise ClientGone() from None
        finally:
            watcher.stop()

    async def attempts(self, plan: Plan) -> None:
        rt, ev = self.rt, self.ev
        data = self.data
        assert data is not None
        last_error: ProxyError | None = None
        saturated = False  # the last answer so far: no slot free (503 if it stays so)
        native_path = _UPSTREAM_PATH[ev.endpoint]
        n = len(plan)
        for i, target in enumerate(plan):
            # Before admit(): a body that cannot be forwarded must not take a probe slot.
            speaks = rt.dialects[target.backend]
            if self.dialect in speaks:  # the client's dialect: bytes through, as they are
                self.xl = None
                path = native_path
                if self.anthropic:
                    body = _anthropic_body(data, target.model)
                elif self.turn is not None:  # /v1/responses: the model and the history
                    body = _anthropic_body(self.turn.data_for(target.backend), target.model)
                else:
                    body = _upstream_body(
                        data, target.model, self.stream, rt.engine_kind(target.backend) == "vllm"
                    )
            else:
                xl = self.xl = translation_for(self.dialect, speaks)
                if xl is not None and self.turn is not None:  # this request's id and history
                    xl = self.xl = self.turn.bind(xl)
                if xl is None:
                    last_error = _err(
                        400,
                        f"Backend '{target.backend}' cannot serve this endpoint "
                        f"(it speaks {', '.join(sorted(speaks))}).",
                        "unsupported_endpoint",
                    )
                    ev.attempts.append(Attempt(target.backend, target.model, reason="dialect"))
                    continue
                path = xl.path
                try:
                    body = xl.request(
                        data, target.model, rt.config.backends[target.backend], target.target
                    )
                except TranslationError as exc:  # a field it cannot express: maybe the next can
                    ev.attempts.append(Attempt(target.backend, target.model, reason="dialect"))
                    ev.backend, ev.model = target.backend, target.model
                    last_error = translation_refused(exc, self.anthropic)
                    last_error.headers = self._headers([], target.backend)  # names who refused
                    continue
            slots = rt.slots[target.backend]
            # A full backend: the next target if there is one, else a wait for a slot
            # within the request's deadline (never past it: docs/security.md).
            if not slots.try_take() and (i < n - 1 or not await self._wait_slot(slots)):
                saturated = True
                ev.attempts.append(Attempt(target.backend, target.model, reason="saturated"))
                ev.backend, ev.model = target.backend, target.model
                nxt = plan[i + 1].backend if i + 1 < n else "none"
                rt.metrics.failover(ev.alias, target.backend, nxt, "saturated")
                continue  # not the backend's failure: its breaker is not told
            if not rt.admit(target.backend):
                slots.release()
                continue  # its breaker opened, or its half-open probe is out, since planning
            saturated = False
            backend = rt.backends[target.backend]
            attempt = Attempt(target.backend, target.model)
            ev.attempts.append(attempt)
            ev.backend, ev.model = target.backend, target.model
            t_attempt = time.perf_counter()
            inflight = rt.inflight if self.internal is None else rt.batch_inflight
            inflight[target.backend] += 1
            share: Share | None = rt.meter.begin(target.backend, attempt)
            try:
                await self.one_attempt(backend, path, body, target, share, attempt, i == n - 1)
            except _Failover as fo:
                last_error = fo.error
                attempt.reason = fo.reason
                if fo.reason == "context_length" and not plan.larger_window_after(i):
                    break  # no later target has a larger window: the 400 is the answer
                nxt = plan[i + 1].backend if i + 1 < n else "none"
                rt.metrics.failover(ev.alias, target.backend, nxt, fo.reason)
                rt.on_failure(target.backend, fo.reason)
                continue
            finally:
                attempt.duration_s = time.perf_counter() - t_attempt
                if share is not None:
                    attempt.gpu_seconds = share.end()
                    ev.gpu_seconds += attempt.gpu_seconds
                inflight[target.backend] -= 1
                slots.release()
            if attempt.reason is None:  # the backend answered, and not with a failure
                ttft = None if ev.ttft_s is None else self.t0 + ev.ttft_s - t_attempt
                rt.on_success(target.backend, ttft)
            return
        if saturated:
            last_error = saturated_error(ev.alias, [(_ATTEMPTS, str(len(ev.attempts)).encode())])
        elif last_error is None:
            last_error = ProxyError(
                503,
                f"No backend available for model '{ev.alias}'.",
                code="no_backend_available",
            )
        last_error.outcome = "error"
        raise last_error

    async def count_tokens(self, plan: Plan) -> None:
        """POST /v1/messages/count_tokens: the first Anthropic-speaking target of the plan
        answers it natively; with none (or none answering), the count is estimated here
        (tiktoken, as for unmetered answers) and the answer says so in
        `x-hybridgate-token-count: estimated`. Counting spends no tokens: none are metered."""
        rt, ev, data = self.rt, self.ev, self.data
        assert data is not None
        for target in plan:
            if Dialect.ANTHROPIC_MESSAGES not in rt.dialects[target.backend]:
                continue
            backend = rt.backends[target.backend]
            body = _anthropic_body(data, target.model)
            attempt = Attempt(target.backend, target.model)
            ev.attempts.append(attempt)
            ev.backend, ev.model = target.backend, target.model
            path = _UPSTREAM_PATH["count_tokens"]
            try:
                async with Deadline(self.deadline, self.exchange.task):
                    if self.extra:
                        upstream = await backend.send(path, body, False, self.extra)
                    else:
                        upstream = await backend.send(path, body, False)
                    raw = await upstream.read()
            except (UpstreamFailure, TimeoutError, OSError, ValueError, RuntimeError) as exc:
                attempt.reason = getattr(exc, "reason", "connect_error")
                continue
            attempt.status = upstream.status
            if upstream.status == 200 or 400 <= upstream.status < 404:  # its answer stands
                if upstream.status != 200:
                    redact = rt.redact
                    shown, _ = normalize_upstream_error(
                        upstream.status, raw, target.backend, redact.bytes if redact else None
                    )
                    raw = to_anthropic_error(upstream.status, shown)
                    ev.outcome = "error"
                ev.status = upstream.status
                self.response_started = True
                await self._respond(upstream.status, raw, upstream.headers, target.backend)
                return
            attempt.reason = str(upstream.status)  # no such route there, or busy: estimate
        try:
            counted = anthropic_to_openai_chat({**data, "max_tokens": 1})
        except TranslationError:
            counted = data
        tokens = estimate_prompt_tokens(counted)
        ev.status = 200
        self.response_started = True
        headers = [
            _JSON,
            (b"x-hybridgate-token-count", b"estimated"),
            (_REQUEST_ID, ev.request_id.encode()),
        ]
        await self.exchange.respond(200, headers, orjson.dumps({"input_tokens": tokens}))

    async def _wait_slot(self, slots: Slots) -> bool:
        """Wait for a slot of the plan's last target until the request's deadline: True
        once one is taken, False when the deadline came first."""
        try:
            async with Deadline(self.deadline, self.exchange.task):
                await slots.take()
        except TimeoutError:
            return False
        return True

    async def one_attempt(
        self,
        backend: Backend,
        path: str,
        body: bytes,
        target: PlannedTarget,
        share: Share | None,
        attempt: Attempt,
        last: bool,
    ) -> None:
        """One try at one backend. Raises _Failover while nothing has reached the client."""
        ev = self.ev
        t_up = time.perf_counter()
        name = target.backend
        try:
            async with Deadline(self.deadline, self.exchange.task):
                if self.extra and self.xl is None:  # an Anthropic client to an Anthropic target
                    upstream = await backend.send(path, body, self.stream, self.extra)
                else:
                    upstream = await backend.send(path, body, self.stream)
                self.upstream = upstream
                attempt.status = upstream.status
                if upstream.status >= 400:
                    raw = await _read_or_empty(upstream)
                elif self.stream:
                    tap, first = await self._first_events(upstream, name)
                else:
                    raw = await upstream.read()
        except UpstreamFailure as exc:
            self.upstream_s += time.perf_counter() - t_up
            status = 503 if exc.reason == "connect_error" else 502
            msg = f"Backend '{name}' is unavailable ({exc.reason})."
            if exc.detail and isinstance(exc.__cause__, UpstreamRefused):
                msg = f"Backend '{name}' sent an answer the proxy refuses: {exc.detail}."
            raise _Failover(exc.reason, _err(status, msg, "backend_unavailable")) from None
        except TimeoutError:
            self.upstream_s += time.perf_counter() - t_up
            if self.upstream is not None:
                self.upstream.close()
            raise _Failover(
                "timeout",
                _err(
                    504, f"Backend '{name}' did not answer before the request deadline.", "timeout"
                ),
            ) from None
        except _Failover:
            self.upstream_s += time.perf_counter() - t_up
            raise
        except (OSError, ValueError, RuntimeError) as exc:  # the body broke off
            self.upstream_s += time.perf_counter() - t_up
            if self.upstream is not None:
                self.upstream.close()
            if isinstance(exc, UpstreamRefused):  # over a cap, undecodable: says which
                msg = f"Backend '{name}' sent an answer the proxy refuses: {exc}."
                raise _Failover("protocol_error", _err(502, msg, "backend_unavailable")) from None
            raise _Failover(
                "connect_error",
                _err(
                    502,
                    f"Backend '{name}' broke off its answer ({type(exc).__name__}).",
                    "backend_unavailable",
                ),
            ) from None
        t_first = time.perf_counter()
        self.upstream_s += t_first - t_up
        if upstream.status >= 400:
            self._upstream_error(upstream, raw, target, last)
            ev.status = upstream.status
            ev.outcome = "error"
            self.response_started = True
            await self._respond(upstream.status, self._error_body, upstream.headers, name)
            return
        ev.ttft_s = t_first - self.t0
        if share is not None:
            share.first_token()
        ev.status = 200
        self.response_started = True
        if self.stream:
            await self._relay_rest(upstream, tap, first, target)
            return
        xl = self.xl
        if xl is not None:  # the answer in the client's dialect, its usage for the meter
            try:
                raw, usage = xl.answer(raw, self.rt.config.backends[name].thinking)
            except (TranslationError, ValueError) as exc:
                msg = f"Backend '{name}' sent an answer the proxy cannot translate: {exc}"
                self.response_started = False  # nothing went out: the error is the answer
                err = translation_refused(
                    TranslationError(msg, status=502, code="bad_upstream_answer"), self.anthropic
                )
                err.headers = self._headers(upstream.headers, name)
                raise err from None
            apply_usage(openai_usage(usage), ev)
            if ev.prompt_tokens == 0 and ev.completion_tokens == 0:  # the upstream told none
                estimate_usage(ev, self.data, None, None)
            if self.turn is not None:
                raw = await self._keep_answer(raw, name, False)
            await self._respond(200, raw, upstream.headers, name)
            return
        if self.turn is not None:  # a native Responses answer: its usage, and kept
            raw = await self._keep_answer(raw, name, True)
            await self._respond(200, raw, upstream.headers, name)
            return
        try:
            await self._respond(200, raw, upstream.headers, name)
        finally:  # the answer first; its usage is counted whether or not it reached the client
            if self.anthropic:
                usage_dict = anthropic_body_usage(raw)
                if usage_dict is not None:
                    apply_usage(usage_dict, ev)
            else:
                usage_from_body(raw, ev)
            if ev.prompt_tokens == 0 and ev.completion_tokens == 0:
                estimate_usage(ev, self.data, None, raw)

    async def _keep_answer(self, raw: bytes, backend: str, native: bool) -> bytes:
        """A /v1/responses JSON answer: its usage (native; a translation's is counted
        already), and the response stored before the client can ask for it."""
        turn = self.turn
        assert turn is not None
        xl = self.xl
        if not native:
            response = getattr(xl, "response", None)
            if isinstance(response, dict):
                self._reasoning(response)
                await turn.keep(self.rt, response, backend, False)
            return raw
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            obj = None
        if not isinstance(obj, dict):  # passed through as it is, as chat's answers are
            estimate_usage(self.ev, self.data, None, None)
            return raw
        apply_usage(openai_usage(usage_from_responses(obj.get("usage"))), self.ev)
        if self.ev.prompt_tokens == 0 and self.ev.completion_tokens == 0:
            estimate_usage(self.ev, self.data, None, None)
        self._reasoning(obj)
        await turn.keep(self.rt, obj, backend, True)
        return raw

    def _reasoning(self, response: dict[str, Any]) -> None:
        """A Responses answer's reasoning tokens into the event (among its output ones)."""
        ev = self.ev
        ev.reasoning_tokens = min(reasoning_tokens(response), ev.completion_tokens)

    async def _respond(self, status: int, body: bytes, upstream: Headers, backend: str) -> None:
        """A JSON answer with the upstream's passed-through headers and ours."""
        await self.exchange.respond(status, [_JSON, *self._headers(upstream, backend)], body)

    def _headers(self, upstream: Headers, backend: str) -> Headers:
        """Ours (who answered, after how many attempts) and the upstream's passed through;
        the content type is the caller's. `x-request-id` is the upstream's, else ours."""
        out = [(_BACKEND, backend.encode()), (_ATTEMPTS, str(len(self.ev.attempts)).encode())]
        rid = None
        for h in upstream:
            if h[0] == b"content-type":
                continue
            if h[0] == _REQUEST_ID:
                rid = h[1]
            out.append(h)
        if rid is None:  # the id the request log has: the SDK's `_request_id`
            out.append((_REQUEST_ID, self.ev.request_id.encode()))
        else:  # the upstream's, and ours beside it in the request log
            self.ev.upstream_request_id = rid.decode("latin-1")
        return out

    def _upstream_error(
        self, upstream: UpstreamResponse, raw: bytes, target: PlannedTarget, last: bool
    ) -> None:
        """Decide about an upstream 4xx/5xx: fail over (raise) or pass it back (return)."""
        status = upstream.status
        redact = self.rt.redact
        shown = raw
        xl = self.xl
        if xl is not None and not xl.anthropic_client:  # Anthropic's shape, to OpenAI's
            if redact:  # before the translation may cut a non-JSON body short
                shown = redact.bytes(shown)
            shown = xl.error(status, shown)
        err_body, code = normalize_upstream_error(
            status,
            shown,
            target.backend,
            redact.bytes if redact else None,
            _REQUIRED_FIELD[self.ev.endpoint],
        )
        if self.anthropic:  # the route's shape, whatever the upstream's
            err_body = to_anthropic_error(status, err_body)
        if status in (401, 403):
            # Our credentials for the upstream were refused: the client can do nothing
            # about it, and the upstream's text may quote part of the key. Self-hosted
            # too (vLLM's --api-key): passed back, its 401 would blame the client's key.
            raise _Failover(
                "auth",
                _err(
                    502,
                    f"Backend '{target.backend}' refused the proxy's credentials (HTTP {status}).",
                    "upstream_auth_error",
                ),
            )
        reason = failover_reason(status, code, raw)
        if reason is not None and not last:
            # It may still be the answer (a context-length 400 with no larger window after
            # it): with our headers, like any answer a backend gave.
            headers = self._headers(upstream.headers, target.backend)
            raise _Failover(reason, _UpstreamError(status, err_body, headers))
        if reason is not None:
            self.ev.attempts[-1].reason = reason
            self.rt.on_failure(target.backend, reason)
        self._error_body = err_body

    async def _first_events(self, upstream: UpstreamResponse, name: str) -> tuple[Any, bytes]:
        """Read until the first complete SSE event: until then a failure can still fail over.
        The tap is a UsageTap, or one with its face for the other dialects (dialect.py)."""
        tap: Any
        if self.turn is not None:  # /v1/responses: native bytes, or a translation's events
            inner: Any
            if self.xl is not None:
                inner = self.xl.stream(True, self.rt.config.backends[name].thinking)
            else:
                inner = ResponsesTap(self.rt.config.limits.upstream_max_event_bytes)
            tap = HoldEnd(inner)
        elif self.xl is not None:
            tap = self.xl.stream(self.want_usage, self.rt.config.backends[name].thinking)
        elif self.anthropic:
            tap = AnthropicTap(self.rt.config.limits.upstream_max_event_bytes)
        else:
            tap = UsageTap(
                strip_usage_chunk=not self.want_usage,
                strip_inline_usage=not self.want_continuous,
                inline_expected=self.rt.engine_kind(name) == "vllm",  # asked (_upstream_body)
                max_event=self.rt.config.limits.upstream_max_event_bytes,
            )
        self._chunks = upstream.chunks()
        first = b""
        while not first:
            try:
                data = await self._chunks.__anext__()
            except StopAsyncIteration:
                first = tap.flush()
                if first:
                    break
                raise _Failover(
                    "empty_stream",
                    _err(
                        502,
                        f"Backend '{name}' closed the stream before any data.",
                        "backend_unavailable",
                    ),
                ) from None
            first = tap.feed(data)
        return tap, first

    async def _relay_rest(
        self, upstream: UpstreamResponse, tap: Any, first: bytes, target: PlannedTarget
    ) -> None:
        """Relay the stream after its first event. Past this point there is no failover:
        an upstream failure ends the stream with an error event, and usage so far is kept."""
        exchange, ev = self.exchange, self.ev
        await exchange.start_stream(
            200, [*_SSE_HEADERS, *self._headers(upstream.headers, target.backend)]
        )
        # A stream already whole in hand (a fast upstream) goes out in one write with its
        # end; otherwise the first event goes now, as soon as it is there.
        redact = self.rt.redact
        if redact and _ERROR_KEY in first:
            first = redact.bytes(first)
        held = first
        if not upstream.complete and not tap.saw_done:
            await exchange.send_chunk(first)
            held = b""
        cut = expired = False
        # The stream's total deadline; none needed for a stream already whole in hand.
        deadline = _NO_DEADLINE if held else Deadline(self.stream_deadline, exchange.task)
        try:
            async with deadline:
                if tap.saw_done:  # the whole answer came in the first read
                    await self._upstream_end(upstream)
                async for data in self._chunks:
                    out = tap.feed(data)
                    if out:
                        if _ERROR_KEY in out and redact:  # an error event may quote our key
                            out = redact.bytes(out)
                        if tap.saw_done:  # the answer's last event: see _upstream_end
                            held += out
                            await self._upstream_end(upstream)
                            break
                        await exchange.send_chunk(out)
        except asyncio.CancelledError:
            upstream.close()
            stream_usage(ev, self.data, tap)
            raise
        except Exception:
            upstream.close()
            if not tap.saw_done:  # past the answer's last event, its end no longer matters
                expired = isinstance(deadline, Deadline) and deadline.fired
                cut = True
        rest = tap.flush()
        if rest and _ERROR_KEY in rest and redact:
            rest = redact.bytes(rest)
        tail = held + rest
        stream_usage(ev, self.data, tap)
        if self.turn is not None and tap.response is not None:  # kept before the end is seen
            self._reasoning(tap.response)
            await self.turn.keep(self.rt, tap.response, target.backend, self.xl is None)
        if expired:  # ours, not the backend's failure: its breaker is not told
            ev.outcome = "cut"
            ev.attempts[-1].reason = "stream_timeout"
            msg = (
                f"The stream reached the proxy's time limit for a stream ({self._stream_limit()}) "
                f"and was ended; the answer is truncated."
            )
            tail += self._stream_error(msg, "timeout_error", "stream_timeout", 504, tap)
        elif cut or not (tap.saw_done or tap.saw_error):
            ev.outcome = "cut"
            msg = (
                f"The backend '{target.backend}' ended the stream before it was complete; "
                f"the answer is truncated."
            )
            tail += self._stream_error(msg, "server_error", "stream_interrupted", 502, tap)
            ev.attempts[-1].reason = "cut"
            self.rt.on_failure(target.backend, "cut")
        await exchange.end_stream(tail)

    async def _upstream_end(self, upstream: UpstreamResponse) -> None:
        """The answer's last event ([DONE], message_stop, ...) is held and goes out with the
        response's end, in one write: openai-python closes the connection as soon as it
        reads [DONE], and a close that came before the end would book a whole answer as a
        client disconnect. Meanwhile the upstream's end of the body is read (its connection
        goes back to the pool; anything more it sends is not relayed); an upstream that has
        not ended within _LAST_EVENT_WAIT_S is closed, the answer being whole. (No timer
        when the end came with the event.)"""
        wait = _NO_DEADLINE if upstream.complete else deadline_in(_LAST_EVENT_WAIT_S)
        try:
            async with wait:
                async for _ in self._chunks:
                    pass
        except Exception:  # TimeoutError, or a broken end: the answer is whole regardless
            upstream.close()

    def _stream_error(self, msg: str, type_: str, code: str, status: int, tap: Any) -> bytes:
        """The proxy's own error event that ends a stream, in the client's dialect."""
        if self.anthropic:
            err = ProxyError(status, msg)
            return b"event: error\ndata: " + anthropic_proxy_error(err) + b"\n\n"
        if self.turn is not None:  # a translation's response.failed, else OpenAI's event
            ending: bytes = tap.fail(msg, code)
            if ending:
                return ending
            body = {"type": "error", "code": code, "message": msg, "param": None}
            return b"event: error\ndata: " + orjson.dumps(body) + b"\n\n"
        return b"data: " + error_body(msg, type_, None, code) + b"\n\n"

    def _stream_limit(self) -> str:
        """The stream time limit that applied, and the key that set it (for messages)."""
        config = self.rt.config
        spec = config.models.get(self.ev.alias)
        if spec is not None and spec.stream_timeout_s is not None:
            return f"{spec.stream_timeout_s:g} s, models.{self.ev.alias}.stream_timeout_s"
        return f"{config.limits.stream_timeout_s:g} s, limits.stream_timeout_s"


def _err(status: int, message: str, code: str) -> ProxyError:
    return ProxyError(status, message, code=code, outcome="error")


async def _read_or_empty(upstream: UpstreamResponse) -> bytes:
    try:
        return await upstream.read()
    except (OSError, ValueError, RuntimeError):
        return b""


class _Failover(Exception):
    def __init__(self, reason: str, error: ProxyError) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error


class _UpstreamError(ProxyError):
    """An upstream error passed back as is (already OpenAI-shaped), with the headers of
    `_Request._headers` (no content type: the answer's is ours)."""

    def __init__(self, status: int, body: bytes, headers: Headers) -> None:
        super().__init__(status, "", headers=headers, outcome="error")
        self._body = body

    def body(self) -> bytes:
        return self._body


def _anthropic_body(data: dict[str, Any], model: str) -> bytes:
    """An Anthropic client's body for a target that speaks Anthropic: the upstream model;
    its streams always carry usage, so nothing else changes."""
    out = dict(data)
    out["model"] = model
    try:
        return orjson.dumps(out)
    except TypeError:
        raise ProxyError(
            400, "Request body is nested too deeply (over 254 levels).", code="invalid_body"
        ) from None


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
    try:
        return orjson.dumps(out)
    except TypeError:  # orjson reads 1024 levels of nesting but writes only 254
        raise ProxyError(
            400, "Request body is nested too deeply (over 254 levels).", code="invalid_body"
        ) from None
