"""Headless Chromium for page tests: the DOM after the page ran, its console, a screenshot.

Debian's `chromium` with an empty profile per run. `--enable-logging=stderr --v=0`
prints every console message (log, error, uncaught exception) to stderr as a
`CONSOLE` line; the dashboard logs nothing when all is well, so any such line is a
finding. `--virtual-time-budget` lets the page's timers and fetches run before the
DOM is dumped or the screenshot taken.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.servers import REPO_ROOT

ARTIFACTS = REPO_ROOT / "test-artifacts"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
    "--disable-dev-shm-usage",
    "--enable-logging=stderr",
    "--v=0",
)
_CONSOLE = re.compile(r":CONSOLE[^\]]*\]\s*(.*)$")


@dataclass
class PageRun:
    output: str  # the DOM (with --dump-dom), else empty
    stderr: str

    @property
    def console(self) -> list[str]:
        """Console messages the page produced (any level)."""
        return [m.group(1) for line in self.stderr.splitlines() if (m := _CONSOLE.search(line))]


def chromium_binary() -> str:
    """The chromium executable, or skip the test with how to install it."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("chromium is not installed (apt-get install -y chromium)")
    raise AssertionError  # unreachable


def run_page(
    url: str,
    *,
    dump_dom: bool = True,
    screenshot: Path | None = None,
    budget_ms: int = 8000,
    window_size: str = "1400,2000",
    timeout: float = 90.0,
) -> PageRun:
    """Load `url` once in a fresh headless Chromium; stop it (and its children) after."""
    profile = tempfile.mkdtemp(prefix="hg-chromium-")
    args = [
        chromium_binary(),
        *FLAGS,
        f"--user-data-dir={profile}",
        f"--virtual-time-budget={budget_ms}",
        f"--window-size={window_size}",
    ]
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        args.append(f"--screenshot={screenshot}")
    if dump_dom:
        args.append("--dump-dom")
    args.append(url)
    proc = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # zygotes and renderers too
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        shutil.rmtree(profile, ignore_errors=True)
    return PageRun(out.decode(errors="replace"), err.decode(errors="replace"))
