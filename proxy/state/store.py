"""The state store: budgets and rate limits decided locally, shared in the background.

The request path calls `admit()` (O(1): a few dict reads on the local ledger, never a
network call) and the Meter's slow sink calls `record()` with finished UsageEvents,
the only source of spend. A background task syncs every `state.flush_interval_s`:
it sends this replica's deltas (if any) and reads back the shared counters it decides
on, in one round trip; with nothing to send it still reads every
`state.refresh_interval_s`. If the backend is unreachable the replica keeps serving on
its local view, counts the failure, reports `degraded` with the reason, and retries
the same batch until it lands, so the durable totals end up exact.

How stale can a replica's view be? Its own spend counts at once; another replica's
spend reaches it within that replica's flush interval plus its own refresh interval
(plus a round trip). Budget and rate-limit overshoot are bounded by what the other
replicas admit in that time (docs/state.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from proxy.config import Config
from proxy.metering.events import UsageEvent
from proxy.state.base import Remote
from proxy.state.budgets import NANO, Budgets, month_bounds, month_key, tenant_fields
from proxy.state.ledger import Ledger
from proxy.state.ratelimit import RateLimits

log = logging.getLogger("hybridgate.state")


class StateStore:
    def __init__(
        self, config: Config, remote: Remote, clock: Callable[[], float] = time.time
    ) -> None:
        self.remote = remote
        self.ledger = Ledger()
        self._clock = clock
        self.flush_failures = 0
        self.degraded_reason: str | None = None
        self.last_sync: float | None = None  # monotonic time of the last good round trip
        self._task: asyncio.Task[None] | None = None
        self._fields: dict[str, tuple[str, str, str, str, str]] = {}
        self._month_start = self._month_end = 0.0
        self._month_hash = ""
        self._wid = -1
        self._window_hash = ""
        self.prefix = config.state.prefix  # like the url, fixed for the process's life
        self.configure(config)

    # ------------------------------------------------------------ config

    def configure(self, config: Config) -> None:
        """(Re)build budgets, limits and intervals from a config (a reload); counters are
        kept. The backend (url, prefix) is chosen once, at start."""
        s = config.state
        self.flush_interval_s = s.flush_interval_s
        self.refresh_interval_s = s.refresh_interval_s
        self.timeout_s = s.timeout_s
        self.budgets = Budgets(config)
        self.limits = RateLimits(config)
        self._wid = -1
        now = self._clock()
        self._roll_month(now)
        self._roll_window(now)

    def _roll_month(self, now: float) -> None:
        self._month_start, self._month_end = month_bounds(now)
        self._month_hash = self.spend_hash(month_key(now))

    def _roll_window(self, now: float) -> None:
        self._wid = int(now // self.limits.window_s)
        self._window_hash = self._rate_hash(self._wid)

    def spend_hash(self, month: str) -> str:
        """Redis hash of one UTC month's spend: fields `<tenant>|<counter>`."""
        return f"{self.prefix}:spend:{month}"

    def _rate_hash(self, wid: int) -> str:
        return f"{self.prefix}:rate:{self.limits.window_s:g}:{wid}"

    # ------------------------------------------------------------ the request path

    def admit(self, tenant: str, key_name: str, alias: str) -> bool:
        """Budget and rate checks for one request, on local state only.

        Returns True when the request may use self-hosted targets only (tenant over its
        API budget with `over_budget: self_hosted_only`); raises a 429 ProxyError when
        it must be refused. An admitted request counts against its key's rpm.
        """
        self_hosted_only = False
        now = self._clock()
        b = self.budgets.by_tenant.get(tenant)
        if b is not None:
            if now >= self._month_end:
                self._roll_month(now)
            spent = self.ledger.value(self._month_hash, b.field)
            if spent >= b.limit_nano:
                if b.mode == "reject":
                    if self.budgets.alias_api.get(alias, True):
                        raise self.budgets.error(b, spent, now)
                elif self.budgets.alias_self_hosted.get(alias, False):
                    self_hosted_only = True
                else:
                    raise self.budgets.error(b, spent, now)
        lim = self.limits.by_key.get(key_name)
        if lim is not None:
            wid = int(now // self.limits.window_s)
            if wid != self._wid:
                self._roll_window(now)
            h = self._window_hash
            if lim.rpm is not None:
                used = self.ledger.value(h, lim.f_req)
                if used >= lim.rpm:
                    raise self.limits.error(lim, "requests", used, wid, now)
            if lim.tpm is not None:
                used = self.ledger.value(h, lim.f_tok)
                if used >= lim.tpm:
                    raise self.limits.error(lim, "tokens", used, wid, now)
            if lim.rpm is not None:
                self.ledger.add(h, lim.f_req, 1)
        return self_hosted_only

    # ------------------------------------------------------------ the meter's slow sink

    async def record(self, events: Iterable[UsageEvent]) -> None:
        for ev in events:
            self.add_event(ev)

    def add_event(self, ev: UsageEvent) -> None:
        """Fold one UsageEvent into the local deltas: spend, requests, tokens, tpm."""
        add = self.ledger.add
        ts = ev.started_at
        h = (
            self._month_hash
            if self._month_start <= ts < self._month_end
            else self.spend_hash(month_key(ts))
        )
        f = self._fields.get(ev.tenant)
        if f is None:
            f = self._fields[ev.tenant] = tenant_fields(ev.tenant)
        add(h, f[0], 1)
        if ev.cost_usd:
            add(h, f[2] if ev.self_hosted else f[1], round(ev.cost_usd * NANO))
        add(h, f[3], ev.prompt_tokens)
        add(h, f[4], ev.completion_tokens)
        lim = self.limits.by_key.get(ev.key_name)
        if lim is not None and lim.tpm is not None:
            wid = int((ts + ev.duration_s) // self.limits.window_s)
            h = self._window_hash if wid == self._wid else self._rate_hash(wid)
            add(h, lim.f_tok, ev.prompt_tokens + ev.completion_tokens)
        self.ledger.events_unsynced += 1

    # ------------------------------------------------------------ background sync

    def _reads(self) -> dict[str, list[str]]:
        reads: dict[str, list[str]] = {}
        if self.budgets.by_tenant:
            reads[self._month_hash] = [b.field for b in self.budgets.by_tenant.values()]
        if self.limits.by_key:
            fields = []
            for lim in self.limits.by_key.values():
                if lim.rpm is not None:
                    fields.append(lim.f_req)
                if lim.tpm is not None:
                    fields.append(lim.f_tok)
            reads[self._window_hash] = fields
        return reads

    async def sync(self, force_read: bool = False) -> bool:
        """One round trip: flush the pending batch (or retry the unacknowledged one) and
        read back what budgets and limits need. False if the backend did not answer."""
        now = self._clock()
        if now >= self._month_end:
            self._roll_month(now)
        if int(now // self.limits.window_s) != self._wid:
            self._roll_window(now)
        rate_prefix = f"{self.prefix}:rate:"
        recent = (self._window_hash, self._rate_hash(self._wid - 1))
        for h in [h for h in self.ledger.pending if h.startswith(rate_prefix)]:
            if h not in recent:  # counts of a window long over (a long outage): useless
                self.ledger.drop_pending(h)
        taken = self.ledger.take()
        mono = time.monotonic()
        if (
            taken is None
            and not force_read
            and self.last_sync is not None
            and self.degraded_reason is None
            and mono - self.last_sync < self.refresh_interval_s
        ):
            return True
        seq, ops = taken if taken is not None else (0, {})
        ttl = max(int(2 * self.limits.window_s) + 5, 10)
        expire = {h: ttl for h in ops if h.startswith(rate_prefix)}
        reads = self._reads()
        try:
            totals = await asyncio.wait_for(
                self.remote.apply(seq, ops, expire, reads), self.timeout_s
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.flush_failures += 1
            reason = f"{self.remote.kind} unreachable: {_short(exc)}"
            if self.degraded_reason is None:
                log.warning(
                    "state store %s: %s; serving on local state, retrying every %ss",
                    self.remote.display_url,
                    reason,
                    self.flush_interval_s,
                )
            self.degraded_reason = reason
            return False
        self.ledger.ack(totals)
        self.ledger.prune(set(reads))
        if self.degraded_reason is not None:
            log.warning("state store %s is back; local deltas reconciled", self.remote.display_url)
            self.degraded_reason = None
        self.last_sync = time.monotonic()
        return True

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval_s)
            try:
                await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not end syncing for good
                log.exception("state sync failed")

    async def start(self) -> None:
        """Read month-to-date state once (so budgets hold from the first request), then
        sync in the background. Idempotent; an unreachable backend only degrades."""
        if self._task is not None:
            return
        await self.sync(force_read=True)
        self._task = asyncio.create_task(self._run(), name="hybridgate-state-sync")

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Stop syncing and flush what is left, trying for up to `timeout_s`."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        deadline = time.monotonic() + timeout_s
        while self.ledger.pending or self.ledger.inflight is not None:
            if await self.sync():
                continue
            if time.monotonic() >= deadline:
                log.error(
                    "state store %s unreachable at shutdown: %d events' spend not written",
                    self.remote.display_url,
                    self.ledger.unsynced,
                )
                break
            await asyncio.sleep(min(0.2, self.flush_interval_s))
        await self.remote.close()

    # ------------------------------------------------------------ reading

    def api_spend_nano(self, tenant: str) -> int:
        """Month-to-date API spend of a tenant as this replica sees it."""
        now = self._clock()
        if now >= self._month_end:
            self._roll_month(now)
        return self.ledger.value(self._month_hash, tenant_fields(tenant)[1])

    def health(self) -> dict[str, Any]:
        age = None if self.last_sync is None else round(time.monotonic() - self.last_sync, 3)
        return {
            "backend": self.remote.kind,
            "url": self.remote.display_url,
            "status": "degraded" if self.degraded_reason else "ok",
            "reason": self.degraded_reason,
            "last_sync_age_s": age,
            "unsynced_events": self.ledger.unsynced,
            "flush_failures": self.flush_failures,
        }

    @property
    def degraded(self) -> bool:
        return self.degraded_reason is not None

    async def month_totals(self, month: str | None = None) -> dict[str, dict[str, int]]:
        """Durable per-tenant totals of a month as the backend holds them (reports)."""
        raw = await self.remote.read_hash(self.spend_hash(month or month_key(self._clock())))
        out: dict[str, dict[str, int]] = {}
        for field, value in raw.items():
            tenant, _, counter = field.rpartition("|")
            out.setdefault(tenant, {})[counter] = value
        return out


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:200]
