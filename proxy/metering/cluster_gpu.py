"""One set of GPU books per pool across proxy replicas that share a Redis (state.url).

Each replica keeps its own PoolAccount (gpu.py): the books as this replica alone sees
them, the fallback while Redis is away. On top of it, every change of a request's weight
on a pool (start, first token, end) is stamped with this replica's clock and appended to
a local buffer: O(1), no I/O on the request path. A background task sends the buffer to
Redis every `state.flush_interval_s` with a sequence number (a retried batch is applied
once) and a watermark (every later event of this replica is stamped after it); a Lua
script (cluster_lua.py) integrates the events of all replicas in time order up to the
lowest watermark, with the same running integral as PoolAccount, and answers the value
of the integral at each of this replica's events (its "marks"). A request's GPU-seconds
are then exactly its weight × the integral's growth over each of its intervals, among
the requests in flight on the pool from every replica; they are known one or two sync
intervals after the request ends, so the meter holds its UsageEvent until then and
delivers it once, final (`Held`).

What a replica reports as done (the GPU-seconds its UsageEvents carry) decides what the
pool books as unattributed if it dies (its weight's GPU-seconds minus done). So a share is
delivered, and the request log written (`before_report`), just before the call that
reports it as done: a SIGKILL at any moment leaves each share in the log or in the
unattributed GPU-seconds. Only a kill in the instant between that write and the store
applying the call counts one in both (the call is a single write on a connected socket).

Clocks: events carry wall-clock time (this replica's monotonic clock anchored to the
wall clock once per sync, never stepping back), so replicas on different hosts must keep
their clocks in sync (NTP): a skew of ε moves a replica's intervals by ε against the
others'. Busy, idle and provisioned time are measured on the one merged timeline, so
busy ≤ provisioned holds whatever the skew. Leases use Redis's own clock (TIME).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from proxy.metering.cluster_lua import SYNC
from proxy.metering.events import UsageEvent
from proxy.metering.gpu import PoolBooks, Share

log = logging.getLogger("hybridgate.gpu_books")

_SEQ_TTL_S = 7 * 24 * 3600
HOLD_S = 60.0
"""How long a finished request's UsageEvent may wait for its exact GPU-seconds (the store
away longer than that: it goes out with this replica's own view, flagged approximate)."""


class Stamp:
    """This replica's event clock: monotonic, anchored to the wall clock, never backwards."""

    __slots__ = ("_last", "offset")

    def __init__(self) -> None:
        self.offset = time.time() - time.monotonic()
        self._last = 0.0

    def __call__(self) -> float:
        t = time.monotonic() + self.offset
        if t < self._last:  # a re-anchor moved the offset back: hold still instead
            return self._last
        self._last = t
        return t

    def reanchor(self) -> None:
        """Follow the wall clock (NTP slews it); stamps stay monotonic (see __call__)."""
        self.offset = time.time() - time.monotonic()


@dataclass(slots=True)
class Totals:
    """The pool as Redis last answered (GPU-seconds unless said otherwise)."""

    busy_s: float = 0.0  # wall seconds with ≥ 1 request in flight, any replica
    idle_s: float = 0.0
    started: float = 0.0
    last: float = 0.0  # integrated up to this (wall-clock) instant
    inflight: int = 0
    orphan_gpu_s: float = 0.0  # held by requests of replicas that died
    part_busy: float = 0.0  # this replica's parts: Prometheus sums them across replicas
    part_idle: float = 0.0
    replicas: int = 0


@dataclass(slots=True)
class Period:
    """A time the books were this replica's own view (the store was unreachable)."""

    since: float  # wall clock
    until: float | None = None  # the store answered again
    reconciled: bool = False  # the shared books have integrated past `until`

    def as_dict(self) -> dict[str, Any]:
        return {"from": self.since, "to": self.until, "reconciled": self.reconciled}


