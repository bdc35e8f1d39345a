"""`type: openai` backends: any OpenAI-compatible server (vLLM, llama.cpp, OpenAI itself).

The body goes through as bytes, over the lean keep-alive client in `h1client` (measured in
bench/RESULTS.md: httpx's default transport caps a passthrough near 1,000 req/s
on one core; aiohttp was a third of the proxy's CPU per request). Health checks and engine
metrics share the same pool: a second client's idle keep-alive connections would each hold
one of a thread-per-connection server's workers (llama.cpp's) and starve the requests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from proxy.backends.base import UpstreamFailure
from proxy.backends.h1client import Caps, H1Pool, H1Response, UpstreamClosed
from proxy.config import Backend as BackendConfig
from proxy.request.timeouts import deadline_in

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


def passthrough_headers(
    raw: Sequence[tuple[bytes, bytes]],
    exact: frozenset[bytes] = _PASS_EXACT,
    prefix: tuple[bytes, ...] = _PASS_PREFIX,
) -> list[tuple[bytes, bytes]]:
    """The answer headers (lower-cased) a client may rely on: these names and prefixes."""
    out = []
    for name, value in raw:
        lname = name.lower()
        if lname in exact or lname.startswith(prefix):
            out.append((lname, value))
    return out


class OpenAIBackend:
    # Which of the upstream's answer headers reach the client (a dialect's own: Anthropic's
    # backend has its list).
    passthrough: Callable[[Sequence[tuple[bytes, bytes]]], list[tuple[bytes, bytes]]] = (
        staticmethod(passthrough_headers)
    )

    def __init__(self, name: str, cfg: BackendConfig, caps: tuple[int, int, int] = Caps()) -> None:
        self.name = name
        self.cfg = cfg
        self._caps = Caps(*caps)
        assert cfg.base_url is not None
        self.base_url = cfg.base_url.rstrip("/")
        headers = self._auth_headers()
        headers.update(cfg.headers)
        self._headers = headers
        url = urlsplit(self.base_url)
        self._path_prefix = url.path.rstrip("/")
        self._pool = self._new_pool(self.base_url)
        # By origin: the backend's own, and a metrics_url's if it lives elsewhere.
        self._pools = {f"{url.scheme}://{url.netloc}": self._pool}

    def _auth_headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept-Encoding": "identity"}
        if self.cfg.api_key is not None:
            headers["Authorization"] = f"Bearer {self.cfg.api_key.get_secret_value()}"
        return headers

    def _new_pool(self, origin: str) -> H1Pool:
        return H1Pool(
            origin,
            self._headers,
            connect_timeout_s=self.cfg.timeouts.connect_s,
            read_timeout_s=self.cfg.timeouts.read_s,
            max_idle=self.cfg.max_concurrency,
            caps=self._caps,
        )

    async def start(self) -> None:
        """Nothing to open ahead: connections are made on first use and kept alive."""

    async def send(self, path: str, body: bytes, stream: bool, extra: bytes = b"") -> H1Response:
        """`extra`: header lines of this request only (an Anthropic client's
        anthropic-version/anthropic-beta, for an engine that `speaks` anthropic)."""
        try:
            resp = await self._pool.request("POST", self._path_prefix + path, body, extra)
        except (TimeoutError, OSError, ValueError) as exc:
            raise self._failure(exc) from exc
        resp.headers = self.passthrough(resp.raw_headers)
        return resp

    async def call(self, method: str, path: str, body: bytes = b"") -> H1Response:
        """Any method on a one-off path (a stored response's GET, DELETE or cancel at the
        backend that holds it): not the request path's hot `send`."""
        try:
            resp = await self._pool.request_once(method, self._path_prefix + path, body)
        except (TimeoutError, OSError, ValueError) as exc:
            raise self._failure(exc) from exc
        resp.headers = self.passthrough(resp.raw_headers)
        return resp

    def _failure(self, exc: Exception) -> UpstreamFailure:
        if isinstance(exc, TimeoutError):
            return UpstreamFailure(self.name, "timeout", "no response in time")
        if isinstance(exc, UpstreamClosed):
            return UpstreamFailure(self.name, "connect_error", "server disconnected")
        if isinstance(exc, OSError):
            return UpstreamFailure(self.name, "connect_error", exc.strerror or type(exc).__name__)
        # malformed, or UpstreamRefused (over a cap, a 101, ...)
        return UpstreamFailure(self.name, "protocol_error", str(exc))

    async def get(self, path: str, timeout_s: float) -> tuple[int, bytes]:
        """A small GET for health checks and engine metrics (never on the request path)."""
        url = urlsplit(path if path.startswith("http") else self.root_url + path)
        origin = f"{url.scheme}://{url.netloc}"
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = self._new_pool(origin)
        target = (url.path or "/") + (f"?{url.query}" if url.query else "")
        async with deadline_in(timeout_s):
            resp = await pool.request("GET", target)
            return resp.status, await resp.read()

    @property
    def root_url(self) -> str:
        """The server root: base_url without its `/v1` (where vLLM serves /health, /metrics)."""
        return self.base_url[:-3] if self.base_url.endswith("/v1") else self.base_url

    async def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
