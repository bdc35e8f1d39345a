"""Runs the app under uvicorn with uvloop and httptools, the fastest pairing measured."""

from __future__ import annotations

import logging
from typing import Any

from proxy.config import Config, warnings_for

log = logging.getLogger("hybridgate")


def uvicorn_options(config: Config) -> dict[str, Any]:
    """uvicorn settings of every serving process (one, or each of `--workers N`)."""
    from proxy.server.protocol import protocol_for

    return {
        "loop": "uvloop",
        "http": protocol_for(config.limits),
        # No route speaks WebSocket: no upgrade is performed (proxy/server/protocol.py refuses a
        # request asking for one with a body, the bytes a front end would take for it).
        "ws": "none",
        "lifespan": "on",
        "access_log": False,
        "log_level": "warning",
        "timeout_keep_alive": config.limits.keep_alive_timeout_s,
        "timeout_graceful_shutdown": 30,
        "server_header": False,
        "date_header": False,
        # X-Forwarded-For is not trusted: a local client could otherwise pick the address
        # that /metrics' network allowlist sees (and the rewrite costs every request).
        "proxy_headers": False,
    }


def serve(
    config: Config,
    host: str | None = None,
    port: int | None = None,
    config_path: str | None = None,
) -> None:
    import uvicorn

    from proxy.server.app import HybridGateApp

    for warning in warnings_for(config):
        log.warning("%s", warning)
    app = HybridGateApp(config, config_path=config_path)  # the file SIGHUP re-reads
    uv_config = uvicorn.Config(
        app,
        host=host or config.listen.host,
        port=config.listen.port if port is None else port,
        **uvicorn_options(config),
    )
    server = uvicorn.Server(uv_config)
    log.warning("hybridgate listening on http://%s:%s", uv_config.host, uv_config.port)
    server.run()
    if not server.started:  # e.g. the port is taken: uvicorn logged why; fail loudly
        raise SystemExit(3)
