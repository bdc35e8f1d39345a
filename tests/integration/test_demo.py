"""`hybridgate demo --duration 6 --rps 30 --exit`: runs end to end and leaves no process behind.

Every process the demo starts inherits its environment, so a unique marker variable
finds them all in /proc afterwards, wherever they were re-parented.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from tests.support.servers import PYTHON, REPO_ROOT

SCENARIO_ROW = re.compile(
    r"│ (api_only|selfhosted_only|hybrid_current|hybrid_optimal)\b[^│]*│\s*\$([\d,]+\.\d\d)\s*│"
)


def marked_processes(mark: str) -> list[int]:
    """PIDs whose environment holds `mark` (zombies have none and do not count)."""
    found = []
    needle = mark.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "environ").read_bytes():
                found.append(int(entry.name))
    return found


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Demo:
    """`hybridgate demo ARGS` as a subprocess; afterwards `survivors` lists every process
    it started that is still alive (they are killed, so nothing leaks into other tests)."""

    def __init__(self, *args: str, sigint_ignored: bool = False) -> None:
        self.mark = f"hybridgate-demo-test-{uuid.uuid4().hex}"
        env = {k: v for k, v in os.environ.items() if k != "HYBRIDGATE_ADMIN_KEY"}
        env.update(HYBRIDGATE_DEMO_TEST_MARK=self.mark, COLUMNS="200")
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "proxy", "demo", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=REPO_ROOT,
            start_new_session=True,
            # As a background job of a script starts it (bash ignores SIGINT there).
            preexec_fn=_ignore_sigint if sigint_ignored else None,
        )
        self.survivors: list[int] = []

    def __enter__(self) -> Demo:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.survivors = marked_processes(self.mark)
        for pid in self.survivors:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.timeout(400)
def test_demo_prints_the_report_and_leaves_nothing_behind() -> None:
    # The whole compressed day, as many requests as the default 10 rps over 20 s, in 6 s.
    with Demo("--duration", "6", "--rps", "30", "--exit") as demo:
        out, _ = demo.proc.communicate(timeout=360)
    assert demo.proc.returncode == 0, out[-4000:]
    assert demo.survivors == [], f"processes left behind: {demo.survivors}"
    assert "a day of traffic" in out
    costs = dict(SCENARIO_ROW.findall(out))
    assert set(costs) == {"api_only", "selfhosted_only", "hybrid_current", "hybrid_optimal"}, out
    for name, usd in costs.items():
        assert float(usd.replace(",", "")) > 0, name
    # The recommendation panel wraps its sentence between its borders where the numbers'
    # widths put the line end (seen: between "requests/month" and "(2,292,365)").
    flat = re.sub(r"[ \t]*│[ \t]*\n[ \t]*│[ \t]*", " ", out)
    recommendation = re.search(r"Break-even is at [\d.]+[KMB]? requests/month \(([\d,]+)\)", flat)
    assert recommendation, out[-3000:]
    assert int(recommendation.group(1).replace(",", "")) > 0
    assert "confidential requests that left the GPU: 0" in out


@pytest.mark.timeout(300)
def test_demo_keeps_the_dashboard_up_until_ctrl_c() -> None:
    # Started with SIGINT ignored, the worst case: Ctrl-C must still stop it.
    with Demo("--duration", "5", sigint_ignored=True) as demo:
        assert demo.proc.stdout is not None
        lines: list[str] = []
        for line in demo.proc.stdout:
            lines.append(line)
            if "Press Ctrl-C" in line:
                break
        text = "".join(lines)
        m = re.search(r"Dashboard: (http://127\.0\.0\.1:\d+)/dashboard#key=(\S+)", text)
        assert m, text[-3000:]
        url, key = m.groups()
        assert httpx.get(f"{url}/dashboard", timeout=10).status_code == 200
        report = httpx.get(
            f"{url}/costs/report", headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        assert report.status_code == 200 and report.json()["traffic"]["requests"] > 0
        demo.proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        rest, _ = demo.proc.communicate(timeout=60)
    assert demo.proc.returncode == 0, rest[-2000:]
    assert "stopping" in rest
    assert demo.survivors == [], f"processes left behind: {demo.survivors}"
