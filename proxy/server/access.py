"""Who may read /metrics: everyone (Prometheus' convention), or a token, or some networks.

Metrics carry no secrets, but they do carry spend per tenant; an operator can restrict
them with `metrics: {token: ..., allow_networks: [10.0.0.0/8, ...]}`. With both set, a
request must satisfy both.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Mapping

from proxy.config import MetricsAccess
from proxy.request.auth import bearer_token
from proxy.request.errors import ProxyError


class MetricsGuard:
    def __init__(self, access: MetricsAccess) -> None:
        # Digests, as in auth.py: equal lengths, so the comparison's time says nothing at all.
        token = access.token
        self._token = hashlib.sha256(token.get_secret_value().encode()).digest() if token else None
        self._networks = [ipaddress.ip_network(n, strict=False) for n in access.allow_networks]

    def check(self, headers: Mapping[bytes, bytes], client_host: str | None) -> None:
        if self._networks:
            try:
                addr = ipaddress.ip_address(client_host or "")
            except ValueError:
                addr = None
            if addr is None or not any(addr in net for net in self._networks):
                raise ProxyError(403, "Metrics are not served to this address.", code="forbidden")
        if self._token is not None:
            token = bearer_token(dict(headers))
            digest = hashlib.sha256(token).digest() if token is not None else b""
            if not hmac.compare_digest(digest, self._token):
                raise ProxyError(401, "Metrics need the metrics token.", code="invalid_api_key")
