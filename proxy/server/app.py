"""The ASGI app: OpenAI routes on the lean path, everything else in FastAPI.

The three POST routes that carry traffic go straight to the raw-ASGI Handler; the
operator surface (models list, health, metrics, reports, dashboard, admin) is FastAPI,
where per-request cost does not matter and OpenAPI documentation does.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from proxy.batch.routes import register_routes as register_batch_routes
from proxy.batch.service import BatchService
from proxy.config import Config
from proxy.live import LiveCosts
from proxy.live import register_routes as register_live_routes
from proxy.metering.crosscheck import EngineCrossCheck
from proxy.metering.meter import PoolFactory
from proxy.metering.prometheus import Metrics
from proxy.metering.request_log import RequestLog
from proxy.request.errors import ProxyError, error_type_for
from proxy.request.handler import Handler
from proxy.runtime import Runtime
from proxy.server.access import MetricsGuard
from proxy.server.exchange import Receive, Scope, Send
from proxy.server.lifespan import run_lifespan
from proxy.server.openapi import install as install_openapi
from proxy.server.reload import Reloader
from proxy.server.reload import register_routes as register_reload_routes
from proxy.state import build_state
from proxy.state.gpu_books import cluster_books
from proxy.state.metrics import StateCollector

log = logging.getLogger("hybridgate")

AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Role:
    """What a process serves beside the OpenAI routes, and what it runs around them.

    The OpenAI routes, the runtime, the state store, reloads and the lifespan are the same
    in every process (`HybridGateApp`); a role adds the rest. `serve` runs one process in
    the `Serving` role; `serve --workers N` runs a `Serving` hub whose pools are shared
    books, and N workers (`proxy/multiproc/worker.py`) that price events and send them to
    the hub.
    """

    records_spend = True  # the state store's spend sink; a worker leaves it to the hub

    def __init__(self, pool_factory: PoolFactory | None = None) -> None:
        self.pool_factory = pool_factory

    def metrics(self) -> Metrics:
        return Metrics()

    def wire(self, gate: HybridGateApp) -> AsgiApp:
        """Add this role's sinks to the gate; return the app for every other route."""
        raise NotImplementedError

    async def start(self, gate: HybridGateApp) -> None:
        """After the runtime and the state store started, and SIGHUP is the reloader's."""

    async def stop(self, gate: HybridGateApp) -> None:
        """After the runtime stopped (its meter delivered every event), before the state."""


class Serving(Role):
    """Every sink (Prometheus, live cost, request log, spend) and the operator surface."""

    def wire(self, gate: HybridGateApp) -> AsgiApp:
        metrics, meter = gate.metrics, gate.runtime.meter
        metrics.registry.register(StateCollector(gate.state))
        gate.live = LiveCosts(gate)  # the windowed cost model outlives reloads, like metrics
        gate.batch = BatchService(gate)  # Batch API jobs (proxy/batch/)
        gate.crosscheck = EngineCrossCheck(
            lambda: gate.runtime.control.engines,
            metrics.metered_tokens,
            lambda backend: gate.runtime.engine_kind(backend),
            interval_s=0.25,
        )
        metrics.registry.register(gate.crosscheck)
        metrics.add_pool_collector(lambda: gate.live.pool_rows())
        meter.add_fast_sink(metrics.observe)
        meter.add_fast_sink(gate.live.window.observe)
        meter.add_fast_sink(gate.batch.books.observe)
        if gate.runtime.config.request_log.path:
            meter.add_slow_sink(RequestLog(gate.runtime.config.request_log.path))
        # FastAPI types ASGI over MutableMapping, proxy.exchange over dict: the same calls.
        return cast(AsgiApp, build_ops_app(gate))

    async def start(self, gate: HybridGateApp) -> None:
        gate.live.start()
        gate.crosscheck.start()
        await gate.batch.start()

    async def stop(self, gate: HybridGateApp) -> None:
        await gate.batch.stop()
        await gate.live.stop()
        await gate.crosscheck.stop()


