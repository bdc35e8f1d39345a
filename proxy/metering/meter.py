"""The meter: in-flight GPU shares per pool, pricing of each finished request, and the sinks.

`finish()` is called exactly once per request by the request path; it prices the event
(costing/ arithmetic on numbers held here) and hands it to every sink. Fast sinks
(Prometheus, the windowed cost model) run inline and are O(1); slow sinks (state store,
request log) get events through a queue drained in the background, so they never slow
the request path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol, runtime_checkable

from costing.prices import ModelPrice, PriceTable
from proxy.config import Config
from proxy.metering.cluster_gpu import ClusterBooks, ClusterPool, ClusterShare
from proxy.metering.events import Attempt, UsageEvent
from proxy.metering.gpu import PoolAccount, PoolBooks, Share
from proxy.metering.pricing import PoolPricing, api_request_cost, pool_pricing

log = logging.getLogger("hybridgate.meter")

FastSink = Callable[[UsageEvent], None]
SlowSink = Callable[[list[UsageEvent]], Awaitable[None]]


@runtime_checkable
class WritesNow(Protocol):
    """A slow sink that can also write a batch at once, on the caller's thread (the
    request log): the cluster books write what they deliver before reporting it."""

    def write_now(self, batch: list[UsageEvent]) -> None: ...


# (name, gpus, prefill weight, clock) -> the pool's books
PoolFactory = Callable[[str, int, float, Callable[[], float]], PoolBooks]


def _local_pool(
    _name: str, gpus: int, prefill_weight: float, clock: Callable[[], float]
) -> PoolAccount:
    return PoolAccount(gpus, prefill_weight, clock)


class Meter:
    def __init__(
        self,
        config: Config,
        prices: PriceTable,
        clock: Callable[[], float] = time.monotonic,
        pool_factory: PoolFactory | None = None,
    ) -> None:
        self.clock = clock
        # `serve --workers N` keeps each pool's books in a block every worker maps
        # (proxy/metering/shared_gpu.py); one process keeps them in a PoolAccount.
        self.pool_factory = pool_factory
        self.hours_per_month = config.costing.hours_per_month
        self.pools: dict[str, PoolBooks] = {
            name: (pool_factory or _local_pool)(name, p.gpus, p.prefill_weight, clock)
            for name, p in config.gpu_pools.items()
        }
        self.pricing: dict[str, PoolPricing] = {
            name: pool_pricing(p, config.engineering, config.gpu_pools, self.hours_per_month)
            for name, p in config.gpu_pools.items()
        }
        self.backend_pool: dict[str, str | None] = {n: b.pool for n, b in config.backends.items()}
        # API prices for every (backend, model) an alias can reach. A model without a price
        # is never costed as $0: its events are flagged `unpriced` and counted as such
        # (`check` warns about it; `check --strict` refuses it).
        self.api_prices: dict[tuple[str, str], ModelPrice | None] = {}
        self.compare_prices: dict[str, ModelPrice | None] = {}
        self.alias_pool: dict[str, str] = {}
        for alias, spec in config.models.items():
            for t in spec.targets:
                if config.backends[t.backend].pool is None:
                    self.api_prices[(t.backend, t.model)] = prices.find(t.model)
                elif alias not in self.alias_pool:
                    self.alias_pool[alias] = config.backends[t.backend].pool  # type: ignore[assignment]
            if spec.compare_to is not None:
                self.compare_prices[alias] = prices.find(spec.compare_to.model)
        self._fast: list[FastSink] = []
        self._slow: list[SlowSink] = []
        self._queue: deque[UsageEvent] = deque()
        self._later: deque[tuple[SlowSink, list[UsageEvent]]] = deque()  # see write_now
        self._wake = asyncio.Event()
        self._drainer: asyncio.Task[None] | None = None
        self.events_finished = 0
        # Several replicas sharing a Redis: one set of books per pool (cluster_gpu.py).
        self.cluster: ClusterBooks | None = None
        self._open: dict[int, ClusterShare] = {}  # id(Attempt) -> its share, until finish
        # With --workers: each worker's last reported parts (pid -> pool -> [busy, idle]),
        # kept after it exits (its counters' part so far stays in the sum).
        self.worker_parts: dict[int, dict[str, list[float]]] = {}

    def attach_cluster(self, books: ClusterBooks) -> None:
        """Keep every pool's books across replicas (state.url is Redis, one process)."""
        self.cluster = books
        books.before_report = self.write_now
        for name, acct in list(self.pools.items()):
            if not isinstance(acct, ClusterPool):
                self.pools[name] = books.wrap(name, acct)

    def gpu_parts(self) -> dict[str, list[float]]:
        """This process's (busy, idle) parts of each shared pool (a worker's, for its hub)."""
        return {n: list(a.parts()) for n, a in self.pools.items() if isinstance(a, ClusterPool)}

    def reconfigure(self, config: Config, prices: PriceTable) -> None:
        """A reload: new prices and routes, the same books (called by proxy/server/reload.py).

        Pool accounts carry on: their totals and the shares in flight are the books (a
        reload that removes a pool or changes its GPU count is refused before this).
        Entries of backends and aliases the new config drops are kept, so a request
        that started before the reload is still priced as it was routed.
        """
        fresh = Meter(config, prices, self.clock)
        for name, acct in fresh.pools.items():
            if name in self.pools:
                fresh.pools[name] = self.pools[name]
                fresh.pools[name].prefill_weight = acct.prefill_weight
            elif self.pool_factory is not None:  # a pool added by the reload, shared too
                fresh.pools[name] = self.pool_factory(
                    name, acct.gpus, acct.prefill_weight, self.clock
                )
            if self.cluster is not None and not isinstance(fresh.pools[name], ClusterPool):
                fresh.pools[name] = self.cluster.wrap(name, fresh.pools[name])
        self.hours_per_month = fresh.hours_per_month
        self.pools = fresh.pools
        self.pricing = fresh.pricing
        self.backend_pool = {**self.backend_pool, **fresh.backend_pool}
        self.api_prices = {**self.api_prices, **fresh.api_prices}
        self.compare_prices = {**self.compare_prices, **fresh.compare_prices}
        self.alias_pool = {**self.alias_pool, **fresh.alias_pool}

    # ------------------------------------------------------------ in flight

    def begin(self, backend: str, attempt: Attempt | None = None) -> Share | None:
        pool = self.backend_pool.get(backend)
        if pool is None:
            return None
        share = self.pools[pool].start()
        if attempt is not None and type(share) is ClusterShare:
            share.attempt = attempt
            self._open[id(attempt)] = share
        return share

    # ------------------------------------------------------------ finishing

    def price(self, ev: UsageEvent) -> None:
        """Actual and counterfactual USD of one event (docs/architecture.md, "Metering model").

        Actual = every attempt's GPU-seconds × its pool's USD per GPU-second (a failed
        attempt on our GPUs still spent them) + the serving API's token cost.
        """
        total = 0.0
        for a in ev.attempts:
            if a.gpu_seconds:
                pool_name = self.backend_pool.get(a.backend)
                if pool_name is not None:
                    a.cost_usd = a.gpu_seconds * self.pricing[pool_name].usd_per_gpu_second
                    total += a.cost_usd
        ev.cost_usd = total
        if ev.backend is None or ev.model is None:
            return
        pool = self.backend_pool.get(ev.backend)
        if pool is not None:
            ev.self_hosted = True
            ev.pool = pool
            self.pools[pool].add_tokens(ev.prompt_tokens + ev.completion_tokens)
            compare = self.compare_prices.get(ev.alias)
            ev.counterfactual_usd = (
                api_request_cost(
                    compare,
                    ev.prompt_tokens,
                    ev.completion_tokens,
                    ev.cached_tokens,
                    False,
                    ev.cache_write_tokens,
                )
                if compare is not None
                else None
            )
            return
        price = self.api_prices.get((ev.backend, ev.model))
        if price is None:
            ev.unpriced = True
        else:
            api = api_request_cost(
                price,
                ev.prompt_tokens,
                ev.completion_tokens,
                ev.cached_tokens,
                ev.batch_tier,
                ev.cache_write_tokens,
            )
            if ev.attempts:
                ev.attempts[-1].cost_usd += api
            ev.cost_usd = total + api
        alias_pool = self.alias_pool.get(ev.alias)
        if alias_pool is not None:
            ev.counterfactual_usd = self.marginal_selfhosted_cost(
                alias_pool, ev.prompt_tokens + ev.completion_tokens
            )

    def marginal_selfhosted_cost(self, pool: str, tokens: int) -> float | None:
        """tokens / throughput (tokens per GPU-second) × USD per GPU-second.

        Throughput is the configured capacity per GPU when given, else the pool's measured
        tokens per busy GPU-second; None when neither is known yet.
        """
        tps = self.throughput(pool)
        if tps is None or tps <= 0:
            return None
        return tokens / tps * self.pricing[pool].usd_per_gpu_second

    def throughput(self, pool: str) -> float | None:
        configured = self.pricing[pool].capacity_tokens_per_gpu_s
        if configured is not None:
            return configured
        acct = self.pools[pool]
        if isinstance(acct, ClusterPool):  # this process's requests: their tokens, their share
            tokens, busy = acct.own_tokens, acct.finalised_gpu_s
        else:
            tokens, busy = acct.tokens_served, acct.busy_gpu_seconds
        return tokens / busy if busy > 0 and tokens else None

    def finish(self, ev: UsageEvent) -> None:
        if self._open and self.cluster is not None:
            shares = [s for a in ev.attempts if (s := self._open.pop(id(a), None)) is not None]
            if shares:
                waiting = [s for s in shares if s.final is None]
                for s in shares:
                    if s.final is not None:
                        s.attempt.gpu_seconds = s.gpu_seconds
                        ev.gpu_approximate |= s.approximate
                if waiting:  # exact once the shared books have integrated its intervals
                    self.cluster.hold(ev, waiting, self._finish_now)
                    return
                ev.gpu_seconds = math.fsum(a.gpu_seconds for a in ev.attempts)
        self._finish_now(ev)

    def _finish_now(self, ev: UsageEvent) -> None:
        self.price(ev)
        self.deliver(ev)

    def deliver(self, ev: UsageEvent) -> None:
        """Hand a priced event to every sink (with workers, the hub's way in: the worker
        that served it priced it)."""
        self.events_finished += 1
        for sink in self._fast:
            try:
                sink(ev)
            except Exception:  # a broken sink must not break the request
                log.exception("usage sink failed")
        if self._slow:
            self._queue.append(ev)
            if len(self._queue) == 1:
                self._wake.set()

    # ------------------------------------------------------------ sinks

    def add_fast_sink(self, sink: FastSink) -> None:
        self._fast.append(sink)

    def add_slow_sink(self, sink: SlowSink) -> None:
        self._slow.append(sink)

    async def start(self) -> None:
        if self._slow and self._drainer is None:
            self._drainer = asyncio.create_task(self._drain_forever())

    async def _drain_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.drain()

    async def drain(self) -> None:
        while self._queue or self._later:
            while self._later:  # older: left by write_now
                sink, batch = self._later.popleft()
                await self._send(sink, batch)
            if self._queue:
                batch = list(self._queue)
                self._queue.clear()
                for sink in self._slow:
                    await self._send(sink, batch)

    @staticmethod
    async def _send(sink: SlowSink, batch: list[UsageEvent]) -> None:
        try:
            await sink(batch)
        except Exception:
            log.exception("slow usage sink failed")

    def write_now(self) -> None:
        """What is queued, written at once by the sinks that can (`WritesNow`); the others
        get the same batch in the background. The cluster books call it before a sync
        reports the delivered events as done, so a SIGKILL cannot leave an event reported
        but unwritten (cluster_gpu.py)."""
        if not self._queue:
            return
        batch = list(self._queue)
        self._queue.clear()
        for sink in self._slow:
            if isinstance(sink, WritesNow):
                try:
                    sink.write_now(batch)
                except Exception:
                    log.exception("slow usage sink failed")
            else:
                self._later.append((sink, batch))
        if self._later:
            self._wake.set()

    async def stop(self) -> None:
        if self._drainer is not None:
            self._drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drainer
            self._drainer = None
        await self.drain()

    # ------------------------------------------------------------ pool figures

    def pool_snapshot(self) -> Iterable[dict[str, Any]]:
        for name, acct in self.pools.items():
            pricing = self.pricing[name]
            prov = acct.provisioned_gpu_seconds
            busy = acct.busy_gpu_seconds
            idle = max(0.0, prov - busy)
            wall = prov / acct.gpus if acct.gpus else 0.0
            fixed = (
                idle * pricing.idle_usd_per_gpu_second + pricing.engineering_usd_per_second * wall
            )
            row = {
                "pool": name,
                "gpus": acct.gpus,
                "provisioned_gpu_seconds": prov,
                "busy_gpu_seconds": busy,
                "idle_gpu_seconds": idle,
                "fixed_cost_usd": fixed,
                "utilization": busy / prov if prov > 0 else 0.0,
                "inflight": acct.inflight,
                "usd_per_gpu_second": pricing.usd_per_gpu_second,
            }
            if isinstance(acct, ClusterPool):
                # This replica's parts of the pool's counters: summed over the replicas
                # (Prometheus) they are the pool's, counted once.
                p_busy, p_idle = acct.parts()
                for parts in self.worker_parts.values():
                    w_busy, w_idle = parts.get(name, (0.0, 0.0))
                    p_busy += w_busy
                    p_idle += w_idle
                row["approximate"] = acct.approximate
                row["part_busy_gpu_seconds"] = p_busy
                row["part_provisioned_gpu_seconds"] = p_busy + p_idle
                row["part_fixed_cost_usd"] = (
                    p_idle * pricing.idle_usd_per_gpu_second
                    + pricing.engineering_usd_per_second * (p_busy + p_idle) / acct.gpus
                )
            yield row

    def books_report(self) -> dict[str, dict[str, Any]]:
        """How each pool's books are kept: this process alone, or shared by the replicas
        (and whether they are approximate: /costs/report's `gpu_books`)."""
        out: dict[str, dict[str, Any]] = {}
        for name, acct in self.pools.items():
            if isinstance(acct, ClusterPool):
                out[name] = acct.report()
            else:
                mode = "local" if isinstance(acct, PoolAccount) else "host"
                out[name] = {"mode": mode, "approximate": False}
        return out
