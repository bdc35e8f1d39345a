"""GPU-second books of a pool shared by several worker processes (`serve --workers N`).

The same running integral as PoolAccount (gpu.py), but its state (acc, total weight,
last event, busy wall time, in-flight count, start, tokens served) lives in a small
memory-mapped file that every worker maps, and each update holds an exclusive
`flock` on it (uncontended: a couple of µs). So the interval between two events on a
pool is split among the requests in flight in *all* workers, the per-request shares
add up to the pool's busy GPU-seconds, and provisioned time is counted once: gpus ×
wall clock since the block was created (the supervisor creates it before the workers
start). The clock must be system-wide: time.monotonic is (CLOCK_MONOTONIC).

Each process also keeps its own part of the weight and in-flight count in a slot of the
block, under its pid: a worker killed mid-request never ends its shares, and without the
slot its weight would stay in the total for good, diluting every later request's share
and counting the pool busy while it idles. The supervisor releases a dead worker's slot
(`release(pid)`) when it notices the exit.

Only `serve --workers N` with N > 1 uses this; one process keeps PoolAccount.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import time
from collections.abc import Callable
from pathlib import Path

_ACC, _TW, _LAST, _BUSY, _INFLIGHT, _STARTED, _TOKENS, _GPUS, _MAGIC = range(9)
# Per-process slots after the header: (pid, weight, in flight); pid 0 = free.
_SLOT0 = 9
_SLOT_PID, _SLOT_TW, _SLOT_INFLIGHT = range(3)
_MAX_SLOTS = 128  # processes with shares at once: workers, and their replacements
_SIZE = (_SLOT0 + 3 * _MAX_SLOTS) * 8
_READY = 20260514.0  # written last: the block has been initialised


class _Locked:
    """`with` the block's exclusive flock (per open file, so threads exclude too)."""

    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def __enter__(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)


def _add_weight(v: memoryview[float], slot: int, weight: float, requests: int) -> None:
    """Weight and in-flight count into the totals and this process's slot (-1: none)."""
    tw = v[_TW] + weight
    v[_TW] = tw if tw >= 1e-12 else 0.0
    v[_INFLIGHT] += requests
    if slot >= 0:
        tw = v[slot + _SLOT_TW] + weight
        v[slot + _SLOT_TW] = tw if tw >= 1e-12 else 0.0
        v[slot + _SLOT_INFLIGHT] += requests


def _advance(v: memoryview[float], gpus: float, now: float) -> None:
    dt = now - v[_LAST]
    if dt > 0.0:
        tw = v[_TW]
        if tw > 0.0:
            v[_ACC] += gpus * dt / tw
            v[_BUSY] += dt
        v[_LAST] = now


