"""Redis Cluster fixtures: one private 3-primary cluster for the whole run, flushed per test.

The cluster is started by :class:`kvstore.testing.redis_cluster.RedisServerCluster`:
three ``redis-server --cluster-enabled yes`` processes on free loopback ports
(never the system Redis), joined with ``redis-cli --cluster create``, ready
once every node reports ``cluster_state:ok`` (about 2 s). Tests that break a
cluster use :func:`throwaway_cluster`, never the shared one. Without the Redis
binaries the tests are skipped locally and fail under CI (env ``CI`` set).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures_redis import server_side_ttl_backend

from kvstore.testing import ContractBackend
from kvstore.testing.redis_cluster import RedisServerCluster
from kvstore.testing.redis_server import require_binaries


def require_redis_cluster_tools() -> None:
    """Skip (or, under CI, fail) the calling test when redis-server or redis-cli is missing."""
    require_binaries("redis-server", "redis-cli")


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisServerCluster]:
    """A 3-primary Redis Cluster shared by the session (no replicas, persistence off)."""
    require_redis_cluster_tools()
    with RedisServerCluster(primaries=3) as cluster:
        yield cluster


@pytest.fixture
def cluster_url(redis_cluster: RedisServerCluster) -> str:
    """The session cluster's ``redis+cluster://`` URL, after emptying every node."""
    import redis  # here, not at the top: this plugin loads even without the driver

    if not redis_cluster.running:  # a test stopped a node: bring the cluster back
        redis_cluster.start()
    for node in redis_cluster.nodes:
        with redis.Redis(host=node.host, port=node.port, socket_timeout=5) as client:
            client.flushall()
    return redis_cluster.url


@pytest.fixture
def cluster_contract_backend(
    cluster_url: str, redis_cluster: RedisServerCluster
) -> ContractBackend:
    """The contract's view of the session's Redis Cluster (time moves on every node)."""
    nodes = [f"redis://{node.host}:{node.port}/0" for node in redis_cluster.nodes]
    return server_side_ttl_backend(cluster_url, nodes)


@pytest.fixture
def throwaway_cluster(tmp_path: Path) -> Iterator[RedisServerCluster]:
    """A cluster of the test's own, free to lose nodes.

    ``cluster-require-full-coverage no``: while a primary is down, the others
    keep serving their own slots, as a production cluster without replicas
    should be configured.
    """
    require_redis_cluster_tools()
    with RedisServerCluster(
        primaries=3, require_full_coverage=False, dir=tmp_path / "cluster"
    ) as cluster:
        yield cluster


@pytest.fixture
def failover_cluster(tmp_path: Path) -> Iterator[RedisServerCluster]:
    """A throwaway cluster with one replica per primary, quick to fail over.

    ``cluster-node-timeout`` is 1 s, so a dead primary's replica takes over
    within a few seconds; ready means every replica is in sync.
    """
    require_redis_cluster_tools()
    with RedisServerCluster(
        primaries=3, replicas=1, node_timeout=1.0, dir=tmp_path / "cluster"
    ) as cluster:
        yield cluster
