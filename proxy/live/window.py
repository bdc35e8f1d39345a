"""The windowed traffic model: fixed-size ring buffers of per-second and per-minute buckets.

Fed by the Meter as a fast sink (`observe`: a clock read, a dict lookup and at most eight
float adds into a preallocated array, O(1) per event) and by the refresher with
cumulative GPU pool figures (`sample_pools`, turned into deltas). Memory is fixed at
construction: every series owns one `array('d')` per ring of `slots × fields` doubles,
and the number of series is bounded by config (alias × backend pairs, pools), never by
client input.

Two rings: seconds for one hour (3,600 slots: fine-grained charts, the trailing
utilization gauge) and minutes for seven days (10,080 slots: the report's numbers).
Events are written to the current second only; when the clock enters a new second, the
finished second is folded into its minute bucket (one vector add per series), so the
request path pays for one ring. Slot `p % slots` holds period `p = floor(unix_time /
width)`; slots the clock skipped are zeroed before reuse, and a minute slot's contents
are moved into the series' `retired` sums before it is reused, so totals since start
stay exact after seven days.
"""

from __future__ import annotations

import math
import time
from array import array
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from proxy.metering.events import UsageEvent

# Event series fields, per (alias, backend).
REQUESTS, ERRORS, PROMPT, COMPLETION, CACHED, COST, COUNTERFACTUAL, GPU_SECONDS = range(8)
EVENT_FIELDS: Final[tuple[str, ...]] = (
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cost_usd",
    "counterfactual_usd",
    "gpu_seconds",
)
# Pool series fields, per GPU pool. PEAK_INFLIGHT combines by max, the others by sum.
PROVISIONED, BUSY, FIXED, PEAK_INFLIGHT = range(4)
POOL_FIELDS: Final[tuple[str, ...]] = (
    "provisioned_gpu_seconds",
    "busy_gpu_seconds",
    "fixed_cost_usd",
    "peak_inflight",
)

MINUTE_SLOTS: Final[int] = 7 * 1440
SECOND_SLOTS: Final[int] = 3600
WINDOWS: Final[dict[str, float | None]] = {
    "1h": 3600.0,
    "24h": 86400.0,
    "7d": 604800.0,
    "all": None,
}

EventKey = tuple[str, str | None]  # (alias, backend); backend None: rejected before any attempt


