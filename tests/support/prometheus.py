"""A real `prometheus` server on a free loopback port for a test, with our rules loaded.

    with run_prometheus(tmp_path, {"hybridgate": [proxy_addr], "vllm": [sim_addr]}) as prom:
        prom.wait_for("hybridgate:spend_usd_per_hour:rate5m")
        assert prom.query("up") ...

Scrape and rule evaluation run every second so a test sees data within seconds; the
TSDB lives in tmp_path; the server is stopped whatever happens.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.servers import REPO_ROOT, free_port, managed

RULES_DIR = REPO_ROOT / "deploy" / "prometheus" / "rules"
DEFAULT_RULE_FILES = tuple(sorted(RULES_DIR.glob("*.yml")))

# A job's targets: ["127.0.0.1:8000", ...], or static_configs entries with labels:
# [{"targets": ["127.0.0.1:8000"], "labels": {"pool": "gpu"}}].
Targets = Sequence[str] | Sequence[Mapping[str, Any]]


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        raise RuntimeError("prometheus is not installed (scripts/test.sh installs it)")
    return path


def scrape_config(job: str, targets: Targets) -> dict[str, Any]:
    static = [
        {"targets": [t]} if isinstance(t, str) else {k: v for k, v in t.items()} for t in targets
    ]
    return {"job_name": job, "static_configs": static}


class PrometheusHandle:
    def __init__(self, port: int) -> None:
        self.port = port
        self._http = httpx.Client(base_url=self.url, timeout=10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, path: str, **params: Any) -> Any:
        r = self._http.get(f"/api/v1/{path}", params=params)
        body = r.json()
        if body.get("status") != "success":
            raise RuntimeError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query at now: the result vector (or [scalar] / [string])."""
        data = self.api("query", query=expr)
        return data["result"] if data["resultType"] in ("vector", "matrix") else [data["result"]]

    def wait_for(self, expr: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Poll until `expr` returns a non-empty result."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if result:
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expr!r} still empty after {timeout}s")
            time.sleep(0.25)

    def alerts(self) -> list[dict[str, Any]]:
        return self.api("alerts")["alerts"]

    def firing(self) -> dict[str, list[dict[str, str]]]:
        """Alert name → label sets of its firing instances."""
        out: dict[str, list[dict[str, str]]] = {}
        for a in self.alerts():
            if a["state"] == "firing":
                out.setdefault(a["labels"]["alertname"], []).append(a["labels"])
        return out

    def rule_groups(self) -> list[dict[str, Any]]:
        return self.api("rules")["groups"]

    def targets(self) -> list[dict[str, Any]]:
        return self.api("targets")["activeTargets"]

    def label_values(self, label: str, match: str) -> list[str]:
        return self.api(f"label/{label}/values", **{"match[]": match})

    def close(self) -> None:
        self._http.close()


def write_config(
    path: Path, scrape_targets: Mapping[str, Targets], rule_files: Sequence[Path]
) -> None:
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [scrape_config(job, t) for job, t in scrape_targets.items()],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))


@contextlib.contextmanager
def run_prometheus(
    tmp_path: Path,
    scrape_targets: Mapping[str, Targets],
    rule_files: Sequence[Path] = DEFAULT_RULE_FILES,
    name: str = "prometheus",
) -> Iterator[PrometheusHandle]:
    """Start prometheus scraping `scrape_targets` (job → targets) with `rule_files` loaded."""
    port = free_port()
    workdir = tmp_path / f"{name}-{port}"
    workdir.mkdir(parents=True)
    config = workdir / "prometheus.yml"
    write_config(config, scrape_targets, rule_files)
    args = [
        prometheus_binary(),
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=1h",
        "--log.level=warn",
    ]
    with managed(args, workdir / "prometheus.log", ready_url=f"http://127.0.0.1:{port}/-/ready"):
        handle = PrometheusHandle(port)
        try:
            yield handle
        finally:
            handle.close()
