"""`GET /costs/report` (JSON, admin key) and `GET /dashboard` (the built-in page).

The page itself is public (it holds no data); everything it shows comes from
/costs/report with the admin key the user types in, kept in sessionStorage.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from proxy.live.window import WINDOWS
from proxy.request.errors import ProxyError

_ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "charts.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}


def _asset(name: str) -> bytes:
    return resources.files("proxy.dashboard").joinpath(name).read_bytes()


def register_routes(app: FastAPI, gate: Any) -> None:
    @app.get("/costs/report")
    async def costs_report(request: Request, window: str = "1h") -> JSONResponse:
        """Live TCO and breakeven from the traffic of `window` (1h, 24h, 7d or all)."""
        gate.runtime.auth.require_admin(dict(request.scope["headers"]))
        if window not in WINDOWS:
            raise ProxyError(
                400,
                f"Unknown window '{window}'; use one of {', '.join(WINDOWS)}.",
                param="window",
                code="invalid_window",
            )
        report = await gate.live.report(window)
        batch = getattr(gate, "batch", None)
        if batch is not None:  # batch jobs since start (proxy/batch/books.py)
            report = {**report, "batch": batch.report()}
        return JSONResponse(report)

    @app.get("/dashboard", include_in_schema=False)
    async def dashboard() -> HTMLResponse:
        return HTMLResponse(_asset("index.html"), headers={"cache-control": "no-cache"})

    @app.get("/dashboard/{name}", include_in_schema=False)
    async def dashboard_asset(name: str) -> Response:
        media = _ASSETS.get(name)
        if media is None:
            raise ProxyError(404, f"No dashboard asset '{name}'.", code="not_found")
        return Response(_asset(name), media_type=media, headers={"cache-control": "no-cache"})
