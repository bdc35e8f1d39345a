"""Operator surfaces and key handling: who may reach what, and where keys never show up.

Every admin route (each path the OpenAPI document marks `adminKey`, which must cover
/admin/* and /costs/*) refuses no key, client keys and near-miss keys, and serves the
admin key in each header form SDKs use. The dashboard page is static and public: it
holds no data and draws only what /costs/report returns to the admin key typed into it.
After a run with failing auth, no key (real, wrong or upstream) appears in the proxy's
log, its request log, /metrics or any error body. Keys are compared in constant time.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.proxy import ProxyHandle
from tests.support.servers import REPO_ROOT
from tests.support.sim import SimHandle
from tests.support.stack import run_stack

CLIENT_KEY = "sk-opsurf-client-8c1f2a90"
OTHER_CLIENT_KEY = "sk-opsurf-client-second-7731"
ADMIN_KEY = "adm-opsurf-5d9e41b7c3"
METRICS_TOKEN = "mtok-opsurf-0a0a42"
UPSTREAM_KEY = "sk-opsurf-upstream-31337"
VLLM_KEY = "sk-opsurf-vllm-right-55"
VLLM_WRONG_KEY = "sk-opsurf-vllm-wrong-66"  # what the proxy is configured to send
# Keys a client might present by mistake: near misses of the real ones.
WRONG_KEYS = [
    "sk-opsurf-client-8c1f2a91",
    ADMIN_KEY + "0",
    ADMIN_KEY[:-1],
    ADMIN_KEY.upper(),
    "sk-opsurf-guess-" + "z" * 200,
]
SECRETS = [CLIENT_KEY, OTHER_CLIENT_KEY, ADMIN_KEY, METRICS_TOKEN, UPSTREAM_KEY, VLLM_KEY,
           VLLM_WRONG_KEY, *WRONG_KEYS]  # fmt: skip
NAMES = ["team-ops", "team-two", "api", "gpu", "frontier", "local"]  # config names


def cfg(api: SimHandle, vllm: SimHandle, request_log: Path) -> dict[str, Any]:
    return {
        "auth": {
            "admin_key": ADMIN_KEY,
            "keys": [
                {"key": CLIENT_KEY, "tenant": "team-ops", "name": "ops"},
                {"key": OTHER_CLIENT_KEY, "tenant": "team-two", "name": "two"},
            ],
        },
        "metrics": {"token": METRICS_TOKEN},
        "request_log": {"path": str(request_log)},
        "gpu_pools": {"h100": {"gpus": 1, "billing": "rental", "usd_per_gpu_hour": 2.0}},
        "backends": {
            "api": {"base_url": api.base_url, "api_key": UPSTREAM_KEY},
            "gpu": {"base_url": vllm.base_url, "pool": "h100", "api_key": VLLM_WRONG_KEY},
        },
        "models": {
            "frontier": {"targets": [{"backend": "api", "model": "gpt-4o-mini"}]},
            "local": {"targets": [{"backend": "gpu", "model": "sim-model"}]},
        },
        "health_checks": {"interval_s": 60},
    }


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyHandle]:
    tmp = tmp_path_factory.mktemp("opsurf")
    with run_stack(
        tmp,
        lambda vllm, api: cfg(api, vllm, tmp / "requests.jsonl"),
        local_args=["--require-key", VLLM_KEY, "--speed", "50"],
        api_args=["--require-key", UPSTREAM_KEY, "--ttft-ms", "0"],
    ) as s:
        yield s.proxy


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_error(r: httpx.Response, *statuses: int) -> dict[str, Any]:
    assert r.status_code in statuses, (r.status_code, r.text)
    err = r.json()["error"]
    assert {"message", "type", "param", "code"} <= set(err)
    for secret in SECRETS:
        assert secret not in r.text
    return err


def admin_operations(proxy: ProxyHandle) -> list[tuple[str, str]]:
    doc = httpx.get(f"{proxy.url}/openapi.json").json()
    ops = [
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if op.get("security") == [{"adminKey": []}]
    ]
    for path, item in doc["paths"].items():
        if path.startswith(("/admin/", "/costs/")):  # every operator route is declared admin
            assert all(op.get("security") == [{"adminKey": []}] for op in item.values()), path
    return ops


def test_every_admin_route_needs_the_admin_key(proxy: ProxyHandle) -> None:
    ops = admin_operations(proxy)
    assert {("GET", "/costs/report"), ("POST", "/admin/reload")} <= set(ops)
    with httpx.Client(base_url=proxy.url, timeout=30) as http:
        for method, path in ops:
            err = assert_error(http.request(method, path), 401)
            assert err["code"] == "invalid_api_key"
            for key in (CLIENT_KEY, OTHER_CLIENT_KEY):
                assert_error(http.request(method, path, headers=bearer(key)), 401, 403)
            for key in WRONG_KEYS:
                assert_error(http.request(method, path, headers=bearer(key)), 401)
            assert_error(http.request(method, path, headers={"Authorization": ADMIN_KEY}), 401)
            for headers in (bearer(ADMIN_KEY), {"api-key": ADMIN_KEY}, {"x-api-key": ADMIN_KEY}):
                r = http.request(method, path, headers=headers)
                assert r.status_code == 200, (method, path, r.text)
        # Unknown admin paths are not served to anyone.
        for headers in ({}, bearer(ADMIN_KEY)):
            assert_error(http.get("/admin/config", headers=headers), 404, 405)


def test_the_admin_key_is_not_a_client_key(proxy: ProxyHandle) -> None:
    with httpx.Client(base_url=proxy.base_url, timeout=30, headers=bearer(ADMIN_KEY)) as http:
        assert_error(http.get("/models"), 401)
        body = {"model": "frontier", "messages": [{"role": "user", "content": "hi"}]}
        assert_error(http.post("/chat/completions", json=body), 401)


def test_the_dashboard_page_holds_no_data(proxy: ProxyHandle) -> None:
    """The page and its assets are static: served without a key (a browser navigating
    cannot send one), they contain no figures, names or keys; the only data they fetch
    is /costs/report, with the admin key the user types in."""
    page = httpx.get(f"{proxy.url}/dashboard")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    sources = [page.text]
    for asset in re.findall(r'(?:src|href)="/dashboard/([\w.]+)"', page.text):
        r = httpx.get(f"{proxy.url}/dashboard/{asset}")
        assert r.status_code == 200
        sources.append(r.text)
    assert len(sources) >= 3  # the page, its script(s) and style
    for text in sources:
        for value in [*SECRETS, *NAMES]:
            assert f'"{value}"' not in text and f">{value}<" not in text, value
    fetched = {u for text in sources for u in re.findall(r"fetch\(\s*[`'\"]([^`'\"?$]+)", text)}
    assert fetched == {"/costs/report"}
    assert_error(httpx.get(f"{proxy.url}/costs/report"), 401)


def test_upstream_401_from_a_self_hosted_backend_names_it_not_its_key(
    proxy: ProxyHandle,
) -> None:
    r = httpx.post(
        f"{proxy.base_url}/chat/completions",
        headers=bearer(CLIENT_KEY),
        json={"model": "local", "max_tokens": 3, "messages": [{"role": "user", "content": "x"}]},
        timeout=30,
    )
    err = assert_error(r, 502)
    assert err["code"] == "upstream_auth_error" and "'gpu'" in err["message"]


def test_keys_never_in_logs_metrics_or_errors(proxy: ProxyHandle, tmp_path: Path) -> None:
    """A run with failing auth everywhere, then every secret is looked for everywhere."""
    chat = {"model": "frontier", "max_tokens": 3, "messages": [{"role": "user", "content": "x"}]}
    with httpx.Client(base_url=proxy.url, timeout=30) as http:
        for key in (*WRONG_KEYS, ADMIN_KEY, METRICS_TOKEN, UPSTREAM_KEY):
            for headers in (bearer(key), {"api-key": key}, {"x-api-key": key}):
                assert_error(http.post("/v1/chat/completions", json=chat, headers=headers), 401)
                assert_error(http.get("/v1/models", headers=headers), 401)
            if key != METRICS_TOKEN:
                assert_error(http.get("/metrics", headers=bearer(key)), 401)
        for key in (CLIENT_KEY, *WRONG_KEYS):
            assert_error(http.get("/costs/report", headers=bearer(key)), 401)
            assert_error(http.post("/admin/reload", headers=bearer(key)), 401)
        # Keys where no key belongs: the URL and the body.
        r = http.post(f"/v1/chat/completions?api_key={CLIENT_KEY}", json={**chat, "user": ""})
        assert_error(r, 401)
        r = http.post("/v1/chat/completions", json={**chat, "model": ADMIN_KEY},
                      headers=bearer(CLIENT_KEY))  # fmt: skip
        assert r.status_code == 404  # names the unknown model: what the client sent itself
        # Successful calls, so the request log and metrics have something in them.
        for key in (CLIENT_KEY, OTHER_CLIENT_KEY):
            assert (
                http.post("/v1/chat/completions", json=chat, headers=bearer(key)).status_code == 200
            )
        assert http.post("/admin/reload", headers=bearer(ADMIN_KEY)).status_code == 200
        metrics = http.get("/metrics", headers=bearer(METRICS_TOKEN))
        assert metrics.status_code == 200 and "hybridgate_requests_total" in metrics.text
    request_log = next(Path(proxy.config_path).parent.glob("requests.jsonl"))
    assert '"key_name":"ops"' in request_log.read_text().replace(" ", "")
    places = {
        "proxy log": proxy.proc.log_text(),
        "request log": request_log.read_text(),
        "metrics": metrics.text,
    }
    for place, text in places.items():
        for secret in SECRETS:
            assert secret not in text, (secret, place)
            assert secret[:12] + "..." not in text  # nor an abbreviation that gives it away


# Modules where keys are checked: every comparison there must be a digest comparison.
KEY_MODULES = ["proxy/request/auth.py", "proxy/server/access.py"]
_KEYISH = re.compile(r"key|token|secret|digest|password", re.I)


def test_keys_are_compared_in_constant_time() -> None:
    """No `==`, `!=` or `in` on a key, token or digest where keys are checked; the checks
    go through hmac.compare_digest. A new module that reads presented keys fails this
    until it is added to KEY_MODULES (and so reviewed)."""
    readers = {
        str(p.relative_to(REPO_ROOT))
        for p in (REPO_ROOT / "proxy").rglob("*.py")
        if re.search(r'bearer_token\(|b"authorization"|b"x-api-key"', p.read_text())
    }
    assert readers == set(KEY_MODULES), readers ^ set(KEY_MODULES)
    for module in KEY_MODULES:
        source = (REPO_ROOT / module).read_text()
        assert "hmac.compare_digest" in source, module
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, ast.Compare):
                continue
            if any(isinstance(op, ast.Is | ast.IsNot) for op in node.ops):
                continue
            operands = [ast.unparse(x) for x in (node.left, *node.comparators)]
            assert not any(_KEYISH.search(o) for o in operands), (module, ast.unparse(node))
