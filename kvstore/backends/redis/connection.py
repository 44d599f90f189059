"""The connection a root store and its named stores share: client, ownership, event loop.

A :class:`Connection` holds the redis-py client, knows whether the store made
it (and so closes it) or was handed it (and leaves it open), opens nothing
until first use, and carries the :class:`~.pipeline.AutoPipeline`.
:class:`ServerConnection` is one Redis server; the cluster form is
:class:`~.cluster_connection.ClusterConnection`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ...errors import ConfigError, KVStoreError, StoreClosedError
from ...options import check_int, check_seconds
from ...redaction import scrub
from .pipeline import AutoPipeline, Deliver, Sender
from .urls import redact

__all__ = ["Connection", "PoolOptions", "ServerConnection"]

ClientT = TypeVar("ClientT")


@dataclass(frozen=True, slots=True)
class PoolOptions:
    """How a client the store builds itself connects (a client passed in keeps its own)."""

    socket_timeout: float
    """Seconds to wait for a reply, and at most for a free pooled connection."""
    socket_connect_timeout: float
    """Seconds to wait for a connection."""
    max_connections: int
    """Size of the pool (of each node's pool on a cluster)."""

    def __post_init__(self) -> None:
        check_seconds("socket_timeout", self.socket_timeout)
        check_seconds("socket_connect_timeout", self.socket_connect_timeout)
        check_int("max_connections", self.max_connections, minimum=1)


class Connection(Generic[ClientT]):
    """The client and auto-pipeline shared by a root store and its named stores."""

    def __init__(self, client: ClientT, *, owns_client: bool, location: str) -> None:
        self._client: ClientT = client
        self.owns_client = owns_client
        self.location = location
        """The backend's URL with its password redacted, for messages and ``repr``."""
        self.auto_pipeline = AutoPipeline(self.send_batch, self.direct_sender())
        self.closed = False
        # redis.asyncio connections belong to the event loop that opened them.
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def client(self) -> ClientT:
        """The client; :class:`StoreClosedError` once the root store is closed."""
        if self.closed:
            raise StoreClosedError(f"the Redis connection to {self.location} is closed")
        return self._client

    def use(self) -> ClientT:
        """The client, for a command about to run in the current event loop."""
        client = self.client
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._loop is not None:
                # redis-py would fail later with a bare "Event loop is closed".
                raise KVStoreError(
                    f"this Redis store was first used in another event loop; its connections"
                    f" to {self.location} belong to that loop. Create the store (or service)"
                    " in the event loop that uses it"
                )
            self._loop = loop
        return client

    def execute(self, args: tuple[Any, ...]) -> Awaitable[Any]:
        """Send one command on its own (auto-pipelining off)."""
        raise NotImplementedError

    def direct_sender(self) -> Sender | None:
        """How the auto-pipeline sends a lone command at once; None: always queue."""
        return None

    async def send_batch(self, commands: list[tuple[Any, ...]], deliver: Deliver) -> None:
        """Send *commands* together, passing replies to ``deliver(indexes, replies)``.

        A command's own error is its reply. Replies may come in several parts
        (a cluster delivers each node's as soon as that node answered). Raises
        when the rest of the batch failed as a whole (e.g. the connection broke).
        """
        raise NotImplementedError

    async def connect(self) -> None:
        """Connect now (``async with store``) rather than on first use."""
        raise NotImplementedError

    async def refresh(self) -> None:
        """Called before each retry: a cluster re-reads its slot map."""

    async def aclose(self) -> None:
        """Let queued commands finish, then close the client if we made it."""
        self.closed = True
        await self.auto_pipeline.drain()
        if self.owns_client and self._loop in (None, asyncio.get_running_loop()):
            await self._close_client()
        # Otherwise the connections belong to a loop that is gone (or another
        # thread's): they cannot be closed from here and close when collected.

    async def _close_client(self) -> None:
        raise NotImplementedError


class ServerConnection(Connection[redis.asyncio.Redis]):
    """One Redis server (or a proxy in front of several)."""

    @classmethod
    def from_url(cls, url: str, options: PoolOptions) -> ServerConnection:
        """A client of our own, on a pool that waits (boundedly) for a free connection."""
        try:
            pool = redis.asyncio.BlockingConnectionPool.from_url(
                url,
                max_connections=options.max_connections,
                timeout=options.socket_timeout,
                socket_timeout=options.socket_timeout,
                socket_connect_timeout=options.socket_connect_timeout,
                # The store retries with its own policy; the driver must not
                # retry underneath it.
                retry=Retry(NoBackoff(), 0),
                decode_responses=False,
            )
        except ValueError as err:
            raise ConfigError(
                f"invalid Redis URL {redact(url)!r}: {scrub(str(err), url)}"
            ) from None
        return cls(redis.asyncio.Redis.from_pool(pool), owns_client=True, location=redact(url))

    @classmethod
    def from_client(cls, client: redis.asyncio.Redis) -> ServerConnection:
        """Wrap a caller's client, which the caller keeps owning."""
        kwargs = client.connection_pool.connection_kwargs
        if kwargs.get("decode_responses"):
            raise ConfigError(
                "RedisStore needs a client built with decode_responses=False: values are bytes"
            )
        if "path" in kwargs:
            location = f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}"
        else:
            host, port = kwargs.get("host", "localhost"), kwargs.get("port", 6379)
            location = f"redis://{host}:{port}/{kwargs.get('db', 0)}"
        return cls(client, owns_client=False, location=location)

    def execute(self, args: tuple[Any, ...]) -> Awaitable[Any]:
        """Send one command on its own (auto-pipelining off)."""
        command = self.use().execute_command(*args)  # type: ignore[no-untyped-call]
        return cast(Awaitable[Any], command)

    def direct_sender(self) -> Sender:
        """A lone command goes straight to the pool, as with auto-pipelining off.

        (A cluster keeps queueing: its batch path carries the per-node
        concurrency limit and error handling a bare command would bypass.)
        """
        return self.execute

    async def send_batch(self, commands: list[tuple[Any, ...]], deliver: Deliver) -> None:
        """Send *commands* as one non-transactional pipeline."""
        replies: list[Any]
        if len(commands) == 1:
            # Nobody else had a command: a pipeline object would be pure overhead.
            try:
                reply = await self._client.execute_command(*commands[0])  # type: ignore[no-untyped-call]
            except redis.exceptions.ResponseError as err:
                reply = err
            replies = [reply]
        else:
            async with self._client.pipeline(transaction=False) as pipe:
                for args in commands:
                    pipe.execute_command(*args)
                replies = await pipe.execute(raise_on_error=False)
        deliver(list(range(len(commands))), replies)

    async def connect(self) -> None:
        """PING the server."""
        await self.use().ping()

    async def _close_client(self) -> None:
        await self._client.aclose()
