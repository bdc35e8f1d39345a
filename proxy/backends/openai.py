"""`type: openai` backends: any OpenAI-compatible server (vLLM, llama.cpp, OpenAI itself).

The body goes through as bytes. aiohttp moves them: measured in DESIGN.md, httpx's
default transport caps a passthrough near 1,000 req/s on one core, aiohttp near 11,000.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp

from proxy.backends.base import UpstreamFailure
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
# Backpressure for streams: aiohttp stops reading the upstream socket once twice this is
# buffered, and the relay sends at most this much at a time, so a client that stops
# reading holds ~0.25 MB of proxy memory, not ~1.3 MB (tests/integration/test_backpressure.py).
_READ_CHUNK = 16 * 1024


def passthrough_headers(raw: tuple[tuple[bytes, bytes], ...]) -> list[tuple[bytes, bytes]]:
    out = []
    for name, value in raw:
        lname = name.lower()
        if lname in _PASS_EXACT or lname.startswith(_PASS_PREFIX):
            out.append((lname, value))
    return out


class AiohttpUpstream:
    """One upstream response; `close()` drops the connection (cancels the upstream work)."""

    __slots__ = ("_resp", "headers", "status")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status = resp.status
        self.headers = passthrough_headers(resp.raw_headers)

    async def read(self) -> bytes:
        try:
            return await self._resp.read()
        except TimeoutError:
            raise
        except aiohttp.ClientError as exc:  # the body broke off: an OSError, as for sockets
            raise ConnectionError(f"upstream body broke off ({type(exc).__name__})") from exc
        finally:
            self._resp.release()

    async def chunks(self) -> AsyncIterator[bytes]:
        content = self._resp.content
        while True:
            try:
                data = await content.read(_READ_CHUNK)
            except TimeoutError:
                raise
            except aiohttp.ClientError as exc:
                raise ConnectionError(f"upstream stream broke off ({type(exc).__name__})") from exc
            if not data:
                return
            yield data

    def close(self) -> None:
        self._resp.close()

    def release(self) -> None:
        self._resp.release()


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
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=cfg.timeouts.connect_s, sock_read=cfg.timeouts.read_s
        )

    async def start(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self.cfg.max_concurrency,
                limit_per_host=0,
                keepalive_timeout=30,
                ttl_dns_cache=300,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                headers=self._headers,
                auto_decompress=False,
                skip_auto_headers=("User-Agent",),
                connector_owner=True,
            )

    async def send(self, path: str, body: bytes, stream: bool) -> AiohttpUpstream:
        if self._session is None:
            await self.start()
        assert self._session is not None
        try:
            resp = await self._session.post(
                self.base_url + path, data=body, read_bufsize=_READ_CHUNK if stream else 2**16
            )
        except TimeoutError as exc:
            raise UpstreamFailure(self.name, "timeout", "no response in time") from exc
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamFailure(self.name, "connect_error", exc.strerror or "refused") from exc
        except (
            aiohttp.ServerDisconnectedError,
            aiohttp.ClientOSError,
            aiohttp.ClientPayloadError,
        ) as exc:
            raise UpstreamFailure(self.name, "connect_error", type(exc).__name__) from exc
        except aiohttp.ClientError as exc:
            raise UpstreamFailure(self.name, "protocol_error", type(exc).__name__) from exc
        return AiohttpUpstream(resp)

    async def get(self, path: str, timeout_s: float) -> tuple[int, bytes]:
        """A small GET for health checks and engine metrics (never on the request path)."""
        if self._session is None:
            await self.start()
        assert self._session is not None
        url = path if path.startswith("http") else self.root_url + path
        async with self._session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as r:
            return r.status, await r.read()

    @property
    def root_url(self) -> str:
        """The server root: base_url without its `/v1` (where vLLM serves /health, /metrics)."""
        return self.base_url[:-3] if self.base_url.endswith("/v1") else self.base_url

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
