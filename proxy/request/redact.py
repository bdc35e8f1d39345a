"""Configured secrets, masked out of upstream text before it reaches a client or a log.

An upstream may quote the credentials it was sent (the `Authorization` header, a key in
its error message) on any status, not only 401/403. Everything the proxy relays from an
upstream error goes through `Redactor.bytes` first. Successful answers are not scanned
(the hot path): only error bodies and streamed error events are.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from proxy.config import Config

MIN_SECRET_LEN = 8
"""Shorter values are not masked: replacing a 3-character string everywhere would mangle
ordinary text. Real keys are far longer; docs/security.md says so."""

_SECRET_HEADER_HINTS = ("authorization", "key", "token", "secret", "password")


def mask(secret: str) -> str:
    """What a secret becomes: `sk-...REDACTED` for OpenAI-style keys, else `...REDACTED`.
    Nothing of the secret beyond a well-known `sk-` prefix is kept."""
    return "sk-...REDACTED" if secret.startswith("sk-") else "...REDACTED"


def config_secrets(config: Config) -> list[str]:
    """Every secret a config holds: backend keys and credential headers, client keys,
    the admin key, the metrics token and the state store's password."""
    out: list[str] = []
    for b in config.backends.values():
        if b.api_key is not None:
            out.append(b.api_key.get_secret_value())
        for name, value in b.headers.items():
            if any(h in name.lower() for h in _SECRET_HEADER_HINTS):
                out.append(value)
                scheme, _, token = value.partition(" ")
                if token and scheme.lower() in ("bearer", "basic", "token"):
                    out.append(token.strip())
    if config.auth.admin_key is not None:
        out.append(config.auth.admin_key.get_secret_value())
    out.extend(k.key.get_secret_value() for k in config.auth.keys)
    if config.metrics.token is not None:
        out.append(config.metrics.token.get_secret_value())
    password = urlsplit(config.state.url).password
    if password:
        out.append(password)
    return out


class Redactor:
    """Replaces every configured secret in a piece of text; longest secrets first, so a
    key that contains another is masked whole."""

    __slots__ = ("_pairs",)

    def __init__(self, secrets: Iterable[str]) -> None:
        unique = sorted({s for s in secrets if len(s) >= MIN_SECRET_LEN}, key=len, reverse=True)
        self._pairs = [(s.encode(), mask(s).encode()) for s in unique]

    @classmethod
    def from_config(cls, config: Config) -> Redactor:
        return cls(config_secrets(config))

    def __bool__(self) -> bool:
        return bool(self._pairs)

    def bytes(self, data: bytes) -> bytes:
        for secret, masked in self._pairs:
            if secret in data:
                data = data.replace(secret, masked)
        return data

    def text(self, data: str) -> str:
        return self.bytes(data.encode("utf-8", "surrogatepass")).decode("utf-8", "surrogatepass")


NO_SECRETS = Redactor(())
