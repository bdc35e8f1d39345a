"""End-to-end tests against a real llama-server with a real model.

The engine is installed (built once per machine, ~4 min cold) after collection and before the
first test, so the build is not counted against any test's timeout and its progress shows in the
terminal. A failed install fails every e2e test, loudly: it never skips.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.llama import ENGINE_SCRIPT, LlamaServer, engine, run_llama_server

INSTALL_TIMEOUT_S = 15 * 60
_INSTALL_ERROR = pytest.StashKey[str | None]()


def _install(config: pytest.Config) -> str | None:
    """Run `llama_engine.py install` in a subprocess, relaying its progress; the error or None."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")

    def show(line: str) -> None:
        if reporter is not None:
            reporter.write_line(line)

    cmd = [sys.executable, str(ENGINE_SCRIPT), "install"]
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
        return f"llama engine install timed out after {INSTALL_TIMEOUT_S}s"
    if rc != 0:
        return f"llama engine install failed (exit {rc}):\n{''.join(lines[-80:])}"
    show(f"e2e: llama engine ready ({time.monotonic() - t0:.1f}s)")
    return None


def pytest_collection_finish(session: pytest.Session) -> None:
    if any(item.get_closest_marker("e2e") for item in session.items):
        session.config.stash[_INSTALL_ERROR] = _install(session.config)


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
