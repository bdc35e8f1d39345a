"""The Backend contract: send(path, body) → an upstream response, or UpstreamFailure."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol


class UpstreamFailure(Exception):
    """The upstream could not be reached or gave no response in time (before the first byte)."""

    def __init__(self, backend: str, reason: str, detail: str = "") -> None:
        super().__init__(f"backend '{backend}': {reason}" + (f" ({detail})" if detail else ""))
        self.backend = backend
        self.reason = reason  # connect_error | timeout | protocol_error
        self.detail = detail


class UpstreamRefused(ValueError):
    """The upstream's answer breaks a rule of ours (over a size cap, a protocol switch, an
    encoding we cannot decode, bytes no request asked for): the message says which, names
    no secret, and is fit to show the client."""


class UpstreamResponse(Protocol):
    status: int
    headers: list[tuple[bytes, bytes]]
    """Headers worth passing to the client (content-type, request id, rate limits)."""

    @property
    def complete(self) -> bool:
        """The whole answer has arrived and been handed on: a relay can send its end at once."""
        ...

    async def read(self) -> bytes: ...

    def chunks(self) -> AsyncIterator[bytes]: ...

    def close(self) -> None: ...


class Backend(Protocol):
    name: str

    async def start(self) -> None: ...

    async def send(
        self, path: str, body: bytes, stream: bool, extra: bytes = b""
    ) -> UpstreamResponse:
        """`extra`: header lines of this request only, given to backends that speak
        Anthropic's dialect (an Anthropic client's anthropic-version/-beta)."""
        ...

    async def close(self) -> None: ...
