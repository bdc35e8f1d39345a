"""A plain install prices API models (litellm's table is a core dependency) and the proxy
never pays litellm's import unless a `type: litellm` backend asks for it."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_SERVE_WITHOUT_LITELLM = """
import sys
from proxy.server.app import HybridGateApp
from proxy.config import parse_config
cfg = parse_config('''
backends:
  api: {base_url: "http://127.0.0.1:9/v1", api_key: sk-x}
models:
  chat: {targets: [{backend: api, model: gpt-4o-mini}]}
''')
app = HybridGateApp(cfg)
assert app.runtime.prices.find("gpt-4o-mini") is not None, app.runtime.prices.source
assert "litellm" not in sys.modules, "litellm was imported"
print("ok")
"""


def _requirement_names(reqs: list[str]) -> set[str]:
    return {r.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0].strip()
            for r in reqs}  # fmt: skip


def test_litellm_is_a_core_dependency() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "litellm" in _requirement_names(project["dependencies"])


def test_serving_reads_the_price_table_without_importing_litellm() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _SERVE_WITHOUT_LITELLM],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_tco_prices_an_api_model_from_the_bundled_table() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "proxy", "tco", "--api-model", "gpt-4o-mini", "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "gpt-4o-mini" in out.stdout
