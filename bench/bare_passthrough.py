"""The floor for a Python proxy: uvicorn + raw ASGI + one upstream client, nothing else.

Run it beside `hybridgate serve` against the same upstream to see what hybridgate's own
features (auth, routing, metering, metrics) cost on top of moving the bytes, and what the
upstream client costs: `--client aiohttp` (a pooled aiohttp session, hybridgate's client
until 2026-11-27) or `--client h1` (proxy/backends/h1client.py, hybridgate's client now):

    python bench/bare_passthrough.py --port 14001 --upstream http://127.0.0.1:18000/v1 --client h1
"""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import uvicorn

from proxy.backends.h1client import H1Pool


def make_app(upstream: str, client: str) -> Any:
    session: aiohttp.ClientSession | None = None
    prefix = urlsplit(upstream).path.rstrip("/")
    pool = H1Pool(
        upstream,
        {"Content-Type": "application/json"},
        connect_timeout_s=5,
        read_timeout_s=60,
        max_idle=256,
    )

    async def forward(body: bytes) -> tuple[int, bytes]:
        if client == "h1":
            resp = await pool.request("POST", prefix + "/chat/completions", body)
            return resp.status, await resp.read()
        assert session is not None
        async with session.post(
            upstream + "/chat/completions", data=body, headers={"Content-Type": "application/json"}
        ) as r:
            return r.status, await r.read()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal session
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    session = aiohttp.ClientSession(
                        connector=aiohttp.TCPConnector(limit=256), auto_decompress=False
                    )
                    await send({"type": "lifespan.startup.complete"})
                else:
                    assert session is not None
                    await session.close()
                    pool.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        more = True
        while more:
            msg = await receive()
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
        status, data = await forward(body)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": data})

    return app


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=14001)
    ap.add_argument("--upstream", default="http://127.0.0.1:18000/v1")
    ap.add_argument("--client", choices=("aiohttp", "h1"), default="h1")
    args = ap.parse_args()
    uvicorn.run(
        make_app(args.upstream, args.client),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
