"""End-to-end tests against real engines with real models: llama.cpp's llama-server and vLLM.

The engines are installed (llama-server built once per machine, ~4 min cold; vLLM ~6.5 min
cold) after collection and before the first test, so the install is not counted against any
test's timeout and its progress shows in the terminal; only the engines the selected tests
need (tests marked `vllm` need vLLM, other e2e tests llama-server). A failed install fails
every test that needs it, loudly: it never skips.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import vllm as vllm_support
from tests.support.llama import ENGINE_SCRIPT, LlamaServer, engine, run_llama_server
from tests.support.vllm import VllmServer, run_vllm_server, running_vllm_server

INSTALL_TIMEOUT_S = 15 * 60
_INSTALL_ERROR = pytest.StashKey[str | None]()
_VLLM_INSTALL_ERROR = pytest.StashKey[str | None]()
_VLLM_SERVER = pytest.StashKey[VllmServer | str]()  # the server, or why it did not start
_VLLM_STACK = pytest.StashKey[contextlib.ExitStack]()


def _install(config: pytest.Config, script: Path = ENGINE_SCRIPT) -> str | None:
    """Run `<engine script> install` in a subprocess, relaying its progress; the error or None."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")

    def show(line: str) -> None:
        if reporter is not None:
            reporter.write_line(line)

    cmd = [sys.executable, str(script), "install"]
    name = script.stem
    show(f"e2e: {' '.join(cmd)}")
    t0 = time.monotonic()
    lines: list[str] = []
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            show(line.rstrip())
            if time.monotonic() - t0 > INSTALL_TIMEOUT_S:
                raise subprocess.TimeoutExpired(cmd, INSTALL_TIMEOUT_S)
        rc = proc.wait(timeout=max(1.0, INSTALL_TIMEOUT_S - (time.monotonic() - t0)))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return f"{name} install timed out after {INSTALL_TIMEOUT_S}s"
    if rc != 0:
        return f"{name} install failed (exit {rc}):\n{''.join(lines[-80:])}"
    show(f"e2e: {name} ready ({time.monotonic() - t0:.1f}s)")
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that kill the session's vLLM go last, after every test that needs it alive."""
    last = [item for item in items if item.get_closest_marker("ends_vllm")]
    if last:
        items[:] = [item for item in items if item not in last] + last


def pytest_collection_finish(session: pytest.Session) -> None:
    e2e = [item for item in session.items if item.get_closest_marker("e2e")]
    if any(not item.get_closest_marker("vllm") for item in e2e):
        session.config.stash[_INSTALL_ERROR] = _install(session.config)
    if any(item.get_closest_marker("vllm") for item in e2e):
        session.config.stash[_VLLM_INSTALL_ERROR] = _install(
            session.config, vllm_support.ENGINE_SCRIPT
        )
        wanted = any("vllm_server" in getattr(item, "fixturenames", ()) for item in e2e)
        if wanted and not session.config.stash[_VLLM_INSTALL_ERROR]:
            _start_session_vllm(session.config)


def _start_session_vllm(config: pytest.Config) -> None:
    """The session's one vLLM, started here rather than in a fixture: its ~47 s start (minutes
    on a busy machine) must not count against the first test's timeout. HYBRIDGATE_VLLM_URL:
    a server already started with `scripts/vllm_engine.py start` instead."""
    url = os.environ.get("HYBRIDGATE_VLLM_URL")
    if url:
        config.stash[_VLLM_SERVER] = running_vllm_server(url)
        return
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    stack = contextlib.ExitStack()
    config.stash[_VLLM_STACK] = stack
    t0 = time.monotonic()
    try:
        tmp = Path(tempfile.mkdtemp(prefix="hybridgate-vllm-"))
        config.stash[_VLLM_SERVER] = stack.enter_context(run_vllm_server(tmp))
    except Exception as exc:  # every vllm test fails with this, loudly
        config.stash[_VLLM_SERVER] = f"starting vLLM failed: {exc}"
        return
    if reporter is not None:
        reporter.write_line(f"e2e: vLLM up for this session ({time.monotonic() - t0:.1f}s)")


def pytest_sessionfinish(session: pytest.Session) -> None:
    stack = session.config.stash.get(_VLLM_STACK, None)
    if stack is not None:
        stack.close()  # SIGTERM to its process group, SIGKILL if it lingers


@pytest.fixture(scope="session")
def llama_engine(pytestconfig: pytest.Config) -> dict[str, str]:
    """The installed engine's files; fails (never skips) when the install failed."""
    if _INSTALL_ERROR not in pytestconfig.stash:  # collection hook did not run: install now
        pytestconfig.stash[_INSTALL_ERROR] = _install(pytestconfig)
    error = pytestconfig.stash[_INSTALL_ERROR]
    if error:
        pytest.fail(error, pytrace=False)
    return engine().installed_info()


@pytest.fixture(scope="module")
def llama_server(
    llama_engine: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LlamaServer]:
    """One llama-server (4 slots, 4096 context) per test module; tests measure deltas."""
    tmp: Path = tmp_path_factory.mktemp("llama")
    with run_llama_server(tmp) as server:
        yield server


@pytest.fixture(scope="session")
def vllm_engine(pytestconfig: pytest.Config) -> dict[str, str]:
    """The installed vLLM (venv python, model directory); fails (never skips) if not installed."""
    if _VLLM_INSTALL_ERROR not in pytestconfig.stash:
        pytestconfig.stash[_VLLM_INSTALL_ERROR] = _install(pytestconfig, vllm_support.ENGINE_SCRIPT)
    error = pytestconfig.stash[_VLLM_INSTALL_ERROR]
    if error:
        pytest.fail(error, pytrace=False)
    info: dict[str, str] = vllm_support.engine().installed_info()
    return info


@pytest.fixture(scope="session")
def vllm_server(vllm_engine: dict[str, str], pytestconfig: pytest.Config) -> VllmServer:
    """The session's one vLLM (~47 s to start, ~3.9 GB), started after collection: tests
    measure deltas of its counters and leave it idle; stopped at the session's end (its whole
    process group), whatever happened."""
    if _VLLM_SERVER not in pytestconfig.stash:  # collection hook did not run: start now
        _start_session_vllm(pytestconfig)
    server = pytestconfig.stash[_VLLM_SERVER]
    if isinstance(server, str):
        pytest.fail(server, pytrace=False)
    return server
