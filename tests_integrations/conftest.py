"""Backends for the integration suite: memory, SQLite, Redis and Redis Cluster.

Each test gets an empty store of every backend (``store_url`` is parametrised):
a fresh MemoryStore, a fresh SQLite file, or the session's private
redis-server / 3-primary cluster (``kvstore.testing`` launchers, free loopback
ports, never the system Redis) flushed before the test. Without the Redis
binaries the Redis cases are skipped locally and fail under CI (env ``CI``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kvstore.testing.redis_cluster import RedisServerCluster
from kvstore.testing.redis_server import RedisServer, require_binaries

BACKENDS = ("memory", "sqlite", "redis", "redis-cluster")


def _flush(host: str, port: int) -> None:
    import redis

    with redis.Redis(host=host, port=port, socket_timeout=10) as client:
        client.flushall()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server for the session."""
    require_binaries("redis-server")
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisServerCluster]:
    """A private 3-primary Redis Cluster for the session."""
    require_binaries("redis-server", "redis-cli")
    with RedisServerCluster(primaries=3) as cluster:
        yield cluster


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty store of each backend."""
    backend: str = request.param
    if backend == "memory":
        return "memory://"
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'kv.db'}"
    if backend == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        _flush(server.host, server.port)
        return server.url
    cluster: RedisServerCluster = request.getfixturevalue("redis_cluster")
    for node in cluster.nodes:
        _flush(node.host, node.port)
    return cluster.url