class ClusterShare:
    """One request's share (Share protocol): the local view at once, the exact one later."""

    __slots__ = ("_pool", "approximate", "attempt", "done", "eids", "final", "gpu_seconds",
                 "local", "lost", "on_final", "weights")  # fmt: skip

    def __init__(self, pool: ClusterPool, local: Share, eid: int) -> None:
        self._pool = pool
        self.local = local
        self.eids = [eid]
        self.weights = [local.weight]  # weight held from eids[k] to eids[k + 1]
        self.done = False
        self.final: float | None = None  # exact GPU-seconds once every mark is in
        self.gpu_seconds = 0.0
        self.attempt: Any = None  # the Attempt whose gpu_seconds this share fills
        self.on_final: Callable[[ClusterShare], None] | None = None
        self.lost = False  # the store released this replica: the local view stands
        self.approximate = False  # final is the local view, not the shared books'

    @property
    def weight(self) -> float:
        return self.local.weight

    def first_token(self) -> None:
        before = self.local.weight
        self.local.first_token()
        if self.local.weight != before and not self.done and not self.lost:
            self.eids.append(self._pool.emit(self, self.local.weight - before, 0))
            self.weights.append(self.local.weight)

    def end(self) -> float:
        if self.done:
            return self.gpu_seconds
        w = self.local.weight
        self.gpu_seconds = self.local.end()
        self.done = True
        if self.lost:
            self.settle_local()
        else:
            self.eids.append(self._pool.emit(self, -w, -1))
        return self.gpu_seconds

    def settle_local(self) -> None:
        """No exact figure will come: the local view is final, flagged approximate."""
        if self.final is None:
            self.approximate = True
            self.confirm()

    def settle(self, marks: dict[int, float]) -> None:
        """Every mark is in: weight × the integral's growth over each interval (final
        once the store has recorded it as reported: `confirm`)."""
        acc = [marks.pop(e) for e in self.eids]
        self.gpu_seconds = sum(w * (acc[k + 1] - acc[k]) for k, w in enumerate(self.weights))

    def confirm(self) -> None:
        if self.final is None:
            self.final = self.gpu_seconds
            if self.on_final is not None:
                self.on_final(self)


