"""The aiohttp application: OpenAI/vLLM endpoints, /sim/* control, and the listeners.

Handlers stay thin: `parse` decides what a request asks for, an engine decides when
its tokens exist, a `Dialect` decides what the bytes look like, `Stats` keeps the
books. The main listener can be closed and reopened at run time (the
`refuse_connections` fault); an optional control listener never is.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, cast

import orjson
from aiohttp import web

from simulator.anthropic import AnthropicDialect, count_messages, parse_messages, valid_version
from simulator.batches import BatchApi
from simulator.config import SimConfig
from simulator.engine import Engine, EngineLike, FixedLatencyEngine, Sequence, StepModel
from simulator.faults import FaultError, Faults, FaultState
from simulator.metrics import VllmMetrics
from simulator.parse import Job, RequestError, parse_chat, parse_completion, parse_embedding
from simulator.ratelimit import RateWindow
from simulator.responses import (
    Dialect,
    OpenAIDialect,
    Reply,
    ToolCall,
    VllmDialect,
    anthropic_error,
)
from simulator.responses_api import (
    ResponsesShape,
    Stored,
    input_items_page,
    parse_response_request,
)
from simulator.stats import Record, Stats
from simulator.tokens import PrefixCache

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_FAULT_MESSAGES = {
    400: "Bad request (simulated fault)",
    408: "Request timed out (simulated fault)",
    422: "Unprocessable entity (simulated fault)",
    429: "Rate limit reached for requests (simulated fault)",
    500: "Internal server error (simulated fault)",
    502: "Bad gateway (simulated fault)",
    503: "Service unavailable (simulated fault)",
    504: "Gateway timeout (simulated fault)",
    529: "Overloaded",
}
_QUOTA_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. (simulated fault)"
)
DONE = b"data: [DONE]\n\n"
_CLIENT_CLOSED = 499  # nginx's "client closed request": no status was ever sent


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, headers=headers, content_type="application/json"
    )


class SimServer:
    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.vllm = cfg.mode == "vllm"
        self.anthropic = cfg.mode == "anthropic"
        self.dialect: Dialect
        if self.vllm:
            self.dialect = VllmDialect(cfg.flat_errors, cfg.prompt_tokens_details)
        elif self.anthropic:
            self.dialect = AnthropicDialect()
        else:
            self.dialect = OpenAIDialect()
        self.models = cfg.served_models
        self.metrics: VllmMetrics | None = None
        self.engine: EngineLike
        if self.vllm:
            self.metrics = VllmMetrics(self.models[0], old_names=cfg.old_metrics)
            step = StepModel(
                cfg.step_overhead_ms,
                cfg.prefill_overhead_ms,
                cfg.prefill_ms_per_token,
                cfg.decode_ms_per_seq,
                cfg.speed,
            )
            self.engine = Engine(
                step,
                cfg.max_num_seqs,
                cfg.max_num_batched_tokens,
                cfg.kv_cache_tokens,
                on_finish=self.metrics.on_finish,
            )
        else:
            self.engine = FixedLatencyEngine(
                cfg.ttft_ms / 1000 / cfg.speed, cfg.itl_ms / 1000 / cfg.speed
            )
        self.stats = Stats(cfg.max_logged_requests)
        self.faults = FaultState(cfg.seed)
        self.faults.update(dict(cfg.faults))
        self.rate = RateWindow(cfg.rpm_limit)
        self.prefix_cache = PrefixCache()
        self.by_user: dict[str, int] = {}  # inference requests per body `user` (a marker)
        self.batches: BatchApi | None = None
        if cfg.mode == "api":  # OpenAI's Batch API (simulator/batches.py)
            self.batches = BatchApi(
                cfg.batch_seconds / cfg.speed, cfg.batch_concurrency, self._main_port
            )
        self._ids = itertools.count(1)
        self.stored: dict[str, Stored] = {}  # api mode: stored responses, by id
        self._id_prefix = secrets.token_hex(4)
        self.app = self._build_app()
        self.runner: web.AppRunner | None = None
        self.port = cfg.port
        self.control_port = cfg.control_port
        self._main_site: web.TCPSite | None = None
        self._control_site: web.TCPSite | None = None
        self._relisten: asyncio.TimerHandle | None = None
        self._busy: set[asyncio.BaseTransport | None] = set()  # connections mid-request

    def _main_port(self) -> int:
        return self.port

    # -- wiring ---------------------------------------------------------------------
    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        r = app.router
        if self.anthropic:
            r.add_post("/v1/messages", self._inference(self._messages))
            r.add_post("/v1/messages/count_tokens", self._inference(self._count_tokens))
        else:
            r.add_post("/v1/chat/completions", self._inference(self._chat))
            r.add_post("/v1/completions", self._inference(self._completions))
            r.add_post("/v1/embeddings", self._inference(self._embeddings))
        if self.cfg.mode == "api":  # OpenAI's Responses API (simulator/responses_api.py)
            r.add_post("/v1/responses", self._inference(self._responses))
            r.add_get("/v1/responses/{id}", self._logged(self._responses_get))
            r.add_delete("/v1/responses/{id}", self._logged(self._responses_delete))
            r.add_post("/v1/responses/{id}/cancel", self._logged(self._responses_cancel))
            r.add_get("/v1/responses/{id}/input_items", self._logged(self._responses_items))
        if self.batches is not None:
            self.batches.routes(r)
        r.add_get("/v1/models", self._logged(self._list_models))
        r.add_get("/health", self._logged(self._health))
        r.add_get("/version", self._logged(self._version))
        if self.vllm:
            r.add_get("/metrics", self._logged(self._metrics))
        r.add_get("/sim/stats", self._sim_stats)
        r.add_post("/sim/reset", self._sim_reset)
        r.add_get("/sim/faults", self._sim_get_faults)
        r.add_post("/sim/faults", self._sim_set_faults)
        r.add_delete("/sim/faults", self._sim_clear_faults)
        return app

    async def start(self) -> None:
        self.engine.start()
        self.runner = web.AppRunner(
            self.app,
            handler_cancellation=True,  # a client that goes away cancels its sequence
            access_log=web.AccessLogger if self.cfg.access_log else None,
            shutdown_timeout=1.0,
        )
        await self.runner.setup()
        if self.control_port is not None:
            self._control_site = web.TCPSite(self.runner, self.cfg.host, self.control_port)
            await self._control_site.start()
            self.control_port = self._bound_port(self._control_site)
        if not self.faults.current.refuse_connections:
            await self._listen()
        elif self.port == 0:
            raise ValueError("--refuse-connections at start needs an explicit --port")

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        await self.engine.stop()

    async def _listen(self) -> None:
        assert self.runner is not None  # start() set it up
        site = web.TCPSite(self.runner, self.cfg.host, self.port, reuse_address=True)
        await site.start()
        self._main_site = site
        self.port = self._bound_port(site)

    @staticmethod
    def _bound_port(site: web.TCPSite) -> int:
        # aiohttp keeps the asyncio server private (typed as AbstractServer, which has no
        # `sockets`; it is an asyncio or uvloop Server)
        server = cast("asyncio.Server | None", site._server)
        assert server is not None and server.sockets
        return int(server.sockets[0].getsockname()[1])

    async def _apply_listening(self, current: asyncio.BaseTransport | None = None) -> None:
        """Close or reopen the main listener to match the `refuse_connections` fault."""
        f = self.faults.current
        if self._relisten is not None:
            self._relisten.cancel()
            self._relisten = None
        if f.refuse_connections and self._main_site is not None:
            await self._main_site.stop()
            self._main_site = None
            # Pooled keep-alive connections must not keep a dead server looking alive:
            # idle ones close now; requests in flight finish, then their connections close.
            assert self.runner is not None and self.runner.server is not None
            for handler in self.runner.server.connections:
                t = handler.transport
                if t is None or (t.get_extra_info("sockname") or (None, None))[1] != self.port:
                    continue
                if t in self._busy or t is current:
                    handler.close()
                else:
                    handler.force_close()
        elif not f.refuse_connections and self._main_site is None:
            await self._listen()
        if f.refuse_connections and f.refuse_for_s is not None:
            loop = asyncio.get_running_loop()
            self._relisten = loop.call_later(
                f.refuse_for_s, lambda: loop.create_task(self._end_refusal())
            )

    async def _end_refusal(self) -> None:
        self._relisten = None
        self.faults.update({"refuse_connections": False, "refuse_for_s": None})
        await self._apply_listening()

    # -- plumbing shared by handlers ----------------------------------------------------
    def _logged(self, handler: Handler) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            entry = self.stats.arrive(request.method, request.path)
            status = _CLIENT_CLOSED
            transport = request.transport
            self._busy.add(transport)
            try:
                resp = await handler(request)
                status = resp.status
                return resp
            finally:
                self._busy.discard(transport)
                self.stats.respond(entry, status)

        return wrapped

    def _inference(
        self,
        handler: Callable[[web.Request, Record, dict[str, str]], Awaitable[web.StreamResponse]],
    ) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            entry = self.stats.arrive("POST", request.path)
            rid = f"req_{self._id_prefix}{next(self._ids):08x}"
            rec = self.stats.record(rid, request.path, entry[0])
            headers = {"x-sim-request-id": rid}
            transport = request.transport
            self._busy.add(transport)
            try:
                if self.anthropic:
                    headers["request-id"] = rid
                elif not self.vllm:
                    headers["x-request-id"] = rid
                resp: web.StreamResponse | None = await self._admit(request, rec, headers)
                if resp is None:
                    resp = await handler(request, rec, headers)
                rec.status = resp.status
                return resp
            except asyncio.CancelledError:
                if not rec.cut:  # a cut stream's own close also cancels its handler
                    rec.cancelled = True
                    self.stats.cancelled += 1
                raise
            finally:
                self._busy.discard(transport)
                self.stats.respond(entry, rec.status or _CLIENT_CLOSED)

        return wrapped

    async def _admit(
        self, request: web.Request, rec: Record, headers: dict[str, str]
    ) -> web.Response | None:
        """Auth, faults and rate limit, in that order: a refusal, or None to go on."""
        key = self.cfg.require_key
        if self.anthropic:
            refusal = self._anthropic_headers(request, headers)
            if refusal is not None:
                return refusal
        elif key is not None:
            auth = request.headers.get("Authorization", "")
            if not secrets.compare_digest(auth.encode(), f"Bearer {key}".encode()):
                if self.vllm:
                    return _json({"error": "Unauthorized"}, 401, headers)
                body = self.dialect.error(401, "Incorrect API key provided.")
                return _json(body, 401, headers)
        fault = self.faults.pick_error()
        if fault is not None:
            rec.fault = True
            return self._fault_response(fault, headers)
        if not self.vllm:
            allowed, limits = self.rate.take()
            headers.update(limits)
            if not allowed:
                wait = self.rate.seconds_to_reset()
                headers["retry-after"] = str(math.ceil(wait))
                body = self.dialect.error(
                    429, f"Rate limit reached for requests: limit {self.rate.limit} per minute."
                )
                return _json(body, 429, headers)
        return None

    def _anthropic_headers(
        self, request: web.Request, headers: dict[str, str]
    ) -> web.Response | None:
        """The key (when --require-key), then anthropic-version, with Anthropic's words.

        The key comes as `x-api-key` or as `Authorization: Bearer` (which the official SDK
        sends since 2.x); x-api-key wins when both are there.
        """
        key = self.cfg.require_key
        if key is not None:
            given = request.headers.get("x-api-key")
            auth = request.headers.get("Authorization", "")
            if given is None and auth.startswith("Bearer "):
                given = auth[7:]
            if given is None:
                body = self.dialect.error(401, "x-api-key header is required")
                return _json(body, 401, headers)
            if not secrets.compare_digest(given.encode(), key.encode()):
                return _json(self.dialect.error(401, "invalid x-api-key"), 401, headers)
        version = request.headers.get("anthropic-version")
        if version is None:
            body = self.dialect.error(400, "anthropic-version: header is required")
            return _json(body, 400, headers)
        if not valid_version(version):
            body = self.dialect.error(400, f"anthropic-version: invalid version {version!r}")
            return _json(body, 400, headers)
        return None

    def _fault_response(self, f: Faults, headers: dict[str, str]) -> web.Response:
        status = f.status or 500
        message = (
            f.error_message
            or (_QUOTA_MESSAGE if f.error_type == "insufficient_quota" else None)
            or _FAULT_MESSAGES.get(status, f"Simulated error {status}")
        )
        shape = f.error_shape or self.dialect.name
        if shape == "anthropic":
            body = anthropic_error(status, message, f.error_type)
        elif shape == "openai":
            body = OpenAIDialect().error(status, message, f.error_type, f.error_code)
        else:
            body = VllmDialect(flat_errors=shape == "vllm_flat").error(
                status, message, f.error_type, f.error_code
            )
        out = dict(headers)
        if f.retry_after is not None:
            ra = f.retry_after
            out["retry-after"] = str(int(ra)) if float(ra).is_integer() else str(ra)
            out["retry-after-ms"] = str(int(ra * 1000))
        return _json(body, status, out)

    def _error(self, exc: RequestError, headers: dict[str, str]) -> web.Response:
        body = self.dialect.error(
            exc.status, exc.message, param=exc.param, code=None if self.vllm else exc.code
        )
        return _json(body, exc.status, headers)

    async def _body(self, request: web.Request) -> Any:
        raw = await request.read()
        try:
            data = orjson.loads(raw)
            user = data.get("user") if isinstance(data, dict) else None
            if isinstance(user, str):
                self.by_user[user] = self.by_user.get(user, 0) + 1
            return data
        except orjson.JSONDecodeError as exc:
            if self.anthropic:
                raise RequestError(400, f"There was an error parsing the body: {exc}") from None
            if self.vllm:
                raise RequestError(400, f"JSON decode error: {exc}") from None
            raise RequestError(
                400,
                "We could not parse the JSON body of your request. (HINT: This likely means "
                "you aren't using your HTTP library correctly. The OpenAI API expects a JSON "
                "payload, but what was sent was not valid JSON.)",
            ) from None

    def _check_model(self, model: str) -> None:
        if self.models and model not in self.models:
            if self.anthropic:
                raise RequestError(404, f"model: {model}")
            if self.vllm:
                raise RequestError(
                    404,
                    f"The model `{model}` does not exist. Valid aliases: {', '.join(self.models)}.",
                    param="model",
                )
            raise RequestError(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                code="model_not_found",
            )

    # -- inference ----------------------------------------------------------------------
    async def _chat(self, request: web.Request, rec: Record, headers: dict[str, str]):
        return await self._generate(request, rec, headers, parse_chat, self.dialect.chat_id)

    async def _completions(self, request: web.Request, rec: Record, headers: dict[str, str]):
        return await self._generate(
            request, rec, headers, parse_completion, self.dialect.completion_id
        )

    async def _embeddings(self, request: web.Request, rec: Record, headers: dict[str, str]):
        return await self._generate(
            request, rec, headers, parse_embedding, self.dialect.embedding_id
        )

    async def _generate(
        self,
        request: web.Request,
        rec: Record,
        headers: dict[str, str],
        parse: Callable[[Any, SimConfig], Job],
        new_id: Callable[[], str],
    ) -> web.StreamResponse:
        try:
            job = parse(await self._body(request), self.cfg)
            self._check_model(job.model)
        except RequestError as exc:
            return self._error(exc, headers)
        rec.model = job.model
        rec.stream = job.stream
        if self.cfg.record_bodies:
            rec.body = job.messages or None
        cached = 0
        if job.kind == "chat" and self.vllm:  # vLLM's automatic prefix caching
            cached = self.prefix_cache.lookup_and_insert(job.messages, job.prompt_tokens)
        reply = Reply(
            kind=job.kind,
            id=new_id(),
            model=job.model,
            prompt_tokens=job.prompt_tokens,
            max_tokens=job.max_tokens,
            n=job.n,
            cached_tokens=cached,
            finish_reason="length" if job.explicit_max else "stop",
            include_usage=job.include_usage,
            continuous_usage=job.continuous_usage,
        )
        if job.tool is not None:
            reply.tool_call = ToolCall(self.dialect.tool_call_id(), *job.tool)
            reply.finish_reason = "tool_calls"
        seq = Sequence(rec.id, job.prompt_tokens, job.max_tokens, job.n, cached)
        seq.arrived = rec.arrived
        rec.seq = seq
        if job.stream:
            return await self._stream(request, rec, headers, reply, seq)
        await self._run_whole(seq)
        if job.kind == "embedding":
            body = self.dialect.embeddings(reply, job.inputs, self.cfg.embedding_dim, job.base64)
            if self.vllm:
                body["id"] = reply.id
        elif job.kind == "chat":
            body = self.dialect.chat_completion(reply, seq.generated)
        else:
            body = self.dialect.completion(reply, seq.generated)
        headers["x-sim-gpu-seconds"] = repr(seq.gpu_seconds)
        return _json(body, 200, headers)

    async def _messages(
        self, request: web.Request, rec: Record, headers: dict[str, str]
    ) -> web.StreamResponse:
        """Anthropic's POST /v1/messages, on the fixed-latency engine."""
        try:
            job = parse_messages(await self._body(request), self.cfg)
            self._check_model(job.model)
        except RequestError as exc:
            return self._error(exc, headers)
        rec.model = job.model
        rec.stream = job.stream
        rec.cache_creation_tokens = job.cache_creation
        reply = Reply(
            kind="chat",
            id=self.dialect.chat_id(),
            model=job.model,
            prompt_tokens=job.prompt_tokens,
            max_tokens=job.max_tokens,
            cached_tokens=job.cache_read,
            cache_creation_tokens=job.cache_creation,
            finish_reason="max_tokens" if job.max_tokens == job.requested_max else "end_turn",
        )
        if job.tool is not None:
            reply.tool_call = ToolCall(self.dialect.tool_call_id(), *job.tool)
            reply.finish_reason = "tool_use"
        seq = Sequence(rec.id, job.prompt_tokens, job.max_tokens, 1, job.cache_read)
        seq.arrived = rec.arrived
        rec.seq = seq
        if job.stream:
            return await self._stream(request, rec, headers, reply, seq)
        await self._run_whole(seq)
        assert isinstance(self.dialect, AnthropicDialect)
        return _json(self.dialect.message(reply, seq.generated), 200, headers)

    async def _count_tokens(
        self, request: web.Request, rec: Record, headers: dict[str, str]
    ) -> web.Response:
        """Anthropic's POST /v1/messages/count_tokens: the prompt's tokens, nothing run."""
        try:
            body = await self._body(request)
            tokens = count_messages(body)
            self._check_model(str(body["model"]))
        except RequestError as exc:
            return self._error(exc, headers)
        rec.model = str(body["model"])
        return _json({"input_tokens": tokens}, 200, headers)

    async def _responses(
        self, request: web.Request, rec: Record, headers: dict[str, str]
    ) -> web.StreamResponse:
        """OpenAI's POST /v1/responses, on the fixed-latency engine."""
        try:
            body = await self._body(request)
            job = parse_response_request(
                body, self.stored, self.cfg.default_max_tokens, self.cfg.tool_calls
            )
            self._check_model(job.model)
            job.reasoning = self.cfg.reasoning_tokens
            if job.background and not job.store:
                raise RequestError(
                    400, "Background mode requires 'store' to be true.", "background"
                )
        except RequestError as exc:
            return self._error(exc, headers)
        rec.model = job.model
        rec.stream = job.stream
        if self.cfg.record_bodies:
            rec.body = [*job.history, *job.items]
        shape = ResponsesShape(job)
        seq = Sequence(rec.id, job.prompt_tokens, job.max_tokens, 1, 0)
        seq.arrived = rec.arrived
        rec.seq = seq
        stored = None
        if job.store:
            stored = self.stored[shape.id] = Stored(
                shape.response("in_progress", None),
                [*job.history, *job.items],
                len(job.history),
            )
        if job.background:
            assert stored is not None
            stored.response = shape.response("queued", None)
            stored.task = asyncio.ensure_future(self._run_background(shape, seq, stored))
            return _json(stored.response, 200, headers)
        if job.stream:
            resp = await self._stream(request, rec, headers, None, seq, shape)
        else:
            await self._run_whole(seq)
            status = shape.final_status(seq.generated)
            resp = _json(shape.response(status, seq.generated), 200, headers)
        if stored is not None:
            if seq.done:
                status = shape.final_status(seq.generated)
                stored.response = shape.response(status, seq.generated)
            else:  # cut or abandoned: OpenAI keeps it as incomplete
                stored.response = shape.response("incomplete", seq.generated)
        return resp

    async def _run_background(self, shape: ResponsesShape, seq: Sequence, stored: Stored) -> None:
        stored.response = shape.response("in_progress", None)
        try:
            self.engine.submit(seq, False)
            await seq.wait_finished()
            stored.response = shape.response(shape.final_status(seq.generated), seq.generated)
        except asyncio.CancelledError:
            stored.response = shape.response("cancelled", None)
        finally:
            self.engine.cancel(seq)
            stored.task = None

    def _stored(self, request: web.Request) -> Stored:
        stored = self.stored.get(request.match_info["id"])
        if stored is None:
            raise RequestError(
                404,
                f"Response with id '{request.match_info['id']}' not found.",
                param="response_id",
            )
        return stored

    def _stored_call(
        self, handler: Callable[[web.Request, Stored], web.Response]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def wrapped(request: web.Request) -> web.Response:
            headers = {"x-request-id": f"req_{self._id_prefix}{next(self._ids):08x}"}
            refusal = await self._admit_key(request, headers)
            if refusal is not None:
                return refusal
            try:
                resp = handler(request, self._stored(request))
            except RequestError as exc:
                return self._error(exc, headers)
            resp.headers.update(headers)
            return resp

        return wrapped

    async def _responses_get(self, request: web.Request) -> web.Response:
        return await self._stored_call(lambda r, s: _json(s.response))(request)

    async def _responses_delete(self, request: web.Request) -> web.Response:
        def delete(r: web.Request, s: Stored) -> web.Response:
            rid = r.match_info["id"]
            if s.task is not None:
                s.task.cancel()
            del self.stored[rid]
            return _json({"id": rid, "object": "response", "deleted": True})

        return await self._stored_call(delete)(request)

    async def _responses_cancel(self, request: web.Request) -> web.Response:
        def cancel(r: web.Request, s: Stored) -> web.Response:
            if not s.response.get("background"):
                raise RequestError(
                    400, "Only responses created with background=true can be cancelled."
                )
            if s.task is not None:
                s.task.cancel()
                s.response = {**s.response, "status": "cancelled"}
            return _json(s.response)

        return await self._stored_call(cancel)(request)

    async def _responses_items(self, request: web.Request) -> web.Response:
        def items(r: web.Request, s: Stored) -> web.Response:
            try:
                limit = int(r.query.get("limit", "20"))
            except ValueError:
                raise RequestError(400, "Invalid 'limit': expected an integer.", "limit") from None
            return _json(input_items_page(s, r.query.get("order", "desc"), limit))

        return await self._stored_call(items)(request)

    async def _admit_key(
        self, request: web.Request, headers: dict[str, str]
    ) -> web.Response | None:
        key = self.cfg.require_key
        if key is None:
            return None
        auth = request.headers.get("Authorization", "")
        if secrets.compare_digest(auth.encode(), f"Bearer {key}".encode()):
            return None
        return _json(self.dialect.error(401, "Incorrect API key provided."), 401, headers)

    async def _run_whole(self, seq: Sequence) -> None:
        """Generate a non-streamed answer to its end (cancelled with the request)."""
        try:
            await self._slow_first_token()
            self.engine.submit(seq, False)
            await seq.wait_finished()
        finally:
            self.engine.cancel(seq)  # no-op once finished

    async def _slow_first_token(self) -> None:
        delay = self.faults.current.slow_first_token_s
        if delay:
            await asyncio.sleep(delay)

    async def _stream(
        self,
        request: web.Request,
        rec: Record,
        headers: dict[str, str],
        reply: Reply | None,
        seq: Sequence,
        shape: Any = None,
    ) -> web.StreamResponse:
        """`shape`: the events' maker when not the mode's dialect (the Responses API's)."""
        dialect: Any = shape or self.dialect
        resp = web.StreamResponse(status=200, headers=headers)
        resp.content_type = "text/event-stream"
        resp.charset = "utf-8"
        await resp.prepare(request)  # headers go out now, as from vLLM behind uvicorn
        rec.status = 200
        cut_after = self.faults.current.cut_stream_after
        events = 0

        async def send(chunk: dict[str, Any] | bytes | None) -> bool:
            """Write one SSE event (a chunk, an encoded event, or None for the dialect's
            last one); False once the cut fault has closed the connection."""
            nonlocal events
            if chunk is None:
                data = dialect.done or b""
            elif isinstance(chunk, bytes):
                data = chunk
            else:
                data = b"data: " + orjson.dumps(chunk) + b"\n\n"
            await resp.write(data)
            events += 1
            if cut_after is not None and events >= cut_after:
                rec.cut = True
                self.stats.cut += 1
                if request.transport is not None:
                    request.transport.close()
                return False
            return True

        try:
            if cut_after == 0:  # cut before the first event: headers only
                rec.cut = True
                self.stats.cut += 1
                if request.transport is not None:
                    request.transport.close()
                return resp
            await self._slow_first_token()
            self.engine.submit(seq, True)
            await seq.wait_beyond(0)
            if seq.cancelled:
                return resp
            for chunk in dialect.stream_head(reply):
                if not await send(chunk):
                    return resp
            sent = 0
            while True:
                while sent < seq.generated:
                    for chunk in dialect.stream_token(reply, sent):
                        if not await send(chunk):
                            return resp
                    sent += 1
                if seq.done:
                    break
                await seq.wait_beyond(sent)
            for chunk in dialect.stream_tail(reply, seq.generated):
                if not await send(chunk):
                    return resp
            if dialect.done is None or await send(None):
                await resp.write_eof()
        except ConnectionResetError:
            # The client went away between two writes (without the handler being cancelled).
            if not rec.cut:
                rec.cancelled = True
                self.stats.cancelled += 1
        finally:
            self.engine.cancel(seq)
        return resp

    # -- other endpoints ----------------------------------------------------------------
    async def _list_models(self, request: web.Request) -> web.Response:
        names = self.models or ["sim-model"]
        return _json(self.dialect.models(names, self.cfg.max_model_len))

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(status=503 if self.faults.current.health_503 else 200)

    async def _version(self, request: web.Request) -> web.Response:
        return _json({"version": "0.10.1+sim" if self.vllm else "sim"})

    async def _metrics(self, request: web.Request) -> web.Response:
        assert self.metrics is not None and isinstance(self.engine, Engine)
        text = self.metrics.render(
            self.engine, self.engine.prompt_tokens_total, self.engine.generation_tokens_total
        )
        return web.Response(
            text=text,
            content_type="text/plain",
            charset="utf-8",
            headers={"x-sim-pid": str(os.getpid())},
        )

    async def _sim_stats(self, request: web.Request) -> web.Response:
        detail = request.query.get("detail", "1") not in ("0", "false", "no")
        out = self.stats.to_json(self.engine, self.cfg.mode, detail)
        out["requests_by_user"] = dict(self.by_user)
        if self.batches is not None:
            out.update(self.batches.stats())
        return _json(out)

    async def _sim_reset(self, request: web.Request) -> web.Response:
        """Clear the books; requests in flight stay listed, their GPU time restarts at 0."""
        keep = self.stats.in_flight()
        self.stats.reset(keep)
        self.engine.reset_accounting()
        self.prefix_cache.clear()
        self.by_user.clear()
        if self.batches is not None:
            self.batches.reset()
        return _json({"ok": True, "since": self.stats.since})

    async def _sim_get_faults(self, request: web.Request) -> web.Response:
        return _json(self.faults.current.to_json())

    async def _sim_set_faults(self, request: web.Request) -> web.Response:
        try:
            changes = orjson.loads(await request.read() or b"{}")
            self.faults.update(changes)
        except (orjson.JSONDecodeError, FaultError) as exc:
            return _json({"error": str(exc)}, 400)
        await self._apply_listening(request.transport)
        return _json(self.faults.current.to_json())

    async def _sim_clear_faults(self, request: web.Request) -> web.Response:
        self.faults.clear()
        await self._apply_listening(request.transport)
        return _json(self.faults.current.to_json())


async def serve(cfg: SimConfig, ready: Callable[[SimServer], None] | None = None) -> None:
    """Run until SIGINT/SIGTERM."""
    import signal

    server = SimServer(cfg)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready(server)
    try:
        await stop.wait()
    finally:
        await server.stop()


def run(cfg: SimConfig) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        uvloop = None  # type: ignore[assignment]

    def announce(server: SimServer) -> None:
        where = f"http://{cfg.host}:{server.port}"
        extra = f", control on port {server.control_port}" if server.control_port else ""
        print(f"simulator ({cfg.mode}) listening on {where}{extra}", flush=True)

    coro = serve(cfg, announce)
    if uvloop is not None:
        uvloop.run(coro)
    else:
        asyncio.run(coro)
    return 0
