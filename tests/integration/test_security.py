"""Operator surfaces and secrets: who may read what, and what never leaks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.proxy import run_proxy
from tests.support.sim import run_simulator

CLIENT_KEY = "sk-client-key-31337-abcdef"
ADMIN_KEY = "admin-key-zz-998877-qwerty"
UPSTREAM_KEY = "sk-upstream-real-key-4242"
METRICS_TOKEN = "metrics-token-5566"


def base(api_url: str, **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "auth": {"admin_key": ADMIN_KEY, "keys": [{"key": CLIENT_KEY, "tenant": "t"}]},
        "backends": {"api": {"type": "openai", "base_url": api_url, "api_key": UPSTREAM_KEY}},
        "models": {"frontier": {"targets": [{"backend": "api", "model": "gpt-4o-mini"}]}},
    }
    cfg.update(extra)
    return cfg


def test_metrics_token_and_networks(tmp_path: Path) -> None:
    with run_simulator(tmp_path, "api") as api:
        with run_proxy(
            tmp_path, base(api.base_url, metrics={"token": METRICS_TOKEN}), name="tok"
        ) as p:
            assert httpx.get(f"{p.url}/metrics").status_code == 401
            assert (
                httpx.get(
                    f"{p.url}/metrics", headers={"Authorization": f"Bearer {CLIENT_KEY}"}
                ).status_code
                == 401
            )
            r = httpx.get(f"{p.url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
            assert r.status_code == 200 and "hybridgate_requests_total" in r.text
        with run_proxy(
            tmp_path, base(api.base_url, metrics={"allow_networks": ["10.0.0.0/8"]}), name="net"
        ) as p:
            r = httpx.get(f"{p.url}/metrics")
            assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        with run_proxy(
            tmp_path, base(api.base_url, metrics={"allow_networks": ["127.0.0.0/8"]}), name="lo"
        ) as p:
            assert httpx.get(f"{p.url}/metrics").status_code == 200


def test_upstream_auth_failure_names_the_backend_not_the_key(tmp_path: Path) -> None:
    with (
        run_simulator(tmp_path, "api", args=["--require-key", "sk-some-other-key"]) as api,
        run_proxy(tmp_path, base(api.base_url)) as p,
    ):
        r = httpx.post(
            f"{p.base_url}/chat/completions",
            timeout=10,
            headers={"Authorization": f"Bearer {CLIENT_KEY}"},
            json={"model": "frontier", "messages": [{"role": "user", "content": "x"}]},
        )
        assert r.status_code == 502
        err = r.json()["error"]
        assert err["code"] == "upstream_auth_error" and "'api'" in err["message"]
        for secret in (UPSTREAM_KEY, CLIENT_KEY, ADMIN_KEY):
            assert secret not in r.text
            assert secret not in p.metrics_text()
            assert secret not in p.proc.log_text()


@pytest.mark.parametrize("header", ["Authorization", "api-key", "x-api-key"])
def test_keys_accepted_in_the_headers_sdks_use(tmp_path: Path, header: str) -> None:
    with run_simulator(tmp_path, "api") as api, run_proxy(tmp_path, base(api.base_url)) as p:
        value = f"Bearer {CLIENT_KEY}" if header == "Authorization" else CLIENT_KEY
        r = httpx.post(
            f"{p.base_url}/chat/completions",
            timeout=10,
            headers={header: value},
            json={"model": "frontier", "messages": [{"role": "user", "content": "x"}]},
        )
        assert r.status_code == 200
