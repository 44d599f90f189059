"""The connection a root store and its named stores share: client, ownership, event loop.

A :class:`Connection` holds the redis-py client, knows whether the store made
it (and so closes it) or was handed it (and leaves it open), opens nothing
until first use, and carries the :class:`~.pipeline.AutoPipeline`.
:class:`ServerConnection` is one Redis server; the cluster form is
:class:`~.cluster_connection.ClusterConnection`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
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
    """One Redis server (or a proxy in front of several).

    A store that built its own client (from a URL) sends a lone command -- one
    that finds nothing queued or in flight, see
    :class:`~.pipeline.AutoPipeline` -- on a connection it keeps for that
    alone, outside the pool, with the reply deadline armed once around the
    whole command. Going through the client instead costs a sequential caller
    about a fifth of its speed: the blocking pool's lock and timer per
    checkout, and redis-py's write timeout, which on Python 3.11 is an
    ``asyncio.wait_for`` and so a new task and two extra loop iterations per
    command. At most one lone command is in flight at a time, so one
    connection is enough.
    """

    def __init__(
        self,
        client: redis.asyncio.Redis,
        *,
        owns_client: bool,
        location: str,
        lone_timeout: float | None = None,
    ) -> None:
        self._lone_timeout = lone_timeout
        self._lone: redis.asyncio.connection.AbstractConnection | None = None
        self._callbacks: dict[str, Callable[..., Any]] = {}
        super().__init__(client, owns_client=owns_client, location=location)

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
        return cls(
            redis.asyncio.Redis.from_pool(pool),
            owns_client=True,
            location=redact(url),
            lone_timeout=options.socket_timeout,
        )

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
        """A lone command goes out at once: on the store's own lone connection if
        it built the client, else through the caller's client (its settings rule).

        (A cluster keeps queueing: its batch path carries the per-node
        concurrency limit and error handling a bare command would bypass.)
        """
        return self.execute if self._lone_timeout is None else self._execute_lone

    async def _execute_lone(self, args: tuple[Any, ...]) -> Any:
        connection = self._lone
        if connection is None:
            pool = self.use().connection_pool
            # No socket_timeout on this one: the deadline below covers the write
            # and the read at the cost of one timer.
            kwargs = pool.connection_kwargs | {"socket_timeout": None}
            connection = self._lone = pool.connection_class(**kwargs)
            callbacks = cast(dict[str, Callable[..., Any]], self._client.response_callbacks)
            self._callbacks = dict(callbacks)
        try:
            async with asyncio.timeout(self._lone_timeout):
                # On any exception, cancellation included, redis-py drops the
                # connection (a reply may be half read); the next send reconnects.
                await connection.send_command(*args)
                reply = await connection.read_response()
        except TimeoutError as err:
            raise redis.exceptions.TimeoutError(
                f"no reply from {self.location} within {self._lone_timeout} s"
            ) from err
        # The replies the client would give (SCAN's cursor as an int, SET's True).
        callback = self._callbacks.get(args[0])
        return reply if callback is None else callback(reply)

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
        if self._lone is not None:
            await self._lone.disconnect()
        await self._client.aclose()