class _Ring:
    """Which period is current for one bucket width."""

    __slots__ = ("period", "size", "width")

    def __init__(self, width: int, size: int, now: float) -> None:
        self.width = width
        self.size = size
        self.period = int(now // width)

    def slot(self, period: int) -> int:
        return period % self.size


class _Series:
    """One series: its second and minute buckets, and what has aged out of the minutes."""

    __slots__ = ("fields", "minutes", "peak", "retired", "seconds")

    def __init__(self, fields: int, peak: int | None, minute_slots: int, second_slots: int):
        self.fields = fields
        self.peak = peak  # the field combined by max (None: all add)
        self.seconds = array("d", bytes(8 * fields * second_slots))
        self.minutes = array("d", bytes(8 * fields * minute_slots))
        self.retired = array("d", bytes(8 * fields))


@dataclass(frozen=True)
class Frame:
    """Consecutive buckets of one ring, copied out for the report.

    Bucket i covers [t0 + i × width, t0 + (i + 1) × width); the first may start before
    the proxy did and the last is the current, partial one. `events[key][f]` and
    `pools[name][f]` are arrays of n values of field f.
    """

    t0: float
    width: int
    n: int
    events: Mapping[EventKey, tuple[array, ...]]
    pools: Mapping[str, tuple[array, ...]]


@dataclass(frozen=True)
class WindowView:
    """What the report needs from one window, copied at one instant.

    Time covered, exactly: end = now; start = max(proxy start, start of the oldest
    minute bucket in the window), the window being the current minute bucket and the
    whole ones before it up to the window's length (for `all`: start = proxy start);
    seconds = end − start, so seconds <= the window's length.
    `events`/`pools`: per-series totals over that time (fields EVENT_FIELDS /
    POOL_FIELDS). `minutes`: the per-minute buckets behind them (for `all`, at most the
    last 7 days; its totals are the running sums since start). `seconds_frame`: the
    per-second buckets over the same time when it fits in the second ring (for charts).
    """

    window: str
    started_at: float
    start: float
    end: float
    seconds: float
    events: Mapping[EventKey, tuple[float, ...]]
    event_pool: Mapping[EventKey, str | None]
    pools: Mapping[str, tuple[float, ...]]
    minutes: Frame
    seconds_frame: Frame | None
    # The endpoint each alias's traffic first came in on (chat | completions | embeddings):
    # an embeddings alias is compared with an embeddings model only.
    alias_endpoints: Mapping[str, str] = field(default_factory=dict)


class Window:
    """The ring-buffer store. Single-threaded: call it from the event loop only."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        minute_slots: int = MINUTE_SLOTS,
        second_slots: int = SECOND_SLOTS,
        pool_inflight: Callable[[str], int] | None = None,
        backend_pool: Callable[[str], str | None] | None = None,
    ) -> None:
        self._clock = clock
        now = clock()
        self.started_at = now
        self.minute = _Ring(60, minute_slots, now)
        self.second = _Ring(1, second_slots, now)
        self._events: dict[EventKey, _Series] = {}
        self._event_pool: dict[EventKey, str | None] = {}
        self._alias_endpoint: dict[str, str] = {}
        self._pools: dict[str, _Series] = {}
        self._pool_last: dict[str, tuple[float, float, float]] = {}
        self._pool_inflight = pool_inflight
        self._backend_pool = backend_pool
        width = max(len(EVENT_FIELDS), len(POOL_FIELDS))
        self._zeros = array("d", bytes(8 * width * max(minute_slots, second_slots)))
        self._next_roll = math.floor(now) + 1.0
        self._base = self.second.slot(self.second.period) * len(EVENT_FIELDS)
        self.events_seen = 0

    # ------------------------------------------------------------ writing

    def observe(self, ev: UsageEvent) -> None:
        """The Meter's fast sink: add one priced event to the current second. O(1)."""
        now = self._clock()
        if now >= self._next_roll:
            self._roll(now)
        key = (ev.alias, ev.backend)
        s = self._events.get(key)
        if s is None:
            s = self._new_event_series(key, ev.pool)
            self._alias_endpoint.setdefault(ev.alias, ev.endpoint)  # once per series
        b = s.seconds
        i = self._base
        self.events_seen += 1
        b[i] += 1.0
        if ev.outcome != "success":
            b[i + 1] += 1.0
        if ev.prompt_tokens:
            b[i + 2] += ev.prompt_tokens
        if ev.completion_tokens:
            b[i + 3] += ev.completion_tokens
        if ev.cached_tokens:
            b[i + 4] += ev.cached_tokens
        if ev.counterfactual_usd:
            b[i + 6] += ev.counterfactual_usd
        if len(ev.attempts) > 1 or ev.backend is None:
            self._split_attempts(ev)  # failover: each attempt's cost to its own backend
        else:
            if ev.cost_usd:
                b[i + 5] += ev.cost_usd
            if ev.gpu_seconds:
                b[i + 7] += ev.gpu_seconds
        pool = ev.pool
        if pool is not None and self._pool_inflight is not None:
            # The request has left the pool already, so just before it left n + 1 were in
            # flight. In-flight peaks just before some request leaves: sampling here finds
            # each bucket's maximum.
            inflight = self._pool_inflight(pool) + 1
            p = self._pools.get(pool) or self._pool_series(pool)
            k = self.second.slot(self.second.period) * len(POOL_FIELDS) + PEAK_INFLIGHT
            if inflight > p.seconds[k]:
                p.seconds[k] = inflight

    def _split_attempts(self, ev: UsageEvent) -> None:
        """Cost and GPU-seconds of each attempt to (alias, its backend), as Prometheus's
        cost counter books them: a failed attempt on our GPUs spent GPU time there."""
        for a in ev.attempts:
            if not (a.cost_usd or a.gpu_seconds):
                continue
            key = (ev.alias, a.backend)
            s = self._events.get(key)
            if s is None:
                pool = self._backend_pool(a.backend) if self._backend_pool else None
                s = self._new_event_series(key, pool)
            s.seconds[self._base + COST] += a.cost_usd
            s.seconds[self._base + GPU_SECONDS] += a.gpu_seconds

    def sample_pools(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Record a pool snapshot (cumulative GPU-seconds and fixed USD) as deltas.

        A pool whose cumulative figures went down (its account was rebuilt) starts a new
        baseline: its whole new cumulative figure is the delta.
        """
        now = self._clock()
        if now >= self._next_roll:
            self._roll(now)
        base = self.second.slot(self.second.period) * len(POOL_FIELDS)
        for row in rows:
            name = row["pool"]
            cur = (
                float(row["provisioned_gpu_seconds"]),
                float(row["busy_gpu_seconds"]),
                float(row["fixed_cost_usd"]),
            )
            last = self._pool_last.get(name)
            if last is None or any(c < p for c, p in zip(cur, last, strict=True)):
                last = (0.0, 0.0, 0.0)
            self._pool_last[name] = cur
            buf = self._pool_series(name).seconds
            for f in (PROVISIONED, BUSY, FIXED):
                buf[base + f] += cur[f] - last[f]

    def _new_event_series(self, key: EventKey, pool: str | None) -> _Series:
        s = self._events[key] = _Series(len(EVENT_FIELDS), None, self.minute.size, self.second.size)
        self._event_pool[key] = pool
        return s

    def _pool_series(self, name: str) -> _Series:
        s = self._pools.get(name)
        if s is None:
            s = self._pools[name] = _Series(
                len(POOL_FIELDS), PEAK_INFLIGHT, self.minute.size, self.second.size
            )
        return s

    def _all_series(self) -> Iterable[_Series]:
        yield from self._events.values()
        yield from self._pools.values()

    def _roll(self, now: float) -> None:
        """Fold the finished second into its minute, then enter the current periods."""
        self._next_roll = math.floor(now) + 1.0
        sec, minute = self.second, self.minute
        p_sec = int(now)
        if p_sec <= sec.period:
            return  # same second, or the clock stepped back: keep writing the current one
        old = sec.slot(sec.period)
        into = minute.slot(sec.period // 60)
        for s in self._all_series():
            _fold(s, s.seconds, old, s.minutes, into)
        p_min = int(now // 60)
        if p_min > minute.period:
            count = min(p_min - minute.period, minute.size)
            first = minute.slot(minute.period + 1)
            for s in self._all_series():
                _retire(s, first, count, minute.size)
                self._clear(s.minutes, s.fields, first, count, minute.size)
            minute.period = p_min
        count = min(p_sec - sec.period, sec.size)
        first = sec.slot(sec.period + 1)
        for s in self._all_series():
            self._clear(s.seconds, s.fields, first, count, sec.size)
        sec.period = p_sec
        self._base = sec.slot(p_sec) * len(EVENT_FIELDS)

    def _clear(self, buf: array, fields: int, first: int, count: int, size: int) -> None:
        head = min(count, size - first)
        buf[first * fields : (first + head) * fields] = self._zeros[: head * fields]
        rest = count - head
        if rest:
            buf[0 : rest * fields] = self._zeros[: rest * fields]

    # ------------------------------------------------------------ reading

    @property
    def nbytes(self) -> int:
        """Bytes held by the bucket arrays (fixed per series; series bounded by config)."""
        return sum(
            (len(s.seconds) + len(s.minutes) + len(s.retired)) * 8 for s in self._all_series()
        )

    @property
    def series_count(self) -> int:
        return len(self._events) + len(self._pools)

    def _now(self) -> float:
        now = self._clock()
        if now >= self._next_roll:
            self._roll(now)
        return now

    def utilization(self, pool: str, seconds: int) -> float | None:
        """Busy / provisioned GPU-seconds of `pool` over the trailing `seconds` (at most
        the second ring's hour); None before anything was provisioned."""
        s = self._pools.get(pool)
        if s is None:
            return None
        self._now()
        cols = self._cut(s.seconds, s.fields, self.second, min(seconds, self.second.size))
        prov = math.fsum(cols[PROVISIONED])
        return math.fsum(cols[BUSY]) / prov if prov > 0 else None

    def view(self, window: str) -> WindowView:
        """Copy what the report needs for `window` (one of WINDOWS) at this instant."""
        if window not in WINDOWS:
            raise ValueError(f"unknown window {window!r}; use one of {', '.join(WINDOWS)}")
        now = self._now()
        length = WINDOWS[window]
        minute, sec = self.minute, self.second
        n_min = min(minute.size, minute.period - int(self.started_at // 60) + 1)
        if length is not None:
            n_min = min(n_min, int(length // 60))
        minutes = self._frame(minute, n_min)
        if length is None:
            start = self.started_at
            events = {k: self._since_start(s) for k, s in self._events.items()}
            pools = {k: self._since_start(s) for k, s in self._pools.items()}
        else:
            start = max(self.started_at, minutes.t0)
            events = {k: _totals(cols, None) for k, cols in minutes.events.items()}
            pools = {k: _totals(cols, PEAK_INFLIGHT) for k, cols in minutes.pools.items()}
        fine = None
        n_sec = sec.period - int(start) + 1
        if n_sec <= sec.size:
            fine = self._frame(sec, n_sec)
        return WindowView(
            window=window,
            started_at=self.started_at,
            start=start,
            end=now,
            seconds=now - start,
            events=events,
            event_pool=dict(self._event_pool),
            pools=pools,
            minutes=minutes,
            seconds_frame=fine,
            alias_endpoints=dict(self._alias_endpoint),
        )

    def _frame(self, ring: _Ring, n: int) -> Frame:
        """The last n buckets of `ring`, oldest first. The minute ring's current bucket
        gets the current second added, which is not folded into it yet."""
        n = max(1, min(n, ring.size))
        cur = self.second.slot(self.second.period)

        def columns(s: _Series) -> tuple[array, ...]:
            if ring is self.second:
                return self._cut(s.seconds, s.fields, ring, n)
            cols = self._cut(s.minutes, s.fields, ring, n)
            _fold_columns(s, s.seconds, cur, cols, n - 1)
            return cols

        return Frame(
            t0=float((ring.period - n + 1) * ring.width),
            width=ring.width,
            n=n,
            events={k: columns(s) for k, s in self._events.items()},
            pools={k: columns(s) for k, s in self._pools.items()},
        )

    @staticmethod
    def _cut(buf: array, fields: int, ring: _Ring, n: int) -> tuple[array, ...]:
        """Each field of the last n buckets of `ring` in `buf`, oldest first."""
        a = ring.slot(ring.period - n + 1)
        out = []
        for f in range(fields):
            if a + n <= ring.size:
                out.append(buf[a * fields + f : (a + n) * fields : fields])
            else:
                head = buf[a * fields + f :: fields]
                out.append(head + buf[f : (n - len(head)) * fields : fields])
        return tuple(out)

    def _since_start(self, s: _Series) -> tuple[float, ...]:
        """retired + every minute bucket + the current (unfolded) second."""
        cur = self.second.slot(self.second.period) * s.fields
        out = []
        for f in range(s.fields):
            col = s.minutes[f :: s.fields]
            if f == s.peak:
                out.append(max(s.retired[f], max(col), s.seconds[cur + f]))
            else:
                out.append(math.fsum((s.retired[f], math.fsum(col), s.seconds[cur + f])))
        return tuple(out)


def _fold(s: _Series, src: array, i: int, dst: array, j: int) -> None:
    """dst bucket j += src bucket i, field by field (max for the peak field)."""
    f_n = s.fields
    a, b = i * f_n, j * f_n
    for f in range(f_n):
        v = src[a + f]
        if v:
            if f == s.peak:
                if v > dst[b + f]:
                    dst[b + f] = v
            else:
                dst[b + f] += v


def _fold_columns(s: _Series, src: array, i: int, cols: tuple[array, ...], j: int) -> None:
    """Like _fold, into column arrays (a Frame's) at index j."""
    a = i * s.fields
    for f, col in enumerate(cols):
        v = src[a + f]
        if v:
            if f == s.peak:
                col[j] = max(col[j], v)
            else:
                col[j] += v


def _retire(s: _Series, first: int, count: int, size: int) -> None:
    """Move the contents of `count` minute slots from `first` into `s.retired`."""
    f_n = s.fields
    spans = [(first, min(count, size - first))]
    if count > spans[0][1]:
        spans.append((0, count - spans[0][1]))
    for start, n in spans:
        for f in range(f_n):
            col = s.minutes[start * f_n + f : (start + n) * f_n : f_n]
            if f == s.peak:
                s.retired[f] = max(s.retired[f], max(col, default=0.0))
            else:
                s.retired[f] += math.fsum(col)


def _totals(columns: tuple[array, ...], peak: int | None) -> tuple[float, ...]:
    """Each field over the buckets: exactly rounded sums; the `peak` field by max."""
    return tuple(
        max(col, default=0.0) if f == peak else math.fsum(col) for f, col in enumerate(columns)
    )
