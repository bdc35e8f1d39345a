"""Synthetic traffic with a daily shape, compressed into a few seconds, for `hybridgate demo`.

Arrivals are a Poisson process whose rate follows a working day (quiet nights, a late
morning ramp, a peak after lunch): `DAY_SHAPE` gives 24 hourly rates relative to the
mean, interpolated linearly. A seeded random source makes every run the same shape.
The mix: most requests to `chat` (the spillover alias), a share of them marked
confidential (they must stay on the GPU), and some to `frontier` (an API model).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import httpx

_HOURLY: Final[tuple[float, ...]] = (
    0.25, 0.2, 0.18, 0.18, 0.2, 0.3, 0.5, 0.8, 1.2, 1.5, 1.7, 1.8,
    1.9, 1.95, 1.85, 1.7, 1.6, 1.5, 1.4, 1.3, 1.1, 0.8, 0.5, 0.35,
)  # fmt: skip
DAY_SHAPE: Final[tuple[float, ...]] = tuple(v * 24 / sum(_HOURLY) for v in _HOURLY)
"""Hourly request rate relative to the day's mean (mean 1.0)."""

PROMPTS: Final[tuple[str, ...]] = (
    "Summarise this support ticket in two sentences: the customer cannot log in after "
    "resetting their password, the reset email arrives late, and the link has expired.",
    "Write a friendly reply to a customer asking whether the annual plan can be paid "
    "monthly, and explain the difference in price.",
    "Classify the sentiment of this review as positive, neutral or negative: 'Delivery "
    "was quick, but the box was damaged and one item was missing.'",
    "Extract the company names, dates and amounts from this paragraph and return them as "
    "JSON: On 3 March Acme Corp paid Globex 12,500 EUR for the Q1 licence renewal, and "
    "on 9 April Initech invoiced Acme Corp 4,200 EUR for consulting.",
    "Translate into French: our office will be closed on Friday for the public holiday; "
    "urgent requests go to the on-call engineer.",
)


def day_rate(fraction: float) -> float:
    """Relative rate at `fraction` of the day (0 = midnight), linearly interpolated."""
    x = (fraction % 1.0) * 24
    i = int(x)
    a, b = DAY_SHAPE[i], DAY_SHAPE[(i + 1) % 24]
    return a + (b - a) * (x - i)


@dataclass
class TrafficStats:
    """What the driver saw: requests sent and answered, where they were served."""

    sent: int = 0
    ok: int = 0
    errors: int = 0
    in_flight: int = 0
    by_backend: Counter[str] = field(default_factory=Counter)
    by_status: Counter[int] = field(default_factory=Counter)
    confidential_off_gpu: int = 0

    @property
    def done(self) -> int:
        return self.ok + self.errors


@dataclass(frozen=True)
class Plan:
    duration_s: float
    mean_rps: float
    seed: int = 7
    confidential_share: float = 0.08
    frontier_share: float = 0.12
    stream_share: float = 0.3
    max_in_flight: int = 256

    def arrivals(self) -> list[float]:
        """Arrival times (seconds from the start) of a Poisson process with rate
        mean_rps × day_rate(t / duration), by thinning a homogeneous one."""
        rng = random.Random(self.seed)
        peak = self.mean_rps * max(DAY_SHAPE)
        t = 0.0
        out: list[float] = []
        while True:
            t += rng.expovariate(peak)
            if t >= self.duration_s:
                return out
            if rng.random() * peak <= self.mean_rps * day_rate(t / self.duration_s):
                out.append(t)


async def drive(
    base_url: str,
    api_key: str,
    plan: Plan,
    on_progress: Callable[[float, TrafficStats], None] | None = None,
    gpu_backends: frozenset[str] = frozenset(),
) -> TrafficStats:
    """Send the plan's requests at their arrival times; returns what happened."""
    stats = TrafficStats()
    rng = random.Random(plan.seed + 1)
    limit = asyncio.Semaphore(plan.max_in_flight)
    headers = {"Authorization": f"Bearer {api_key}"}
    client = httpx.AsyncClient(
        base_url=base_url,
        headers=headers,
        timeout=httpx.Timeout(120.0, connect=10.0),
        limits=httpx.Limits(max_connections=plan.max_in_flight, max_keepalive_connections=64),
    )
    tasks: set[asyncio.Task[None]] = set()

    async def one(kind: str) -> None:
        body: dict[str, object] = {
            "model": "frontier" if kind == "frontier" else "chat",
            "messages": [{"role": "user", "content": rng.choice(PROMPTS)}],
            "max_tokens": rng.choice((48, 96, 128, 160)),
        }
        stream = kind != "frontier" and rng.random() < plan.stream_share
        extra = {"x-data-class": "confidential"} if kind == "confidential" else {}
        async with limit:
            stats.in_flight += 1
            try:
                if stream:
                    body["stream"] = True
                    async with client.stream(
                        "POST", "/chat/completions", json=body, headers=extra
                    ) as r:
                        async for _ in r.aiter_bytes():
                            pass
                else:
                    r = await client.post("/chat/completions", json=body, headers=extra)
                stats.by_status[r.status_code] += 1
                if r.status_code == 200:
                    stats.ok += 1
                    backend = r.headers.get("x-hybridgate-backend", "unknown")
                    stats.by_backend[backend] += 1
                    if kind == "confidential" and gpu_backends and backend not in gpu_backends:
                        stats.confidential_off_gpu += 1
                else:
                    stats.errors += 1
            except httpx.HTTPError:
                stats.errors += 1
                stats.by_status[0] += 1
            finally:
                stats.in_flight -= 1

    start = time.monotonic()
    try:
        for at in plan.arrivals():
            delay = at - (time.monotonic() - start)
            if delay > 0:
                await asyncio.sleep(delay)
            roll = rng.random()
            kind = (
                "frontier"
                if roll < plan.frontier_share
                else "confidential"
                if roll < plan.frontier_share + plan.confidential_share
                else "chat"
            )
            stats.sent += 1
            task = asyncio.create_task(one(kind))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            if on_progress is not None:
                on_progress(min(1.0, (time.monotonic() - start) / plan.duration_s), stats)
        while tasks:
            if on_progress is not None:
                on_progress(min(1.0, (time.monotonic() - start) / plan.duration_s), stats)
            await asyncio.wait(set(tasks), timeout=0.25)
        if on_progress is not None:
            on_progress(1.0, stats)
    finally:
        for task in tasks:
            task.cancel()
        await client.aclose()
    return stats


def expected_requests(plan: Plan) -> int:
    """About how many requests the plan sends (mean_rps × duration)."""
    return math.ceil(plan.mean_rps * plan.duration_s)
