"""What an unauthenticated caller learns from the operator surface: the readiness status,
nothing about aliases, backends, breakers or upstream models; and no answer built from
the client's own Host header."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import httpx

from tests.support.proxy import run_proxy
from tests.support.sim import run_simulator

KEY = "sk-exposure-client-key-1234"
ADMIN = "exposure-admin-key-98765"
SECRET_NAMES = ("secret-alias", "hidden-backend", "internal-upstream-model")


def _config(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "auth": {"admin_key": ADMIN, "keys": [{"key": KEY}]},
        "backends": {"hidden-backend": {"base_url": url, "api_key": "sk-upstream-abcdefgh"}},
        "models": {
            "secret-alias": {
                "targets": [{"backend": "hidden-backend", "model": "internal-upstream-model"}]
            }
        },
        "prices": {"internal-upstream-model": {"input": 1, "output": 1}},
        **extra,
    }


def test_readiness_details_need_the_admin_key(tmp_path: Path) -> None:
    with run_simulator(tmp_path, "api") as api, run_proxy(tmp_path, _config(api.base_url)) as p:
        for headers in ({}, {"Authorization": f"Bearer {KEY}"}, {"Authorization": "Bearer x"}):
            r = httpx.get(f"{p.url}/health/ready", headers=headers, timeout=5)
            assert r.status_code in (200, 503)
            assert set(r.json()) == {"status", "ready"}
            for name in SECRET_NAMES:
                assert name not in r.text
        full = p.ready(ADMIN)
        assert full.json()["backends"] == {
            "hidden-backend": full.json()["backends"]["hidden-backend"]
        }
        assert "secret-alias" in full.json()["aliases"]
    with (
        run_simulator(tmp_path, "api", name="pub") as api,
        run_proxy(
            tmp_path, _config(api.base_url, health={"public_details": True}), name="pub"
        ) as p,
    ):
        r = httpx.get(f"{p.url}/health/ready", timeout=5)
        assert "hidden-backend" in r.json()["backends"]


def test_trailing_slash_is_no_redirect_built_from_the_host_header(tmp_path: Path) -> None:
    with run_simulator(tmp_path, "api") as api, run_proxy(tmp_path, _config(api.base_url)) as p:
        for path in ("/health/ready/", "/v1/models/", "/metrics/", "/costs/report/"):
            with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
                s.sendall(
                    f"GET {path} HTTP/1.1\r\nHost: evil.example\r\n"
                    f"Authorization: Bearer {ADMIN}\r\nConnection: close\r\n\r\n".encode()
                )
                answer = b""
                while chunk := s.recv(65536):
                    answer += chunk
            head = answer.split(b"\r\n\r\n", 1)[0].lower()
            assert b"evil.example" not in answer, (path, answer[:300])
            assert b"location:" not in head
            assert not head.startswith((b"http/1.1 30",)), (path, head)
