"""Bearer keys → tenants. Keys are held only as SHA-256 digests and compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from proxy.config import Config
from proxy.request.concurrency import key_counter, tenant_counter
from proxy.request.errors import ProxyError


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the tenant label and the key's config name (never the key itself).

    `caps`: the concurrency caps this caller counts against, as
    `(counter, limit, what)` (proxy/request/concurrency.py); empty when uncapped, so the request
    path tests one attribute."""

    tenant: str
    key_name: str
    rpm: int | None = None
    tpm: int | None = None
    caps: tuple[tuple[str, int, str], ...] = ()


ANONYMOUS = Principal(tenant="default", key_name="anonymous")


def _digest(secret: str | bytes) -> bytes:
    data = secret.encode() if isinstance(secret, str) else secret
    return hashlib.sha256(data).digest()


def bearer_token(headers: dict[bytes, bytes]) -> bytes | None:
    """The presented key: `Authorization: Bearer K`, or `api-key` / `x-api-key` as SDKs send."""
    auth = headers.get(b"authorization")
    if auth is not None:
        scheme, _, token = auth.partition(b" ")
        if scheme.lower() == b"bearer" and token.strip():
            return token.strip()
        return None
    return headers.get(b"api-key") or headers.get(b"x-api-key")


def _tenant_cap(config: Config, tenant: str) -> tuple[tuple[str, int, str], ...]:
    spec = config.tenants.get(tenant)
    if spec is None or spec.max_concurrency is None:
        return ()
    return ((tenant_counter(tenant), spec.max_concurrency, f"tenant '{tenant}'"),)


class Authenticator:
    """Resolves client keys and checks the admin key.

    The dict is keyed by SHA-256 of the key, so a lookup's timing says nothing useful
    about the key; the final comparison uses hmac.compare_digest.
    """

    def __init__(self, config: Config) -> None:
        self._by_digest: dict[bytes, tuple[bytes, Principal]] = {}
        for i, entry in enumerate(config.auth.keys):
            digest = _digest(entry.key.get_secret_value())
            name = entry.name or f"key{i}"
            caps = _tenant_cap(config, entry.tenant)
            if entry.max_concurrency is not None:
                caps = ((key_counter(name), entry.max_concurrency, f"key '{name}'"), *caps)
            self._by_digest[digest] = (
                digest,
                Principal(
                    tenant=entry.tenant,
                    key_name=name,
                    rpm=entry.rpm,
                    tpm=entry.tpm,
                    caps=caps,
                ),
            )
        admin = config.auth.admin_key
        self._admin_digest = _digest(admin.get_secret_value()) if admin else None
        self.open = not self._by_digest
        caps = _tenant_cap(config, ANONYMOUS.tenant)
        self._anonymous = Principal(ANONYMOUS.tenant, ANONYMOUS.key_name, caps=caps)

    def client(self, headers: dict[bytes, bytes]) -> Principal:
        if self.open:
            return self._anonymous
        token = bearer_token(headers)
        if token is None:
            raise ProxyError(
                401,
                "Missing API key. Send it as 'Authorization: Bearer <key>'.",
                code="invalid_api_key",
            )
        digest = _digest(token)
        found = self._by_digest.get(digest)
        if found is None or not hmac.compare_digest(digest, found[0]):
            raise ProxyError(401, "Incorrect API key provided.", code="invalid_api_key")
        return found[1]

    def is_admin(self, headers: dict[bytes, bytes]) -> bool:
        if self._admin_digest is None:
            return False
        token = bearer_token(headers)
        return token is not None and hmac.compare_digest(_digest(token), self._admin_digest)

    def require_admin(self, headers: dict[bytes, bytes]) -> None:
        if self._admin_digest is None:
            raise ProxyError(
                403, "This endpoint needs auth.admin_key to be configured.", code="admin_disabled"
            )
        if not self.is_admin(headers):
            raise ProxyError(401, "This endpoint needs the admin key.", code="invalid_api_key")
