"""Redis fixtures: one private redis-server for the whole run, flushed before each test.

The server is started by :class:`kvstore.testing.redis_server.RedisServer` on a free
loopback port (never the system Redis on 6379). Without a ``redis-server``
binary the Redis tests are skipped locally and fail under CI (env ``CI`` set).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

import kvstore
from kvstore.testing import ContractBackend
from kvstore.testing.redis_server import RedisServer

UNIX_SOCKET_NAME = "redis.sock"


def require_redis_binaries(*names: str) -> None:
    """Skip (or, under CI, fail) the calling test when a Redis binary is missing."""
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        message = f"{' and '.join(missing)} not installed (apt-get install redis-server)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def server_side_ttl_backend(url: str) -> ContractBackend:
    """The contract's view of a Redis URL: TTLs are server-side, so time passes by sleeping."""

    def open_service(default_ttl: float | None = None) -> kvstore.StoreService:
        return kvstore.open_service(url, default_ttl=default_ttl)

    return ContractBackend(open_service=open_service, ttl_unit=0.2)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server shared by the session; it also listens on ``dir/redis.sock``."""
    require_redis_binaries("redis-server")
    server = RedisServer(extra_args=("--unixsocketperm", "700"))
    server.extra_args += ("--unixsocket", str(server.dir / UNIX_SOCKET_NAME))
    with server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session server's URL, after emptying it (FLUSHALL) for this test."""
    import redis  # here, not at the top: this plugin loads even without the driver

    if not redis_server.running:  # a test stopped it: give the next one a fresh server
        redis_server.start()
    with redis.Redis(host=redis_server.host, port=redis_server.port, socket_timeout=5) as client:
        client.flushall()
    return redis_server.url


@pytest.fixture
def redis_contract_backend(redis_url: str) -> ContractBackend:
    """The contract's view of the session's Redis server."""
    return server_side_ttl_backend(redis_url)
