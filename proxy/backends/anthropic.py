"""`type: anthropic` backends: Anthropic's Messages API (Claude), natively over h1client.

Speaks the `anthropic-messages` dialect only: an Anthropic client's body goes through as
bytes, an OpenAI chat client's is translated on the request path (proxy/request/dialect.py).
`POST {base_url}/v1/messages` with `x-api-key` and `anthropic-version` (the client's own
`anthropic-version` / `anthropic-beta` when an Anthropic client sent them).
"""

from __future__ import annotations

from collections.abc import Sequence

from proxy.backends.h1client import Caps, H1Response
from proxy.backends.openai import OpenAIBackend
from proxy.backends.openai import passthrough_headers as openai_passthrough
from proxy.config import Backend as BackendConfig

_PASS_EXACT = frozenset(
    {b"content-type", b"retry-after", b"request-id", b"x-request-id", b"anthropic-organization-id"}
)
_PASS_PREFIX = (b"anthropic-ratelimit-", b"x-ratelimit-")


def passthrough_headers(raw: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return openai_passthrough(raw, _PASS_EXACT, _PASS_PREFIX)


class AnthropicBackend(OpenAIBackend):
    """The pool, health GETs, sending and close of OpenAIBackend; Anthropic's auth, paths,
    version header and answer headers."""

    passthrough = staticmethod(passthrough_headers)

    def __init__(self, name: str, cfg: BackendConfig, caps: tuple[int, int, int] = Caps()) -> None:
        super().__init__(name, cfg, caps)
        # Anthropic's API lives under /v1; a base_url that already ends there keeps it.
        if not self._path_prefix.endswith("/v1"):
            self._path_prefix += "/v1"
        self._version = b"anthropic-version: " + cfg.anthropic_version.encode("latin-1") + b"\r\n"

    def _auth_headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept-Encoding": "identity"}
        if self.cfg.api_key is not None:
            headers["x-api-key"] = self.cfg.api_key.get_secret_value()
        return headers

    async def send(self, path: str, body: bytes, stream: bool, extra: bytes = b"") -> H1Response:
        """`extra`: the client's `anthropic-version`/`anthropic-beta` lines, if any (then the
        configured version is not sent)."""
        if b"anthropic-version:" not in extra:
            extra = self._version + extra
        return await super().send(path, body, stream, extra)
