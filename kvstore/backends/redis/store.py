"""The store on one Redis server: MGET/MSET bulk calls, receipted updates, one SCAN cursor."""

from __future__ import annotations

import functools
from collections.abc import AsyncGenerator, Callable
from typing import Any

import redis.asyncio
import redis.exceptions
from redis.asyncio.cluster import RedisCluster

from ...errors import ConfigError
from .base import Receipts, RedisStoreBase, px, scan
from .connection import PoolOptions, ServerConnection
from .urls import CLUSTER_SCHEMES, redact, url_scheme

__all__ = ["RedisStore"]


class RedisStore(RedisStoreBase[redis.asyncio.Redis, ServerConnection]):
    """A store on one Redis server (redis-py asyncio, hiredis parser when installed).

    For Redis Cluster use :class:`~kvstore.RedisClusterStore`: given a
    ``redis+cluster://`` URL or a ``RedisCluster`` client, this class raises
    :class:`~kvstore.ConfigError` naming it.

    Args:
        url_or_client: a ``redis://``, ``rediss://`` or ``unix://`` URL, or a
            ``redis.asyncio.Redis`` client built with ``decode_responses=False``.
            A client passed in is never closed by the store, and keeps its own
            retry settings (build it with ``retry=Retry(NoBackoff(), 0)`` to
            leave retrying to the store).
        default_ttl: seconds for writes with ``ttl=None``; None keeps keys forever.
        namespace: this store's namespace (``[A-Za-z0-9_.-]{1,64}``).
        prefix: first part of every key, to share a database with other users.
        max_value_bytes: largest encoded value accepted (default 16 MiB).
        codec: value codec (default JSON).
        retries: how many times a command failing with a connection error or a
            timeout is re-sent before :class:`~kvstore.BackendUnavailableError`.
        retry_backoff: seconds before the first retry, doubled for each next one.
        socket_timeout: seconds to wait for a reply (also the longest wait for a
            free pooled connection). URL form only.
        socket_connect_timeout: seconds to wait for a connection. URL form only.
        max_connections: size of the connection pool. URL form only.
        auto_pipeline: send the single commands that concurrent tasks issue in
            the same event-loop iteration as one pipeline (see
            :class:`~kvstore.backends.redis.pipeline.AutoPipeline`). Results and
            errors are unchanged.

    Every named store made by :meth:`namespaced` shares this store's client
    and pool; this (root) store closes them in :meth:`aclose`. Like the
    redis.asyncio connections under it, a store belongs to the event loop
    that first uses it; using it from another loop raises :class:`KVStoreError`.

    Retries and idempotency: a command whose reply is lost to a connection
    error is sent again. That is harmless for ``get``, ``set``, ``set_many``,
    ``get_many``, ``ttl``, ``expire``, ``entries`` and ``clear``, but
    ``delete``/``delete_many`` may then report a key removed by the lost first
    attempt as absent, and ``add`` may return False for a value it did store.
    ``update`` does not apply *fn* twice: its compare-and-set leaves a receipt
    that a resend finds (see :meth:`_try_update`). Pass ``retries=0`` where that
    matters.

    :meth:`from_url` takes ``redis://[user:password@]host:port/db``,
    ``rediss://…`` (TLS) or ``unix:///path.sock?db=N``, with store options in
    the query string.

    >>> store = RedisStore("redis://localhost:6379/0", namespace="app", default_ttl=300)
    >>> async with store:                                 # doctest: +SKIP
    ...     await store.set("user:1", {"name": "Ada"})
    >>> RedisStore.from_url("redis://localhost:6379/0?namespace=app&retries=5")
    RedisStore('redis://localhost:6379/0', namespace='app', prefix='kv')
    """

    backend = "redis"

    @classmethod
    def _check_url(cls, url: str) -> None:
        if url_scheme(url) in CLUSTER_SCHEMES:
            raise ConfigError(
                f"{redact(url)!r} is a Redis Cluster URL, and RedisStore is for one server:"
                " use RedisClusterStore (open_store() picks it by the scheme)"
            )

    @classmethod
    def _connection_from_url(cls, url: str, options: PoolOptions) -> ServerConnection:
        return ServerConnection.from_url(url, options)

    @classmethod
    def _connection_from_client(cls, client: object) -> ServerConnection:
        if isinstance(client, RedisCluster):
            raise ConfigError(
                "RedisStore was given a RedisCluster client, and is for one server:"
                " use RedisClusterStore(client) for Redis Cluster"
            )
        if not isinstance(client, redis.asyncio.Redis):
            raise TypeError(
                "RedisStore needs a redis://, rediss:// or unix:// URL, or a"
                f" redis.asyncio.Redis client, not {type(client).__name__}"
            )
        return ServerConnection.from_client(client)

    @property
    def client(self) -> redis.asyncio.Redis:
        """The redis-py client, shared with every store namespaced from the root."""
        return self._connection.client

    # -- primitives -----------------------------------------------------------------------------

    async def _mget(self, rkeys: list[bytes]) -> list[Any]:
        found: list[Any] = await self._command("MGET", *rkeys)
        return found

    async def _remove(self, command: str, rkeys: list[bytes]) -> int:
        removed: int = await self._command(command, *rkeys)
        return removed

    async def _set_many(self, items: list[tuple[str, Any]], ttl: float | None) -> None:
        if ttl is None:
            # MSET is atomic and a single command, so it may share a pipeline.
            await self._command(
                "MSET", *[part for key, stored in items for part in (self._key(key), stored)]
            )
            return
        expiry = px(ttl)
        connection = self._connection

        async def transaction() -> None:
            async with connection.use().pipeline(transaction=True) as pipe:
                for key, stored in items:
                    pipe.execute_command("SET", self._key(key), stored, *expiry)
                await pipe.execute()

        await self._retry.run(transaction, "MULTI/SET/EXEC")

    @functools.cached_property
    def _receipts(self) -> Receipts:
        return Receipts(self._prefix.encode())

    def _update_receipt(self, rkey: bytes) -> tuple[bytes, bytes, Callable[[], None]]:
        """A receipt from the pool (one per update in flight) and a fresh token."""
        return self._receipts.lend()

    def _scan_names(
        self, pattern: bytes, *, unique: bool = True
    ) -> AsyncGenerator[list[bytes], None]:
        return scan(lambda args: self._command(*args), pattern, unique=unique)