class HybridGateApp:
    """One hybridgate process: the OpenAI routes on the lean path (`handler`, served by our
    protocol straight from the socket), the rest by its role, over ASGI."""

    live: LiveCosts  # Serving only
    crosscheck: EngineCrossCheck  # Serving only
    batch: BatchService  # Serving only

    def __init__(
        self,
        config: Config,
        metrics: Metrics | None = None,
        config_path: str | None = None,
        role: Role | None = None,
    ) -> None:
        self.role = role if role is not None else Serving()
        self.metrics = metrics or self.role.metrics()
        self.reloader = Reloader(self, config_path)
        self.state = build_state(config)  # outlives runtimes, like metrics
        self.runtime = Runtime(
            config,
            self.metrics,
            state=self.state,
            pool_factory=self.role.pool_factory,
            records_spend=self.role.records_spend,
        )
        self.handler = Handler(lambda: self.runtime)
        # Replicas sharing Redis keep one set of GPU books (with --workers, each worker
        # and the hub take part: docs/workers.md).
        self.gpu_books = cluster_books(config, self.state)
        if self.gpu_books is not None:
            self.runtime.meter.attach_cluster(self.gpu_books)
        self.ops = self.role.wire(self)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The OpenAI routes never come this way: our protocol serves them (server/protocol.py).
        if scope["type"] == "lifespan":
            await run_lifespan(receive, send, self._startup, self._shutdown)
            return
        await self.ops(scope, receive, send)

    async def _startup(self) -> None:
        await self.runtime.start()
        await self.state.start()
        if self.gpu_books is not None:
            await self.gpu_books.start()
        self.reloader.install_signal_handler()
        await self.role.start(self)

    async def _shutdown(self) -> None:
        await self.reloader.close()
        if self.gpu_books is not None:
            await self.gpu_books.stop()
        await self.runtime.stop()
        await self.role.stop(self)
        await self.state.stop()


def _openai_error(status: int, message: str, code: str | None = None) -> JSONResponse:
    return JSONResponse(
        {
            "error": {
                "message": message,
                "type": error_type_for(status),
                "param": None,
                "code": code,
            }
        },
        status_code=status,
    )


def _model_object(rt: Runtime, alias: str) -> dict[str, Any]:
    return {"id": alias, "object": "model", "created": int(rt.started_at), "owned_by": "hybridgate"}


def build_ops_app(gate: HybridGateApp) -> FastAPI:
    app = FastAPI(
        title="hybridgate",
        version="0.1.0",
        description="OpenAI-compatible proxy with live cost and breakeven.",
        # No 307 to the same path without its trailing slash: its Location would be built
        # from the client's Host header. Such a path is a 404 like any other.
        redirect_slashes=False,
    )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        response = _openai_error(exc.status_code, str(exc.detail), code)
        response.headers.update(exc.headers or {})  # a 405 must say what is Allow-ed
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"msg": "invalid request"}
        return _openai_error(400, str(first.get("msg")), "invalid_request")

    @app.exception_handler(ProxyError)
    async def _proxy_error(_: Request, exc: ProxyError) -> Response:
        return Response(exc.body(), status_code=exc.status, media_type="application/json")

    @app.get("/v1/models")
    @app.get("/models", include_in_schema=False)
    async def list_models(request: Request) -> dict[str, Any]:
        """The configured model aliases, in OpenAI's list shape."""
        rt = gate.runtime
        rt.auth.client(dict(request.scope["headers"]))
        return {"object": "list", "data": [_model_object(rt, a) for a in rt.config.models]}

    @app.get("/v1/models/{model_id:path}")
    @app.get("/models/{model_id:path}", include_in_schema=False)
    async def retrieve_model(model_id: str, request: Request) -> dict[str, Any]:
        """One alias, as in GET /v1/models (OpenAI's `models.retrieve`); 404 otherwise."""
        rt = gate.runtime
        rt.auth.client(dict(request.scope["headers"]))
        if model_id not in rt.config.models:
            raise ProxyError(
                404,
                f"The model '{model_id[:200]}' does not exist",
                type_="invalid_request_error",
                param="model",
                code="model_not_found",
            )
        return _model_object(rt, model_id)

    @app.get("/health/live")
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/health/ready")
    async def ready(request: Request) -> JSONResponse:
        """Status for anyone (a load balancer's probe); the details (aliases, backends,
        breakers, upstream models) only with the admin key or `health.public_details`."""
        rt = gate.runtime
        report = rt.readiness()
        status = "ready" if report["ready"] else "not_ready"
        if report["ready"] and gate.state.degraded:
            status = "degraded"  # serving on local state; see report["state"]
        code = 200 if report["ready"] else 503
        if not (
            rt.config.health.public_details or rt.auth.is_admin(dict(request.scope["headers"]))
        ):
            return JSONResponse({"status": status, "ready": report["ready"]}, status_code=code)
        report["status"] = status
        return JSONResponse(report, status_code=code)

    register_reload_routes(app, gate)
    register_live_routes(app, gate)
    if hasattr(gate, "batch"):
        register_batch_routes(app, gate)
    install_openapi(app, gate)  # after the routes: documents them and the OpenAI ones

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        client = request.client.host if request.client else None
        MetricsGuard(gate.runtime.config.metrics).check(dict(request.scope["headers"]), client)
        return Response(generate_latest(gate.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
