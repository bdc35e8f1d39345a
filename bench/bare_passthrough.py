"""The floor for a Python proxy: a server, one upstream client, nothing else.

Run it beside `hybridgate serve` against the same upstream to see what hybridgate's own
features (auth, routing, metering, metrics) cost on top of moving the bytes, and what the
upstream client costs: `--client aiohttp` (a pooled aiohttp session, hybridgate's client
until 2026-11-27) or `--client h1` (proxy/backends/h1client.py, hybridgate's client now):

    python bench/bare_passthrough.py --port 14001 --upstream http://127.0.0.1:18000/v1 --client h1

`--server uvicorn` (the default) is uvicorn + raw ASGI; `--server raw` is an asyncio protocol
on httptools answering straight from its callbacks (with `--client h1` only): the floor
for hybridgate's fast path (proxy/server/fastpath.py), which also skips uvicorn's ASGI cycle.
Both answer a stream whole, as one JSON-typed body: the floor of moving the bytes.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import uvicorn
import uvloop
from peers.h1server import RequestProtocol  # bench/peers: this script's folder is on sys.path

from proxy.backends.h1client import H1Pool


def upstream_pool(upstream: str) -> H1Pool:
    return H1Pool(
        upstream,
        {"Content-Type": "application/json"},
        connect_timeout_s=5,
        read_timeout_s=60,
        max_idle=256,
    )


def make_app(upstream: str, client: str) -> Any:
    session: aiohttp.ClientSession | None = None
    prefix = urlsplit(upstream).path.rstrip("/")
    pool = upstream_pool(upstream)

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


class RawPassthrough(RequestProtocol):
    """HTTP/1.1 keep-alive on httptools, each request forwarded by its own task."""

    def __init__(self, pool: H1Pool, prefix: str) -> None:
        super().__init__()
        self.pool = pool
        self.path = prefix + "/chat/completions"

    def on_request(self, method: bytes, url: bytes, body: bytes) -> None:
        asyncio.get_running_loop().create_task(self.forward(body))

    async def forward(self, body: bytes) -> None:
        resp = await self.pool.request("POST", self.path, body)
        data = await resp.read()
        self.write(
            b"HTTP/1.1 %d OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
            % (resp.status, len(data), data)
        )


async def serve_raw(port: int, upstream: str) -> None:
    pool = upstream_pool(upstream)
    prefix = urlsplit(upstream).path.rstrip("/")
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: RawPassthrough(pool, prefix), "127.0.0.1", port)
    await server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=14001)
    ap.add_argument("--upstream", default="http://127.0.0.1:18000/v1")
    ap.add_argument("--client", choices=("aiohttp", "h1"), default="h1")
    ap.add_argument("--server", choices=("uvicorn", "raw"), default="uvicorn")
    args = ap.parse_args()
    if args.server == "raw":
        if args.client != "h1":
            ap.error("--server raw uses the h1 client")
        uvloop.run(serve_raw(args.port, args.upstream))
        return
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
