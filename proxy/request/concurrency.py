"""Concurrency limits on the request path: a backend's slots and a tenant's caps.

Both are O(1) and cost nothing that awaits when there is room: a backend slot is taken
with a counter decrement (no coroutine, unlike `asyncio.Semaphore.acquire`), a key or
tenant without a cap is not counted at all. Waiting (for a slot of a full backend) is
the contended path only, and the caller bounds it with the request's deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from proxy.request.errors import ProxyError

# A full backend or a key at its cap: the wait is unknown; a second is the usual hint.
RETRY_AFTER = (b"retry-after", b"1")


class Slots:
    """A backend's `max_concurrency`: taken at once when free, waited for in FIFO order
    when not. A released slot is handed straight to the oldest waiter, so a request that
    just arrived cannot take it from one that has been waiting."""

    __slots__ = ("_waiters", "free", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.free = limit
        self._waiters: deque[asyncio.Future[None]] = deque()

    def try_take(self) -> bool:
        """A slot now, without waiting, or False. (While anyone waits, `free` is 0: a
        release hands its slot over instead of freeing it.)"""
        if self.free > 0:
            self.free -= 1
            return True
        return False

    async def take(self) -> None:
        """Wait for a slot (FIFO). The caller bounds the wait: a cancellation (deadline,
        client gone) leaves no slot taken, even one handed over just before it."""
        if self.try_take():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # handed a slot as the cancellation came: pass it on
            else:
                with contextlib.suppress(ValueError):  # a release may have dropped it
                    self._waiters.remove(fut)
            raise

    def release(self) -> None:
        waiters = self._waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self.free += 1

    @property
    def in_use(self) -> int:
        return self.limit - self.free

    @property
    def waiting(self) -> int:
        """Requests queued for a slot."""
        return len(self._waiters)


def key_counter(name: str) -> str:
    """The counter of a key's requests in flight (its config name)."""
    return "key|" + name


def tenant_counter(tenant: str) -> str:
    return "tenant|" + tenant


class TenantCaps:
    """Requests in flight per capped key and tenant (`auth.keys[].max_concurrency`,
    `tenants.<name>.max_concurrency`) and the 429 past a cap.

    A principal carries its caps as `((counter, cap, what), ...)`, built once from the
    config; `take` checks and counts them, `release` uncounts them, once per request.
    The counts outlive a reload (the successor gets the same dict), so requests in flight
    across it keep counting against the cap."""

    def __init__(self, counts: dict[str, int] | None = None) -> None:
        self.counts: dict[str, int] = counts if counts is not None else {}

    def take(self, caps: tuple[tuple[str, int, str], ...]) -> None:
        counts = self.counts
        for counter, cap, what in caps:
            if counts.get(counter, 0) >= cap:
                raise cap_error(what, cap)
        for counter, _, _ in caps:
            counts[counter] = counts.get(counter, 0) + 1

    def release(self, caps: tuple[tuple[str, int, str], ...]) -> None:
        counts = self.counts
        for counter, _, _ in caps:
            counts[counter] -= 1


def cap_error(what: str, cap: int) -> ProxyError:
    """429 over a key's or tenant's concurrency cap (`what`: "key 'x'" / "tenant 'y'")."""
    return ProxyError(
        429,
        f"Too many concurrent requests for {what}: at most {cap} may be in flight at once "
        f"(max_concurrency). Retry when one of them has finished.",
        type_="rate_limit_error",
        code="concurrency_limit_exceeded",
        headers=[RETRY_AFTER, (b"x-ratelimit-limit-concurrency", str(cap).encode())],
    )


def saturated_error(alias: str, headers: list[tuple[bytes, bytes]]) -> ProxyError:
    """503 when no target of the plan had a free slot within the request's deadline."""
    return ProxyError(
        503,
        f"Every backend of model '{alias}' is at its concurrency limit (max_concurrency) "
        f"and none freed a slot before the request's deadline. Please retry shortly.",
        code="backend_saturated",
        headers=[RETRY_AFTER, *headers],
        outcome="error",
    )
