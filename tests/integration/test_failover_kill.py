"""The self-hosted simulator process is killed under load: the app must not notice.

200 non-streaming requests at concurrency 16 on a `priority` alias (self-hosted, then
API). The simulator is SIGKILLed after the first 40 answers. Every request must still
succeed; every request that met the dead backend must be one failover on the books
(counted from the client's side by `x-hybridgate-attempts`); once the simulator is
back, the breaker half-opens and traffic returns to it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.support.proxy import ProxyHandle
from tests.support.routing import KEY, MSGS, ask, chat_count, hybrid_stack, wait_for

TOTAL, CONCURRENCY, KILL_AFTER = 200, 16, 40


async def load(proxy: ProxyHandle, kill: Callable[[], None]) -> list[tuple[int, str, int]]:
    """(status, backend, attempts) of every request; `kill` runs after KILL_AFTER answers."""
    out: list[tuple[int, str, int]] = []
    sem = asyncio.Semaphore(CONCURRENCY)
    body = {"model": "chat", "messages": MSGS, "max_tokens": 12}
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=proxy.base_url, timeout=30) as client:

        async def one() -> None:
            async with sem:
                r = await client.post("/chat/completions", json=body, headers=headers)
            out.append(
                (
                    r.status_code,
                    r.headers.get("x-hybridgate-backend", ""),
                    int(r.headers.get("x-hybridgate-attempts", "0")),
                )
            )
            if len(out) == KILL_AFTER:
                kill()

        await asyncio.gather(*(one() for _ in range(TOTAL)))
    return out


def test_kill_under_load_no_client_failures_exact_failovers_and_recovery(tmp_path: Path) -> None:
    with hybrid_stack(
        tmp_path,
        local_args=["--speed", "10"],
        breaker={"failure_threshold": 5, "cooldown_s": 1.0},
        health_checks={"interval_s": 0.5},
        local_backend={"timeouts": {"connect_s": 1}},
    ) as (proxy, local, api):
        answers = asyncio.run(load(proxy, local.kill))
        assert not local.alive()

        # 0 failures at the client.
        assert len(answers) == TOTAL
        assert all(status == 200 for status, _, _ in answers)
        served_local = sum(1 for _, b, _ in answers if b == "local")
        served_api = sum(1 for _, b, _ in answers if b == "api")
        assert served_local + served_api == TOTAL
        assert served_local >= 1 and served_api >= 1
        assert chat_count(api) == served_api  # no hidden retries upstream

        # Every request that met the dead backend is exactly one failover.
        hit_dead = [(b, n) for _, b, n in answers if n >= 2]
        assert hit_dead, "no request was in flight or sent to the dead backend"
        assert all(b == "api" and n == 2 for b, n in hit_dead)
        failovers = proxy.metric("hybridgate_failovers_total", from_backend="local")
        assert failovers == len(hit_dead)
        assert proxy.metric("hybridgate_requests_total", alias="chat") == TOTAL
        # The breaker stopped the flood: far fewer requests met the dead backend
        # than were sent after it died.
        assert len(hit_dead) < TOTAL - KILL_AFTER
        assert proxy.metric("hybridgate_breaker_open", backend="local") == 1

        # Back up: the breaker half-opens, a probe succeeds, traffic returns.
        local.restart()

        def served_by_local() -> bool:
            a = ask(proxy.base_url)
            assert a.status == 200
            return a.backend == "local"

        wait_for(served_by_local, "traffic to return to the restarted backend", 30)
        assert proxy.metric("hybridgate_breaker_open", backend="local") == 0
        after = [ask(proxy.base_url) for _ in range(10)]
        assert all(a.backend == "local" and a.attempts == 1 for a in after)
        assert chat_count(local) == 11  # the probe and the ten after it