class ClusterPool:
    """A pool's books (PoolBooks protocol): the shared totals, or the local view as a
    fallback; per-request shares through ClusterShare."""

    def __init__(self, name: str, local: PoolBooks, stamp: Stamp) -> None:
        self.name = name
        self.local = local
        self.gpus = local.gpus
        self._stamp = stamp
        self._next_eid = 0
        self.buffer: list[tuple[float, int, float, int]] = []  # (t, eid, dw, dn), unsent
        self.batch: tuple[int, float, list[tuple[float, int, float, int]]] | None = None
        self.seq = 0
        self.waiting: dict[int, ClusterShare] = {}  # eid -> the share waiting for its mark
        self.confirming: list[ClusterShare] = []  # exact, delivered before the next call
        self.marks: dict[int, float] = {}  # marks of shares not complete yet
        self.acked: list[str] = []  # marks received, to delete in Redis on the next call
        self.finalised_gpu_s = 0.0  # what this replica's UsageEvents carry (orphan check)
        self.own_tokens = 0  # ...and their tokens: measured throughput = tokens / that
        self.totals: Totals | None = None
        self.synced_mono = 0.0
        self.local_busy_at_sync = 0.0
        self.periods: list[Period] = []
        self._shown = (0.0, 0.0)  # (provisioned, busy) last shown: figures never go back

    # ------------------------------------------------------------ PoolBooks

    @property
    def prefill_weight(self) -> float:
        return self.local.prefill_weight

    @prefill_weight.setter
    def prefill_weight(self, w: float) -> None:
        self.local.prefill_weight = w

    def start(self) -> ClusterShare:
        local = self.local.start()
        eid = self._next_eid = self._next_eid + 1
        self.buffer.append((self._stamp(), eid, local.weight, 1))
        share = self.waiting[eid] = ClusterShare(self, local, eid)
        return share

    def emit(self, share: ClusterShare, dw: float, dn: int) -> int:
        """A weight change of a request, buffered for the next sync (the request path)."""
        eid = self._next_eid = self._next_eid + 1
        self.buffer.append((self._stamp(), eid, dw, dn))
        self.waiting[eid] = share
        return eid

    def add_tokens(self, n: int) -> None:
        self.local.add_tokens(n)
        self.own_tokens += n

    @property
    def tokens_served(self) -> int:
        return self.local.tokens_served

    @property
    def inflight(self) -> int:
        t = self.totals
        return self.local.inflight if t is None or self.approximate else t.inflight

    @property
    def approximate(self) -> bool:
        return self.totals is None or any(not p.reconciled for p in self.periods)

    def _figures(self) -> tuple[float, float]:
        """(provisioned, busy) GPU-seconds of the pool: the shared books, plus this
        replica's own view of the time since they last answered; never decreasing."""
        t = self.totals
        if t is None:
            prov, busy = self.local.provisioned_gpu_seconds, self.local.busy_gpu_seconds
        else:
            prov = self.gpus * (t.last - t.started)
            busy = self.gpus * t.busy_s
            if self.periods and self.periods[-1].until is None:  # the store is away
                prov += self.gpus * (time.monotonic() - self.synced_mono)
                busy += self.local.busy_gpu_seconds - self.local_busy_at_sync
        prov = max(prov, self._shown[0])
        busy = min(max(busy, self._shown[1]), prov)
        self._shown = (prov, busy)
        return prov, busy

    @property
    def provisioned_gpu_seconds(self) -> float:
        return self._figures()[0]

    @property
    def busy_gpu_seconds(self) -> float:
        return self._figures()[1]

    def parts(self) -> tuple[float, float]:
        """This replica's (busy, idle) GPU-seconds parts: summed over every replica they
        are the pool's busy and idle GPU-seconds, each counted once."""
        t = self.totals
        if t is None:
            busy = self.local.busy_gpu_seconds
            return busy, max(0.0, self.local.provisioned_gpu_seconds - busy)
        return t.part_busy, t.part_idle

    # ------------------------------------------------------------ the sync's side

    def take(self) -> tuple[int, float, list[tuple[float, int, float, int]]]:
        """The batch to send: the unacknowledged one again, else the buffer, frozen with
        a watermark no later event can precede."""
        if self.batch is None:
            self.seq += 1
            self._stamp.reanchor()
            wm = self._stamp()
            self.batch = (self.seq, wm, self.buffer)
            self.buffer = []
        return self.batch

    def deliver_settled(self) -> None:
        """Shares made exact by the last answer go out now, before the call that reports
        their GPU-seconds as done (see the module's docstring)."""
        confirmed, self.confirming = self.confirming, []
        for done in confirmed:
            done.confirm()

    def answered(self, reply: list[Any], sent_acks: list[str]) -> None:
        """Redis applied the batch: fold its marks and totals in. Shares it makes exact
        are delivered before the next call (`deliver_settled`)."""
        self.batch = None
        del self.acked[: len(sent_acks)]
        raw = reply[1]
        for k in range(0, len(raw), 2):
            key = raw[k].decode() if isinstance(raw[k], bytes) else str(raw[k])
            self.acked.append(key)
            eid = int(key)
            share = self.waiting.pop(eid, None)
            if share is None or share.final is not None:
                continue  # a share given up on (held too long), or a retried answer
            self.marks[eid] = float(raw[k + 1])
            if share.done and all(e in self.marks for e in share.eids):
                share.settle(self.marks)
                self.finalised_gpu_s += share.gpu_seconds
                self.confirming.append(share)
        f = [float(x) for x in reply[2:10]]
        self.totals = Totals(
            busy_s=f[2], idle_s=f[3], started=f[4], last=f[5], inflight=round(f[6]),
            orphan_gpu_s=f[7], part_busy=f[0], part_idle=f[1], replicas=int(reply[10]),
        )  # fmt: skip
        self.synced_mono = time.monotonic()
        self.local_busy_at_sync = self.local.busy_gpu_seconds
        for p in self.periods:
            if p.until is None:
                p.until = self._stamp()
            if not p.reconciled and self.totals.last >= p.until:
                p.reconciled = True

    def unreachable(self) -> None:
        if not self.periods or self.periods[-1].until is not None:
            self.periods.append(Period(since=self._stamp()))
            del self.periods[:-16]  # the last few are enough to report

    def give_up(self, share: ClusterShare) -> None:
        """A share held too long: its local view stands (flagged approximate)."""
        if share in self.confirming:  # exact already, its confirmation is what is late
            self.confirming.remove(share)
            share.confirm()
            return
        for e in share.eids:
            self.waiting.pop(e, None)
            self.marks.pop(e, None)
        self.finalised_gpu_s += share.gpu_seconds
        share.settle_local()

    def released(self) -> None:
        """The store released this replica (silent past its lease): its shares in flight
        there are gone; they end on the local view, new ones start afresh."""
        for share in self.confirming:
            share.confirm()
        self.confirming = []
        shares = set(self.waiting.values())
        self.waiting.clear()
        for share in shares:
            share.lost = True
            if share.done:
                self.finalised_gpu_s += share.gpu_seconds
                share.settle_local()
        self.marks.clear()
        self.acked.clear()
        self.buffer = []
        self.batch = None
        self.seq = 0

    def report(self) -> dict[str, Any]:
        t = self.totals
        return {
            "mode": "cluster",
            "approximate": self.approximate,
            "approximate_periods": [p.as_dict() for p in self.periods],
            "replicas": t.replicas if t else None,
            "since": t.started if t else None,
            "integrated_until": t.last if t else None,
            "provisioned_gpu_seconds": self.gpus * (t.last - t.started) if t else None,
            "busy_gpu_seconds": self.gpus * t.busy_s if t else None,
            "idle_gpu_seconds": self.gpus * t.idle_s if t else None,
            "inflight": t.inflight if t else None,
            "unattributed_gpu_seconds": t.orphan_gpu_s if t else 0.0,
        }


