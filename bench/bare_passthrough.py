"""The floor for a Python proxy: uvicorn + raw ASGI + one aiohttp session, nothing else.

Run it beside `hybridgate serve` against the same upstream to see what hybridgate's own
features (auth, routing, metering, metrics) cost on top of moving the bytes:

    python bench/bare_passthrough.py --port 14001 --upstream http://127.0.0.1:18000/v1
"""

from __future__ import annotations

import argparse
from typing import Any

import aiohttp
import uvicorn


def make_app(upstream: str) -> Any:
    session: aiohttp.ClientSession | None = None

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
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        more = True
        while more:
            msg = await receive()
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
        assert session is not None
        async with session.post(
            upstream + "/chat/completions", data=body, headers={"Content-Type": "application/json"}
        ) as r:
            data = await r.read()
        await send(
            {
                "type": "http.response.start",
                "status": r.status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": data})

    return app


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=14001)
    ap.add_argument("--upstream", default="http://127.0.0.1:18000/v1")
    args = ap.parse_args()
    uvicorn.run(
        make_app(args.upstream),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
