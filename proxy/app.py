"""The ASGI app: OpenAI routes on the lean path, everything else in FastAPI.

The three POST routes that carry traffic go straight to the raw-ASGI Handler; the
operator surface (models list, health, metrics, reports, dashboard, admin) is FastAPI,
where per-request cost does not matter and OpenAPI documentation does.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from proxy.access import MetricsGuard
from proxy.config import Config
from proxy.errors import ProxyError, error_type_for
from proxy.exchange import Receive, Scope, Send
from proxy.handler import FAST_PATHS, Handler
from proxy.lifespan import run_lifespan
from proxy.live import LiveCosts
from proxy.live import register_routes as register_live_routes
from proxy.metering.crosscheck import EngineCrossCheck
from proxy.metering.request_log import RequestLog
from proxy.metrics import Metrics
from proxy.openapi import install as install_openapi
from proxy.reload import Reloader
from proxy.reload import register_routes as register_reload_routes
from proxy.runtime import Runtime
from proxy.state import build_state
from proxy.state.metrics import StateCollector

log = logging.getLogger("hybridgate")


class HybridGateApp:
    def __init__(
        self, config: Config, metrics: Metrics | None = None, config_path: str | None = None
    ) -> None:
        self.metrics = metrics or Metrics()
        self.reloader = Reloader(self, config_path)
        self.state = build_state(config)  # outlives runtimes, like metrics
        self.metrics.registry.register(StateCollector(self.state))
        self.runtime = Runtime(config, self.metrics, state=self.state)
        self.live = LiveCosts(self)  # the windowed cost model outlives reloads, like metrics
        self.crosscheck = EngineCrossCheck(
            lambda: self.runtime.control.engines,
            self.metrics.metered_tokens,
            lambda backend: self.runtime.engine_kind(backend),
            interval_s=0.25,
        )
        self.metrics.registry.register(self.crosscheck)
        self.metrics.add_pool_collector(lambda: self.live.pool_rows())
        self.runtime.meter.add_fast_sink(self.metrics.observe)
        self.runtime.meter.add_fast_sink(self.live.window.observe)
        if config.request_log.path:
            self.runtime.meter.add_slow_sink(RequestLog(config.request_log.path))
        self.handler = Handler(lambda: self.runtime)
        self.ops = build_ops_app(self)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = FAST_PATHS.get(scope["path"])
            if path is not None and scope["method"] == "POST":
                scope["path"] = path
                await self.handler(scope, receive, send)
                return
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        await self.ops(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await run_lifespan(receive, send, self._startup, self._shutdown)

    async def _startup(self) -> None:
        await self.runtime.start()
        await self.state.start()
        self.reloader.install_signal_handler()
        self.live.start()
        self.crosscheck.start()

    async def _shutdown(self) -> None:
        await self.reloader.close()
        await self.live.stop()
        await self.crosscheck.stop()
        await self.runtime.stop()
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


def build_ops_app(gate: HybridGateApp) -> FastAPI:
    app = FastAPI(
        title="hybridgate",
        version="0.1.0",
        description="OpenAI-compatible proxy with live cost and breakeven.",
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
        created = int(rt.started_at)
        return {
            "object": "list",
            "data": [
                {"id": alias, "object": "model", "created": created, "owned_by": "hybridgate"}
                for alias in rt.config.models
            ],
        }

    @app.get("/health/live")
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/health/ready")
    async def ready() -> JSONResponse:
        report = gate.runtime.readiness()
        report["status"] = "ready" if report["ready"] else "not_ready"
        if report["ready"] and gate.state.degraded:
            report["status"] = "degraded"  # serving on local state; see report["state"]
        return JSONResponse(report, status_code=200 if report["ready"] else 503)

    register_reload_routes(app, gate)
    register_live_routes(app, gate)
    install_openapi(app, gate)  # after the routes: documents them and the OpenAI ones

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        client = request.client.host if request.client else None
        MetricsGuard(gate.runtime.config.metrics).check(dict(request.scope["headers"]), client)
        return Response(generate_latest(gate.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
