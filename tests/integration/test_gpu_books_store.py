"""The cluster GPU books against a real redis-server, replicas as ClusterBooks in one
process: exact split across replicas, exactly-once batches, leases, a graceful leave.

Shares here last whatever the event loop gives them; the assertions compare the books
with each other (shares add up to busy, nothing counted twice), never with a duration.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from proxy.metering.cluster_gpu import ClusterBooks, ClusterPool
from proxy.metering.gpu import PoolAccount
from tests.support.redis import RedisHandle, run_redis


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisHandle]:
    with run_redis(tmp_path) as r:
        yield r


async def _until(check: Callable[[], bool] | Callable[[], Awaitable[bool]], what: str) -> None:
    for _ in range(400):
        ok = check()
        if not isinstance(ok, bool):
            ok = await ok
        if ok:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _replica(client: aioredis.Redis, lease_s: float = 5.0) -> tuple[ClusterBooks, ClusterPool]:
    books = ClusterBooks(client, "t", 0.02, 2.0, lease_s)
    return books, books.wrap("p", PoolAccount(1))


def test_two_replicas_split_the_pool_and_count_busy_once(redis_server: RedisHandle) -> None:
    async def main() -> None:
        client = aioredis.Redis.from_url(redis_server.url)
        (a, pa), (b, pb) = _replica(client), _replica(client)
        await a.start()
        await b.start()
        s1 = pa.start()
        await asyncio.sleep(0.1)
        s2 = pb.start()  # from here the two share the GPU
        await asyncio.sleep(0.1)
        s1.first_token()
        s1.end()
        await asyncio.sleep(0.1)
        s2.end()
        await _until(lambda: s1.final is not None and s2.final is not None, "exact shares")
        await _until(lambda: pa.totals is not None and pa.totals.inflight == 0, "settled")
        assert pa.totals is not None and pb.totals is not None
        busy = pa.totals.busy_s
        assert s1.final is not None and s2.final is not None
        assert math.isclose(s1.final + s2.final, busy, rel_tol=1e-9)
        # Each replica alone saw its request busy the whole time: the union is less.
        local = pa.local.busy_gpu_seconds + pb.local.busy_gpu_seconds
        assert busy < local
        await _until(lambda: pb.totals is not None and pb.totals.busy_s == busy, "b sees it")
        # Prometheus parts: each replica's busy part is its requests' GPU-seconds.
        assert math.isclose(pa.parts()[0], s1.final, rel_tol=1e-9)
        assert math.isclose(pb.parts()[0], s2.final, rel_tol=1e-9)
        await a.stop()
        await b.stop()
        await client.aclose()

    asyncio.run(main())


def test_a_retried_batch_is_applied_once(redis_server: RedisHandle) -> None:
    async def main() -> None:
        client = aioredis.Redis.from_url(redis_server.url)
        books, pool = _replica(client)
        share = pool.start()
        batch = pool.take()
        await books.sync_pool(pool)
        pool.batch = batch  # its reply was lost: the same batch goes again
        await books.sync_pool(pool)
        assert pool.totals is not None and pool.totals.inflight == 1  # not 2
        share.end()
        for _ in range(3):  # the end event, then a watermark past it
            await books.sync_pool(pool)
        assert pool.totals.inflight == 0
        assert share.final is not None
        assert math.isclose(share.final, pool.totals.busy_s, rel_tol=1e-9)
        await client.aclose()

    asyncio.run(main())


def test_a_silent_replica_is_released_after_its_lease(redis_server: RedisHandle) -> None:
    async def main() -> None:
        client = aioredis.Redis.from_url(redis_server.url)
        (a, pa), (b, pb) = _replica(client, lease_s=0.5), _replica(client, lease_s=0.5)
        await a.start()
        await b.start()
        pb.start()  # in flight when b "dies"
        task = b._task
        assert task is not None
        while not task.done():  # no more syncs, no leave: as after SIGKILL...
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)
        await b.sync()  # ...once its start has reached the store
        await _until(lambda: pa.totals is not None and pa.totals.inflight == 1, "b's share")
        await _until(lambda: pa.totals is not None and pa.totals.replicas == 1, "b released")
        assert pa.totals is not None
        assert pa.totals.inflight == 0
        assert pa.totals.orphan_gpu_s > 0  # its request held GPU time no event will carry
        busy = pa.totals.busy_s
        last = pa.totals.last
        await _until(lambda: pa.totals is not None and pa.totals.last > last + 0.1, "on")
        assert pa.totals.busy_s == busy  # nothing in flight any more: busy stays put
        # b comes back: it was released, so it rejoins under a new id.
        old = b.rid
        await b.sync()
        assert b.rid != old
        await b.sync()
        await _until(lambda: pa.totals is not None and pa.totals.replicas == 2, "b rejoined")
        await a.stop()
        await b.stop()
        await client.aclose()

    asyncio.run(main())


def test_a_graceful_stop_leaves_at_once(redis_server: RedisHandle) -> None:
    async def main() -> None:
        client = aioredis.Redis.from_url(redis_server.url)
        (a, pa), (b, _pb) = _replica(client), _replica(client)  # 5 s lease
        await a.start()
        await b.start()
        await _until(lambda: pa.totals is not None and pa.totals.replicas == 2, "both")
        await b.stop()
        await _until(lambda: pa.totals is not None and pa.totals.replicas == 1, "b left")
        await a.stop()
        await client.aclose()

    asyncio.run(main())


class _Killed(Exception):
    """The replica dies here (SIGKILL): the store's answer is never read."""


def test_a_replica_killed_after_reporting_a_share_done_has_delivered_it(
    redis_server: RedisHandle,
) -> None:
    """The pool books a dead replica's GPU-seconds that it had not reported as done as
    unattributed; what it had reported must therefore already be out (in its UsageEvents,
    its request log). Killed right after the store applied the call that reported a share
    done, the share is delivered and nothing is unattributed: the books add up. (Before the
    fix the share was delivered after that call's answer: in neither.)"""

    async def main() -> None:
        client = aioredis.Redis.from_url(redis_server.url)
        (a, pa), (b, pb) = _replica(client, lease_s=0.5), _replica(client, lease_s=0.5)
        await a.start()
        delivered: list[float] = []
        share = pb.start()
        share.on_final = lambda s: delivered.append(s.gpu_seconds)
        await b.sync_pool(pb)  # its start reaches the store
        await asyncio.sleep(0.05)
        share.end()
        real = b._script

        async def dies_after_reporting(keys: list[str], args: list[object]) -> object:
            reply = await real(keys=keys, args=args)
            if float(str(args[5])) > 0:  # `done`: this call reported the share
                raise _Killed
            return reply

        b._script = dies_after_reporting
        with pytest.raises(_Killed):
            for _ in range(100):  # until a's watermark lets the end be integrated
                await b.sync_pool(pb)
                await asyncio.sleep(0.02)
        await _until(lambda: pa.totals is not None and pa.totals.replicas == 1, "b released")
        await _until(lambda: pa.totals is not None and pa.totals.inflight == 0, "settled")
        assert pa.totals is not None
        busy = pa.totals.busy_s
        assert busy > 0
        assert delivered, "the share reported done was never delivered"
        assert math.isclose(sum(delivered) + pa.totals.orphan_gpu_s, busy, rel_tol=1e-9)
        await a.stop()
        await client.aclose()

    asyncio.run(main())
