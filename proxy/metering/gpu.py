"""GPU-seconds of a self-hosted pool, split among the requests that share it.

Every interval between in-flight events is divided among the requests in flight in
proportion to their weights. Done naively that is O(in-flight) per event; instead a
running integral `acc` of gpus × dt / total_weight is kept, and a request's share is
its weight × the growth of `acc` while it held that weight: O(1) per event, and the
shares of all requests add up to gpus × busy time (to float rounding).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol


class Share(Protocol):
    """One request's part of a pool's GPU-seconds (GpuShare, or SharedGpuShare with workers)."""

    done: bool
    gpu_seconds: float

    @property
    def weight(self) -> float: ...

    def first_token(self) -> None: ...

    def end(self) -> float: ...


class PoolBooks(Protocol):
    """A pool's books as the meter reads them (PoolAccount, or SharedPoolAccount with
    workers)."""

    gpus: int
    prefill_weight: float

    def start(self) -> Share: ...

    def add_tokens(self, n: int) -> None: ...

    @property
    def tokens_served(self) -> int: ...

    @property
    def inflight(self) -> int: ...

    @property
    def provisioned_gpu_seconds(self) -> float: ...

    @property
    def busy_gpu_seconds(self) -> float: ...


class PoolAccount:
    """Provisioned, busy and per-request GPU-seconds of one pool."""

    __slots__ = (
        "_acc",
        "_clock",
        "_last",
        "_started",
        "_total_weight",
        "busy_wall_s",
        "gpus",
        "inflight",
        "prefill_weight",
        "tokens_served",
    )

    def __init__(
        self, gpus: int, prefill_weight: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.gpus = gpus
        self.prefill_weight = prefill_weight
        self._clock = clock
        self._started = clock()
        self._last = self._started
        self._acc = 0.0  # GPU-seconds per unit weight, integrated over time
        self._total_weight = 0.0
        self.inflight = 0
        self.busy_wall_s = 0.0
        self.tokens_served = 0

    def _advance(self, now: float) -> None:
        dt = now - self._last
        if dt > 0.0 and self._total_weight > 0.0:
            self._acc += self.gpus * dt / self._total_weight
            self.busy_wall_s += dt
        if dt > 0.0:
            self._last = now

    def start(self) -> GpuShare:
        """A request enters the pool (its prefill begins)."""
        now = self._clock()
        self._advance(now)
        share = GpuShare(self, self.prefill_weight, self._acc)
        self._total_weight += share.weight
        self.inflight += 1
        return share

    def add_tokens(self, n: int) -> None:
        self.tokens_served += n

    @property
    def provisioned_gpu_seconds(self) -> float:
        """gpus × wall-clock since the pool was declared up (the cost basis)."""
        return self.gpus * (self._clock() - self._started)

    @property
    def busy_gpu_seconds(self) -> float:
        now = self._clock()
        self._advance(now)
        return self.gpus * self.busy_wall_s

    def utilization(self) -> float:
        prov = self.provisioned_gpu_seconds
        return self.busy_gpu_seconds / prov if prov > 0 else 0.0


class GpuShare:
    """One request's running share of a pool's GPU-seconds."""

    __slots__ = ("_mark", "_pool", "done", "gpu_seconds", "weight")

    def __init__(self, pool: PoolAccount, weight: float, mark: float) -> None:
        self._pool = pool
        self.weight = weight
        self._mark = mark
        self.gpu_seconds = 0.0
        self.done = False

    def _settle(self) -> None:
        pool = self._pool
        pool._advance(pool._clock())
        self.gpu_seconds += self.weight * (pool._acc - self._mark)
        self._mark = pool._acc

    def first_token(self) -> None:
        """Prefill is over: from now on the request weighs 1 (decode)."""
        if self.done or self.weight == 1.0:
            return
        self._settle()
        pool = self._pool
        pool._total_weight += 1.0 - self.weight
        self.weight = 1.0

    def end(self) -> float:
        """The request leaves the pool; returns its attributed GPU-seconds. Idempotent."""
        if self.done:
            return self.gpu_seconds
        self._settle()
        pool = self._pool
        pool._total_weight -= self.weight
        if pool._total_weight < 1e-12:
            pool._total_weight = 0.0
        pool.inflight -= 1
        self.done = True
        return self.gpu_seconds
