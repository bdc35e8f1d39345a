"""The metering tests' stack (priced GPU pool, request log, an API-only alias) and their
load driver, shared by the single-process and `--workers` tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import openai

from tests.support.proxy import ProxyHandle
from tests.support.routing import KEY, hybrid_config
from tests.support.sim import SimHandle
from tests.support.stack import run_stack

USD_PER_GPU_HOUR = 2.5


def config(vllm: SimHandle, api: SimHandle, log: Path, **extra: Any) -> dict[str, Any]:
    """The hybrid stack's config priced at USD_PER_GPU_HOUR, with a request log (one line
    per UsageEvent) and an API-only alias."""
    return hybrid_config(
        vllm,
        api,
        local_backend={"max_concurrency": 64},
        models={"frontier": {"targets": [{"backend": "api", "model": "gpt-4o-mini"}]}},
        gpu_pools={"h100": {"gpus": 1, "billing": "rental", "usd_per_gpu_hour": USD_PER_GPU_HOUR}},
        request_log={"path": str(log)},
        **extra,
    )


@contextlib.contextmanager
def metering_stack(
    tmp_path: Path, local_args: Sequence[str] = (), **kw: Any
) -> Iterator[tuple[ProxyHandle, SimHandle, SimHandle, Path]]:
    """Simulators at their default speeds (or `local_args`) behind a proxy running `config`;
    also yields the request log's path."""
    log = tmp_path / "requests.jsonl"
    with run_stack(
        tmp_path, lambda v, a: config(v, a, log), local_args=local_args, api_args=(), **kw
    ) as s:
        yield s.proxy, s.local, s.api, log


async def drive(
    base_url: str | list[str],
    jobs: list[dict[str, Any]],
    concurrency: int,
    keepalive: bool = True,
    key: str = KEY,
    return_exceptions: bool = False,
) -> list[Any]:
    """Send `jobs` at `concurrency`; without keep-alive every request is a new connection
    (so several worker processes sharing a listening socket each get some). Several base
    URLs (replicas): job i goes to URL i % len(urls)."""
    urls = [base_url] if isinstance(base_url, str) else base_url
    http = (
        None
        if keepalive
        else httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=0), timeout=60)
    )
    clients = [
        openai.AsyncOpenAI(base_url=u, api_key=key, max_retries=0, http_client=http, timeout=60)
        for u in urls
    ]
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int, job: dict[str, Any]) -> Any:
        client = clients[i % len(clients)]
        async with sem:
            if job.pop("_stream", False):
                stream = await client.chat.completions.create(
                    **job, stream=True, stream_options={"include_usage": True}
                )
                return [c async for c in stream][-1]
            return await client.chat.completions.create(**job)

    try:
        return await asyncio.gather(
            *(one(i, dict(j)) for i, j in enumerate(jobs)), return_exceptions=return_exceptions
        )
    finally:
        for c in clients:
            await c.close()
