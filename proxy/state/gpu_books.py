"""The cluster GPU books' wiring: with a Redis state store, one process per replica keeps
its pools' books shared with the other replicas (proxy/metering/cluster_gpu.py)."""

from __future__ import annotations

from proxy.config import Config
from proxy.metering.cluster_gpu import ClusterBooks
from proxy.state.redis import RedisRemote
from proxy.state.store import StateStore

MIN_LEASE_S = 5.0
"""A replica silent this long (SIGKILL, a lost host) has its in-flight weight released;
at least 20 sync intervals, so a replica stalled by load is not mistaken for a dead one."""


def cluster_books(config: Config, store: StateStore) -> ClusterBooks | None:
    """ClusterBooks on the store's Redis connection, or None (memory://: one replica)."""
    if not isinstance(store.remote, RedisRemote) or not config.gpu_pools:
        return None
    s = config.state
    return ClusterBooks(
        client=store.remote.client,
        prefix=store.prefix,
        interval_s=s.flush_interval_s,
        timeout_s=s.timeout_s,
        lease_s=max(MIN_LEASE_S, 20 * s.flush_interval_s),
    )
