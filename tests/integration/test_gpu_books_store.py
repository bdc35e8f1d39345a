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
