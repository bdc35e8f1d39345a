"""`type: openai` backends: any OpenAI-compatible server (vLLM, llama.cpp, OpenAI itself).

The body goes through as bytes, over the lean keep-alive client in `h1client` (measured in
DESIGN.md and bench/RESULTS.md: httpx's default transport caps a passthrough near 1,000 req/s
on one core; aiohttp was a third of the proxy's CPU per request). Health checks and engine
metrics, off the request path, use aiohttp.
"""

from __future__ import annotations

from collections.abc import Sequence

import aiohttp

from proxy.backends.base import UpstreamFailure
from proxy.backends.h1client import H1Pool, H1Response, UpstreamClosed
from proxy.config import Backend as BackendConfig

# Upstream response headers the client may rely on; everything else stays here.
_PASS_EXACT = frozenset(
    {
        b"content-type",
        b"retry-after",
        b"x-request-id",
        b"openai-processing-ms",
        b"openai-version",
        b"retry-after-ms",
    }
)
_PASS_PREFIX = (b"x-ratelimit-",)


def passthrough_headers(raw: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    out = []
    for name, value in raw:
        lname = name.lower()
        if lname in _PASS_EXACT or lname.startswith(_PASS_PREFIX):
            out.append((lname, value))
    return out


class OpenAIBackend:
    def __init__(self, name: str, cfg: BackendConfig) -> None:
        self.name = name
        self.cfg = cfg
        assert cfg.base_url is not None
        self.base_url = cfg.base_url.rstrip("/")
        headers = {"Content-Type": "application/json", "Accept-Encoding": "identity"}
        if cfg.api_key is not None:
            headers["Authorization"] = f"Bearer {cfg.api_key.get_secret_value()}"
        headers.update(cfg.headers)
        self._headers = headers
        self._pool = H1Pool(
            self.base_url,
            headers,
            connect_timeout_s=cfg.timeouts.connect_s,
            read_timeout_s=cfg.timeouts.read_s,
            max_idle=cfg.max_concurrency,
        )
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Nothing to open ahead: connections are made on first use and kept alive."""

    async def send(self, path: str, body: bytes, stream: bool) -> H1Response:
        try:
            resp = await self._pool.request("POST", path, body)
        except TimeoutError as exc:
            raise UpstreamFailure(self.name, "timeout", "no response in time") from exc
        except UpstreamClosed as exc:
            raise UpstreamFailure(self.name, "connect_error", "server disconnected") from exc
        except OSError as exc:
            raise UpstreamFailure(
                self.name, "connect_error", exc.strerror or type(exc).__name__
            ) from exc
        except ValueError as exc:
            raise UpstreamFailure(self.name, "protocol_error", str(exc)) from exc
        resp.headers = passthrough_headers(resp.raw_headers)
        return resp

    async def get(self, path: str, timeout_s: float) -> tuple[int, bytes]:
        """A small GET for health checks and engine metrics (never on the request path)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self._headers, auto_decompress=False, skip_auto_headers=("User-Agent",)
            )
        url = path if path.startswith("http") else self.root_url + path
        async with self._session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as r:
            return r.status, await r.read()

    @property
    def root_url(self) -> str:
        """The server root: base_url without its `/v1` (where vLLM serves /health, /metrics)."""
        return self.base_url[:-3] if self.base_url.endswith("/v1") else self.base_url

    async def close(self) -> None:
        self._pool.close()
        if self._session is not None:
            await self._session.close()
            self._session = None
