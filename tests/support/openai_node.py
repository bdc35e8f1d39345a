"""openai-node (the official TypeScript SDK) for tests: run a script of tests/support/node
with the package installed under ~/.cache/hybridgate/node (scripts/test.sh installs it:
`npm install --prefix ~/.cache/hybridgate/node openai@4`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

NODE_DIR = Path(os.environ.get("HYBRIDGATE_NODE_DIR", Path.home() / ".cache/hybridgate/node"))
SCRIPTS = Path(__file__).parent / "node"


def run_node(script: str, *args: str, timeout: float = 60) -> dict[str, Any]:
    """Run tests/support/node/<script> and return the JSON it printed last."""
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "openai").is_dir():
        pytest.skip(f"openai-node not installed (node, {NODE_DIR}/node_modules/openai)")
    # An .mjs file resolves bare imports from its own folder upwards: run a copy beside
    # the installed node_modules.
    target = NODE_DIR / f"hg-{script}"
    target.write_text((SCRIPTS / script).read_text())
    proc = subprocess.run(
        [node, str(target), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, f"node failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])
