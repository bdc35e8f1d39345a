"""The circuit breaker against a real failing simulator: its request log is the witness.

Health checks are off, so nothing but the breaker keeps traffic away from the backend.
"""

from __future__ import annotations

import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from tests.support.routing import CHAT, ask, chat_count, hybrid_stack, wait_for
from tests.support.sim import SimHandle

THRESHOLD, COOLDOWN = 3, 1.5


def chat_arrivals(sim: SimHandle) -> list[float]:
    """When each chat request reached the simulator (its own clock), in order."""
    return [e["t"] for e in sim.stats()["request_log"] if e["path"] == CHAT]


@pytest.mark.serial  # the cooldown runs on the proxy's wall clock: a loaded machine can outrun it
def test_breaker_opens_after_n_failures_and_keeps_traffic_off_during_cooldown(
    tmp_path: Path,
) -> None:
    with hybrid_stack(
        tmp_path,
        breaker={"failure_threshold": THRESHOLD, "cooldown_s": COOLDOWN},
        health_checks={"enabled": False},
        models={"solo": {"targets": [{"backend": "local", "model": "sim-model"}]}},
    ) as (proxy, local, api):
        local.set_faults(status=500)
        answers = [ask(proxy.base_url) for _ in range(THRESHOLD)]
        assert all(a.status == 200 and a.attempts == 2 for a in answers)
        assert proxy.metric("hybridgate_breaker_open", backend="local") == 1
        assert proxy.metric("hybridgate_backend_up", backend="local") == 0
        state = proxy.ready().json()
        assert state["backends"]["local"] == "down"
        assert state["details"]["local"]["breaker"]["state"] == "open"

        # Open: every request goes straight to the API, and a self-hosted-only alias
        # is refused at once, with the wait until the next probe.
        during: list[Any] = []
        solo = ask(proxy.base_url, model="solo")
        assert solo.status == 503 and solo.error["code"] == "no_backend_available"
        assert "circuit open" in solo.error["message"]
        assert solo.retry_after is not None and 1 <= int(solo.retry_after) <= 2
        t_end = time.monotonic() + 3 * COOLDOWN
        while time.monotonic() < t_end:
            during.append(ask(proxy.base_url))
            time.sleep(0.02)
        assert all(a.status == 200 and a.backend == "api" for a in during)
        probes = [a for a in during if a.attempts == 2]  # half-open: one probe each time
        assert 1 <= len(probes) <= 3
        assert len(during) - len(probes) > 10

        # The simulator's own log: the N failures, then one probe per cooldown at
        # most, never closer together than the cooldown.
        arrivals = chat_arrivals(local)
        assert len(arrivals) == THRESHOLD + len(probes)
        gaps = [b - a for a, b in pairwise(arrivals[THRESHOLD - 1 :])]
        assert all(g >= COOLDOWN for g in gaps), gaps
        assert chat_count(api) == THRESHOLD + len(during)
        failovers = proxy.metric("hybridgate_failovers_total", from_backend="local")
        assert failovers == THRESHOLD + len(probes)

        # Healed: the next probe succeeds, the breaker closes, traffic returns.
        local.clear_faults()
        wait_for(lambda: ask(proxy.base_url).backend == "local", "the breaker to close")
        assert proxy.metric("hybridgate_breaker_open", backend="local") == 0
        assert all(ask(proxy.base_url).backend == "local" for _ in range(5))
        assert ask(proxy.base_url, model="solo").status == 200