class SharedPoolAccount:
    """A PoolAccount whose books live in a file mapped by every worker."""

    def __init__(
        self,
        path: str | Path,
        gpus: int,
        prefill_weight: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.gpus = gpus
        self.prefill_weight = prefill_weight
        self._clock = clock
        self._slot = -1  # this process's slot, claimed with its first share
        self._slot_claimed = False
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        self._lock = _Locked(self._fd)
        with self._lock:
            if os.fstat(self._fd).st_size < _SIZE:
                os.ftruncate(self._fd, _SIZE)
            self._mm = mmap.mmap(self._fd, _SIZE)
            self._v = memoryview(self._mm).cast("d")
            v = self._v
            if v[_MAGIC] != _READY:  # first to map it: the pool is declared up now
                now = clock()
                v[_STARTED] = v[_LAST] = now
                v[_GPUS] = gpus
                v[_MAGIC] = _READY
            elif v[_GPUS] != gpus:
                raise ValueError(
                    f"{self.path}: pool has {v[_GPUS]:g} GPUs in the shared books, {gpus} here"
                )

    # ------------------------------------------------------------ PoolAccount's surface

    def start(self) -> SharedGpuShare:
        """A request enters the pool (its prefill begins)."""
        v = self._v
        w = self.prefill_weight
        with self._lock:
            _advance(v, self.gpus, self._clock())
            mark = v[_ACC]
            slot = self._own_slot(v)
            _add_weight(v, slot, w, 1)
        return SharedGpuShare(self, w, mark, slot)

    def _own_slot(self, v: memoryview[float]) -> int:
        """This process's slot (under the lock), claimed with its first share and kept:
        workers are spawned, never forked, so the pid cannot change under it. -1 if all
        are taken (its shares then cannot be released if it dies)."""
        if self._slot_claimed:
            return self._slot
        pid = os.getpid()
        free = -1
        for i in range(_SLOT0, _SLOT0 + 3 * _MAX_SLOTS, 3):
            owner = v[i + _SLOT_PID]
            if owner == pid:  # another mapping in this process claimed it
                free = i
                break
            if owner == 0 and free < 0:
                free = i
        else:
            if free >= 0:
                v[free + _SLOT_PID] = pid
                v[free + _SLOT_TW] = v[free + _SLOT_INFLIGHT] = 0.0
        self._slot, self._slot_claimed = free, True
        return free

    def release(self, pid: int) -> int:
        """A process died: its shares leave the pool (the time until now stays busy: the
        GPUs were working for them). Returns how many requests it had in flight."""
        v = self._v
        with self._lock:
            for i in range(_SLOT0, _SLOT0 + 3 * _MAX_SLOTS, 3):
                if v[i + _SLOT_PID] == pid:
                    _advance(v, self.gpus, self._clock())
                    n = int(v[i + _SLOT_INFLIGHT])
                    _add_weight(v, -1, -v[i + _SLOT_TW], -n)
                    v[i + _SLOT_PID] = v[i + _SLOT_TW] = v[i + _SLOT_INFLIGHT] = 0.0
                    return n
        return 0

    def add_tokens(self, n: int) -> None:
        with self._lock:
            self._v[_TOKENS] += n

    @property
    def tokens_served(self) -> int:
        return int(self._v[_TOKENS])

    @property
    def inflight(self) -> int:
        return int(self._v[_INFLIGHT])

    @property
    def provisioned_gpu_seconds(self) -> float:
        """gpus × wall-clock since the block was created (once, whatever the workers)."""
        return self.gpus * (self._clock() - self._v[_STARTED])

    @property
    def busy_gpu_seconds(self) -> float:
        with self._lock:
            _advance(self._v, self.gpus, self._clock())
            return self.gpus * self._v[_BUSY]

    def utilization(self) -> float:
        prov = self.provisioned_gpu_seconds
        return self.busy_gpu_seconds / prov if prov > 0 else 0.0

    def close(self) -> None:
        """Unmap (the file stays for the other workers; the supervisor removes it)."""
        self._v.release()
        self._mm.close()
        os.close(self._fd)


class SharedGpuShare:
    """One request's running share of a shared pool's GPU-seconds (GpuShare's surface)."""

    __slots__ = ("_mark", "_pool", "_slot", "done", "gpu_seconds", "weight")

    def __init__(self, pool: SharedPoolAccount, weight: float, mark: float, slot: int) -> None:
        self._pool = pool
        self.weight = weight
        self._mark = mark
        self._slot = slot
        self.gpu_seconds = 0.0
        self.done = False

    def _settle(self, v: memoryview[float]) -> None:
        pool = self._pool
        _advance(v, pool.gpus, pool._clock())
        acc = v[_ACC]
        self.gpu_seconds += self.weight * (acc - self._mark)
        self._mark = acc

    def first_token(self) -> None:
        """Prefill is over: from now on the request weighs 1 (decode)."""
        if self.done or self.weight == 1.0:
            return
        pool = self._pool
        v = pool._v
        with pool._lock:
            self._settle(v)
            _add_weight(v, self._slot, 1.0 - self.weight, 0)
        self.weight = 1.0

    def end(self) -> float:
        """The request leaves the pool; returns its attributed GPU-seconds. Idempotent."""
        if self.done:
            return self.gpu_seconds
        pool = self._pool
        v = pool._v
        with pool._lock:
            self._settle(v)
            _add_weight(v, self._slot, -self.weight, -1)
        self.done = True
        return self.gpu_seconds


def pool_file(directory: str | Path, pool: str) -> Path:
    """Where a pool's shared books live (the name hex-encoded: any config key is safe)."""
    return Path(directory) / f"pool-{pool.encode().hex()}.books"


def shared_pool_factory(
    directory: str | Path,
) -> Callable[[str, int, float, Callable[[], float]], SharedPoolAccount]:
    """A Meter pool factory mapping each pool's books from `directory`."""

    def make(
        name: str, gpus: int, prefill_weight: float, clock: Callable[[], float]
    ) -> SharedPoolAccount:
        return SharedPoolAccount(pool_file(directory, name), gpus, prefill_weight, clock)

    return make