class Held:
    """A UsageEvent waiting for the exact GPU-seconds of its attempts' shares."""

    __slots__ = ("_finish", "ev", "left", "since")

    def __init__(
        self, ev: UsageEvent, shares: list[ClusterShare], finish: Callable[[UsageEvent], None]
    ) -> None:
        self.ev = ev
        self.left = len(shares)
        self.since = time.monotonic()
        self._finish = finish
        for s in shares:
            s.on_final = self.one_final

    def one_final(self, share: ClusterShare) -> None:
        share.attempt.gpu_seconds = share.gpu_seconds
        if share.approximate:
            self.ev.gpu_approximate = True
        self.left -= 1
        if self.left == 0:
            self.ev.gpu_seconds = math.fsum(a.gpu_seconds for a in self.ev.attempts)
            self._finish(self.ev)


@dataclass
class ClusterBooks:
    """Every pool's cluster books in this replica, and the task syncing them with Redis."""

    client: Any  # redis.asyncio.Redis (the state store's connection pool)
    prefix: str
    interval_s: float
    timeout_s: float
    lease_s: float
    pools: dict[str, ClusterPool] = field(default_factory=dict)
    rid: str = field(default_factory=lambda: secrets.token_hex(8))
    stamp: Stamp = field(default_factory=Stamp)
    hold_s: float = HOLD_S
    failures: int = 0
    held: deque[tuple[Held, list[ClusterShare]]] = field(default_factory=deque)
    before_report: Callable[[], None] | None = None
    """Writes what was delivered (the meter's request log) before a call reports it."""
    _task: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self._script = self.client.register_script(SYNC)

    def wrap(self, name: str, local: PoolBooks) -> ClusterPool:
        pool = self.pools[name] = ClusterPool(name, local, self.stamp)
        return pool

    def hold(
        self, ev: UsageEvent, shares: list[ClusterShare], finish: Callable[[UsageEvent], None]
    ) -> None:
        """Deliver `ev` through `finish` once its shares are exact (or given up on)."""
        self.held.append((Held(ev, shares, finish), shares))

    def expire(self) -> None:
        """Events held past `hold_s` (the store away that long) go out on the local view."""
        now = time.monotonic()
        held = self.held
        while held and (held[0][0].left == 0 or now - held[0][0].since > self.hold_s):
            shares = held.popleft()[1]
            for s in shares:
                if s.final is None:
                    s._pool.give_up(s)

    async def sync_pool(self, pool: ClusterPool, leave: bool = False) -> None:
        pool.deliver_settled()
        if self.before_report is not None:
            self.before_report()
        seq, wm, events = pool.take()
        acks = list(pool.acked)
        base = f"{self.prefix}:gpu:{pool.name}"
        keys = [base, f"{base}:events", f"{base}:replicas", f"{base}:seq:{self.rid}",
                f"{base}:marks:"]  # fmt: skip
        args: list[str | int | float] = [
            self.rid, seq, repr(wm), repr(self.lease_s), pool.gpus,
            repr(pool.finalised_gpu_s), _SEQ_TTL_S, int(leave), len(acks), *acks, len(events),
        ]  # fmt: skip
        for t, eid, dw, dn in events:
            args += (repr(t), eid, repr(dw), dn)
        reply = await asyncio.wait_for(self._script(keys=keys, args=args), self.timeout_s)
        status = reply[0].decode() if isinstance(reply[0], bytes) else reply[0]
        if status == "released":
            log.warning("GPU books of pool %s: this replica was released (silent past its "
                        "lease); rejoining", pool.name)  # fmt: skip
            pool.released()
            self.rid = secrets.token_hex(8)
            return
        pool.answered(reply, acks)

    async def sync(self, leave: bool = False) -> bool:
        ok = True
        for pool in self.pools.values():
            try:
                await self.sync_pool(pool, leave)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not pool.periods or pool.periods[-1].until is not None:
                    log.warning(
                        "GPU books of pool %s: store unreachable (%s); this replica's own "
                        "view until it answers",
                        pool.name,
                        exc,
                    )
                self.failures += 1
                pool.unreachable()
                ok = False
        return ok

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.sync()
                self.expire()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not end syncing for good
                log.exception("GPU books sync failed")

    async def start(self) -> None:
        if self._task is None:
            await self.sync()
            self._task = asyncio.create_task(self._run(), name="hybridgate-gpu-books")

    async def stop(self, timeout_s: float = 3.0) -> None:
        """A graceful stop (requests are over): sync until every held event is exact (or
        `timeout_s`), then leave the pool's books (released at once, not after a lease)."""
        task = self._task
        if task is None:
            return
        self._task = None
        # Cancel until it is done: asyncio.wait_for (Python < 3.12) may swallow a
        # cancellation that arrives as the Redis call completes, and the loop goes on.
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)
        deadline = time.monotonic() + timeout_s
        while any(h.left for h, _ in self.held) and time.monotonic() < deadline:
            await self.sync()
            await asyncio.sleep(self.interval_s)
        self.hold_s = 0.0
        self.expire()  # what is still held goes out on the local view
        with contextlib.suppress(Exception):
            await self.sync(leave=True)
