"""Redis fixtures: one private redis-server for the whole run, flushed before each test.

The server is started by :class:`kvstore.testing.redis_server.RedisServer` on a free
loopback port (never the system Redis on 6379). Without a ``redis-server``
binary the Redis tests are skipped locally and fail under CI (env ``CI`` set).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import anyio
import pytest

import kvstore
from kvstore.testing import ContractBackend
from kvstore.testing.redis_server import RedisServer, require_binaries

UNIX_SOCKET_NAME = "redis.sock"


async def shift_server_clocks(servers: Sequence[str], seconds: float) -> None:
    """Make *seconds* pass for the TTLs on *servers* (Redis URLs), without waiting.

    Redis expires keys on its own clock, which a test cannot move; moving every
    deadline closer by the same amount is the same thing for a store. A key due
    within *seconds* is left 1 ms and then really expires on the server's clock
    (lazily, on the next access), as it would have.
    """
    import redis.asyncio  # here, not at the top: this plugin loads even without the driver

    shift = round(seconds * 1000)
    for url in servers:
        async with redis.asyncio.Redis.from_url(url, socket_timeout=30) as client:
            async for key in client.scan_iter(count=1000):
                remaining = await client.pttl(key)  # -1: no TTL, -2: gone meanwhile
                if remaining > shift:
                    await client.pexpire(key, remaining - shift)
                elif remaining >= 0:
                    await client.pexpire(key, 1)
    await anyio.sleep(0.002)  # the last 1 ms on the servers' clock


def server_side_ttl_backend(url: str, servers: Sequence[str] = ()) -> ContractBackend:
    """The contract's view of a Redis URL; *servers* (default: *url*) hold its keys.

    TTLs are server-side: time passes by :func:`shift_server_clocks`, so TTL
    tests take no real time and no timing window of a loaded machine matters.
    """

    def open_service(default_ttl: float | None = None) -> kvstore.StoreService:
        return kvstore.open_service(url, default_ttl=default_ttl)

    async def advance(seconds: float) -> None:
        await shift_server_clocks(servers or [url], seconds)

    # Processes of their own only on one server: the cluster contract is long enough.
    return ContractBackend(
        open_service=open_service,
        advance=advance,
        ttl_unit=10.0,
        url=None if servers else url,
    )


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server shared by the session; it also listens on ``dir/redis.sock``."""
    require_binaries("redis-server")
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
