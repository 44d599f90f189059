"""Redis backend: server-side TTLs, SCAN iteration, WATCH transactions, auto-pipelining.

Keys live at ``{prefix}:{namespace}:{key}`` and hold the codec's bytes. Store
names cannot contain ``:``, so namespace ``a`` never sees the keys of ``ab`` or
``a.b``, and every SCAN pattern is glob-escaped, so keys containing ``*``,
``?``, ``[``, ``]`` or ``\\`` match only themselves.

The same :class:`RedisStore` runs on Redis Cluster when given a
``redis+cluster://`` (or ``rediss+cluster://``) URL or a
``redis.asyncio.cluster.RedisCluster`` client. Keys carry no hash tag, so they
spread over every slot; multi-key commands are split per slot and sent as one
pipeline per node, ``update()`` is a compare-and-set Lua script on the key's
own node (redis-py's async cluster pipelines cannot WATCH without blocking the
event loop), and ``entries()``/``clear()`` SCAN every primary. See
docs/redis-cluster.md.

This module imports redis-py; :mod:`kvstore` imports it only when a Redis store
is asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, ClassVar, Final, Generic, Self, TypeVar, cast
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio
import redis.exceptions
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot

from ..base import DEFAULT_MAX_VALUE_BYTES, MISSING, BaseStore
from ..codec import Codec, check_store_name
from ..errors import BackendUnavailableError, ConfigError, KVStoreError, StoreClosedError

__all__ = ["RedisStore"]

_T = TypeVar("_T")

SCHEMES: Final = ("redis", "rediss", "unix")
CLUSTER_SCHEMES: Final = ("redis+cluster", "rediss+cluster")
"""URL schemes that select Redis Cluster (``rediss+cluster`` with TLS)."""
SCAN_COUNT: Final = 500
"""Keys asked of each SCAN (a hint to the server); each batch is then read with one MGET."""
MAX_UPDATE_CONFLICTS: Final = 10_000
"""Conflicting writes (a WATCH, or on a cluster a compare-and-set, that failed) one
``update()`` tolerates before giving up with :class:`KVStoreError`."""
_MAX_BACKOFF: Final = 2.0
_GLOB_SPECIAL: Final = frozenset(b"*?[]\\")

# Errors that mean "the server could not be reached or did not answer": worth
# retrying. redis-py wraps most socket errors in its ConnectionError, but not
# all, and the builtin TimeoutError is an OSError.
_RETRYABLE: Final = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OSError,
    # Cluster only: CLUSTERDOWN/MASTERDOWN, TRYAGAIN during resharding, a redirect
    # loop, and RedisClusterException, which redis-py raises when no node answers
    # or a slot has no owner. The store sends no cross-slot command, so no other
    # RedisClusterException can reach it (the two that could are excluded below).
    redis.exceptions.ClusterError,
    redis.exceptions.TryAgainError,
    redis.exceptions.RedisClusterException,
)
# Cluster transaction errors (redis-py >= 6 only): bugs, not outages.
_NOT_RETRYABLE: Final[tuple[type[Exception], ...]] = tuple(
    getattr(redis.exceptions, name)
    for name in ("CrossSlotTransactionError", "InvalidPipelineStack")
    if hasattr(redis.exceptions, name)
)
# RedisClusterException does not derive from RedisError.
_DRIVER_ERRORS: Final = (
    redis.exceptions.RedisError,
    redis.exceptions.RedisClusterException,
    OSError,
)
_REFRESH_INTERVAL: Final = 0.25
"""Seconds between two reloads of the cluster's slot map after errors."""
_UNREACHABLE: Final = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
# Recent redis-py (8.x) can ask the node that just failed last when it reloads the slot map.
_DEFERS_FAILED_NODE: Final = (
    "last_failed_node_name" in inspect.signature(RedisCluster.initialize).parameters
)

# update() on Redis Cluster: compare-and-set. It stores ARGV[3] (with PX ARGV[4]
# unless empty) only if the key still holds what was read: ARGV[2] when ARGV[1]
# is "1", no live value when it is "0". A value written and then restored
# meanwhile counts as unchanged, which is still a correct read-modify-write.
_CAS_SCRIPT: Final = """\
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if current ~= ARGV[2] then return 0 end
elseif current then
  return 0
end
if ARGV[4] == '' then
  redis.call('SET', KEYS[1], ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
end
return 1
"""
# set_many() with a TTL on Redis Cluster: the keys of one slot in one atomic
# call (MSET takes no TTL). ARGV[1] is the PX, ARGV[i + 1] the value of KEYS[i].
_SET_PX_SCRIPT: Final = """\
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i + 1], 'PX', ARGV[1])
end
return #KEYS
"""

# Query-string options that configure the store itself (parsed and removed
# from the URL before redis-py sees it), and those passed on to redis-py.
_DRIVER_QUERY_OPTIONS: Final = frozenset(
    {
        "db",
        "password",
        "username",
        "client_name",
        "health_check_interval",
        "socket_keepalive",
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_ca_path",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_check_hostname",
    }
)
_CONNECTION_OPTIONS: Final = ("socket_timeout", "socket_connect_timeout", "max_connections")


class RedisStore(BaseStore):
    """A store on Redis or Redis Cluster (redis-py asyncio, hiredis parser when installed).

    Args:
        url_or_client: a ``redis://``, ``rediss://`` or ``unix://`` URL, a
            ``redis+cluster://host:port[,host:port…]/`` or ``rediss+cluster://…``
            URL, or a ``redis.asyncio.Redis`` or
            ``redis.asyncio.cluster.RedisCluster`` client built with
            ``decode_responses=False``. A client passed in is never closed by
            the store, and keeps its own retry settings (build it with
            ``retry=Retry(NoBackoff(), 0)`` to leave retrying to the store).
        default_ttl: seconds for writes with ``ttl=None``; None keeps keys forever.
        namespace: this store's namespace (``[A-Za-z0-9_.-]{1,64}``).
        prefix: first part of every key, to share a database with other users.
        max_value_bytes: largest encoded value accepted (default 16 MiB).
        codec: value codec (default JSON).
        retries: how many times a command failing with a connection error, a
            timeout, or on a cluster a topology error (CLUSTERDOWN, TRYAGAIN,
            no node answering) is re-sent before
            :class:`~kvstore.BackendUnavailableError`.
        retry_backoff: seconds before the first retry, doubled for each next one.
        socket_timeout: seconds to wait for a reply (also the longest wait for a
            free pooled connection). URL form only.
        socket_connect_timeout: seconds to wait for a connection. URL form only.
        max_connections: size of the connection pool (of each node's pool on
            Redis Cluster). URL form only.
        auto_pipeline: send the single commands that concurrent tasks issue in
            the same event-loop iteration as one pipeline (see
            :class:`_AutoPipeline`); on Redis Cluster, one pipeline per node.
            Results and errors are unchanged.

    Every named store made by :meth:`namespaced` shares this store's client
    and pool; this (root) store closes them in :meth:`aclose`. Like the
    redis.asyncio connections under it, a store belongs to the event loop
    that first uses it; using it from another loop raises :class:`KVStoreError`.

    Retries and idempotency: a command whose reply is lost to a connection
    error is sent again. That is harmless for ``get``, ``set``, ``set_many``,
    ``get_many``, ``ttl``, ``expire``, ``entries`` and ``clear``, but
    ``delete``/``delete_many`` may then report a key removed by the lost first
    attempt as absent, ``add`` may return False for a value it did store, and
    ``update`` may apply *fn* twice if the EXEC (on a cluster, the
    compare-and-set script) succeeded but its reply was lost. Pass
    ``retries=0`` where that matters.

    On Redis Cluster, every single-key call is atomic as on one server, and so
    is a bulk call among the keys that share a hash slot; a bulk call over
    several slots is applied slot by slot (a failure part-way leaves the slots
    already written). Keys the caller wants to change together go in one slot
    with a hash tag in the key: ``"{user42}:profile"`` and ``"{user42}:cart"``.

    >>> store = RedisStore("redis://localhost:6379/0", namespace="app", default_ttl=300)
    >>> async with store:                                 # doctest: +SKIP
    ...     await store.set("user:1", {"name": "Ada"})
    >>> cluster = RedisStore("redis+cluster://10.0.0.1:7000,10.0.0.2:7000/")
    """

    backend: ClassVar[str] = "redis"
    """The backend's name, as reported by services and metrics (``"redis-cluster"``
    on an instance that runs on Redis Cluster)."""

    def __init__(
        self,
        url_or_client: str | redis.asyncio.Redis | RedisCluster,
        *,
        default_ttl: float | None = None,
        namespace: str = "default",
        prefix: str = "kv",
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        codec: Codec | None = None,
        retries: int = 3,
        retry_backoff: float = 0.05,
        socket_timeout: float = 5.0,
        socket_connect_timeout: float = 2.0,
        max_connections: int = 64,
        auto_pipeline: bool = True,
    ) -> None:
        connection: _ServerConnection | _ClusterConnection
        if isinstance(url_or_client, str):
            kind = (
                _ClusterConnection
                if urlsplit(url_or_client).scheme.lower() in CLUSTER_SCHEMES
                else _ServerConnection
            )
            connection = kind.from_url(
                url_or_client,
                socket_timeout=_positive(socket_timeout, "socket_timeout"),
                socket_connect_timeout=_positive(socket_connect_timeout, "socket_connect_timeout"),
                max_connections=_count(max_connections, "max_connections", minimum=1),
            )
        elif isinstance(url_or_client, RedisCluster):
            connection = _ClusterConnection.from_client(url_or_client)
        elif isinstance(url_or_client, redis.asyncio.Redis):
            connection = _ServerConnection.from_client(url_or_client)
        else:
            raise TypeError(
                "RedisStore needs a redis://, rediss://, unix://, redis+cluster:// or"
                " rediss+cluster:// URL, or a redis.asyncio.Redis or RedisCluster client,"
                f" not {type(url_or_client).__name__}"
            )
        self._setup(
            connection,
            root=True,
            default_ttl=default_ttl,
            namespace=namespace,
            prefix=prefix,
            max_value_bytes=max_value_bytes,
            codec=codec,
            retries=retries,
            retry_backoff=retry_backoff,
            auto_pipeline=auto_pipeline,
        )

    def _setup(
        self,
        connection: _ServerConnection | _ClusterConnection,
        *,
        root: bool,
        default_ttl: float | None,
        namespace: str,
        prefix: str,
        max_value_bytes: int,
        codec: Codec | None,
        retries: int,
        retry_backoff: float,
        auto_pipeline: bool,
    ) -> None:
        """The constructor's work, shared with :meth:`namespaced`."""
        super().__init__(default_ttl=default_ttl, max_value_bytes=max_value_bytes, codec=codec)
        self._connection = connection
        if isinstance(connection, _ClusterConnection):
            # BaseStore declares the label per class; a cluster store is told
            # apart per instance (the metrics label reads the attribute).
            vars(self)["backend"] = "redis-cluster"
        self._root = root
        self._namespace = check_store_name(namespace)
        self._prefix = _check_prefix(prefix)
        self._key_prefix = f"{self._prefix}:{self._namespace}:".encode()
        self._retries = _count(retries, "retries", minimum=0)
        self._retry_backoff = _non_negative(retry_backoff, "retry_backoff")
        if not isinstance(auto_pipeline, bool):
            raise TypeError(f"auto_pipeline must be a bool, not {type(auto_pipeline).__name__}")
        self._auto_pipeline = auto_pipeline

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """Build from ``redis://[user:password@]host:port/db``, ``rediss://…``,
        ``unix:///path.sock?db=N``, or for Redis Cluster
        ``redis+cluster://[user:password@]host:port[,host:port…]/`` and
        ``rediss+cluster://…`` (TLS). The cluster nodes listed are where the
        client starts; it discovers the others. A cluster has only database 0.

        Store options may also come from the query string: ``namespace``,
        ``prefix``, ``default_ttl``, ``max_value_bytes``, ``retries``,
        ``retry_backoff``, ``socket_timeout``, ``socket_connect_timeout``,
        ``max_connections``, ``auto_pipeline``; keyword *options* win over
        them. redis-py's own ``db``, ``password``, ``client_name``,
        ``health_check_interval`` and ``ssl_*`` options pass through. Anything
        else, or a malformed value, raises :class:`~kvstore.ConfigError`.

        >>> RedisStore.from_url("redis://localhost:6379/0?namespace=app&retries=5")
        RedisStore('redis://localhost:6379/0', namespace='app', prefix='kv')
        >>> RedisStore.from_url("redis+cluster://127.0.0.1:7000,127.0.0.1:7001/").is_cluster
        True
        """
        parts, store_options = _parse_url(url)
        for name, value in store_options.items():
            # open_service passes default_ttl=None explicitly: None never hides
            # a value the URL gives.
            if options.get(name) is None:
                options[name] = value
        try:
            return cls(_unsplit(parts), **options)
        except ConfigError:
            raise
        except (ValueError, TypeError) as err:
            raise ConfigError(f"invalid Redis store options for {_redact(url)!r}: {err}") from err

    def namespaced(self, name: str, **options: Any) -> Self:
        """A store for namespace *name* on this store's client and pool.

        *options* override ``default_ttl``, ``max_value_bytes``, ``codec``,
        ``prefix``, ``retries``, ``retry_backoff`` and ``auto_pipeline``.
        Connection options cannot differ: the pool is shared.
        """
        for option in _CONNECTION_OPTIONS:
            if option in options:
                raise ConfigError(
                    f"{option} is a connection option: set it on the root store (or its URL);"
                    " named stores share its connection pool"
                )
        settings: dict[str, Any] = {
            "default_ttl": self._default_ttl,
            "prefix": self._prefix,
            "max_value_bytes": self._max_value_bytes,
            "codec": self._codec,
            "retries": self._retries,
            "retry_backoff": self._retry_backoff,
            "auto_pipeline": self._auto_pipeline,
        }
        unknown = options.keys() - settings.keys()
        if unknown:
            raise TypeError(f"namespaced() got unexpected options: {', '.join(sorted(unknown))}")
        store = type(self).__new__(type(self))
        store._setup(
            self._connection, root=False, namespace=check_store_name(name), **(settings | options)
        )
        return store

    # -- information ------------------------------------------------------------------------

    @property
    def client(self) -> redis.asyncio.Redis:
        """The redis-py client, shared with every store namespaced from the root.

        On Redis Cluster use :attr:`cluster_client` instead.
        """
        connection = self._connection
        if isinstance(connection, _ClusterConnection):
            raise KVStoreError(
                "this RedisStore runs on Redis Cluster: its client is .cluster_client"
            )
        return connection.client

    @property
    def cluster_client(self) -> RedisCluster:
        """The redis-py ``RedisCluster`` client of a store on Redis Cluster."""
        connection = self._connection
        if not isinstance(connection, _ClusterConnection):
            raise KVStoreError("this RedisStore runs on one Redis server: its client is .client")
        return connection.client

    @property
    def is_cluster(self) -> bool:
        """True for a store on Redis Cluster."""
        return isinstance(self._connection, _ClusterConnection)

    @property
    def namespace(self) -> str:
        """This store's namespace."""
        return self._namespace

    @property
    def prefix(self) -> str:
        """The first part of every key of this store."""
        return self._prefix

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self._connection.location!r},"
            f" namespace={self._namespace!r}, prefix={self._prefix!r})"
        )

    # -- command plumbing --------------------------------------------------------------------

    def _key(self, key: str) -> bytes:
        # The key check guarantees valid UTF-8 (no lone surrogates).
        return self._key_prefix + key.encode("utf-8")

    def _send(self, args: tuple[Any, ...]) -> Awaitable[Any]:
        connection = self._connection
        if self._auto_pipeline:
            connection.use()
            return connection.auto_pipeline.execute(args)
        return connection.execute(args)

    async def _command(self, *args: Any) -> Any:
        """Run one command (through the auto-pipeline when enabled), retrying as configured."""
        attempt = 0
        while True:
            try:
                return await self._send(args)
            except _DRIVER_ERRORS as err:
                await self._recover(err, attempt, str(args[0]))
                attempt += 1

    async def _retrying(self, operation: Callable[[], Awaitable[_T]], what: str) -> _T:
        """Run a multi-command *operation* (a transaction) with the same retry policy."""
        attempt = 0
        while True:
            try:
                return await operation()
            except _DRIVER_ERRORS as err:
                await self._recover(err, attempt, what)
                attempt += 1

    async def _recover(self, err: BaseException, attempt: int, what: str) -> None:
        """Sleep before retry number *attempt* + 1, or raise the error a caller sees."""
        location = self._connection.location
        if isinstance(err, redis.exceptions.AuthenticationError):
            # Reachable but refusing us: retrying cannot help.
            raise BackendUnavailableError(
                f"Redis at {location} refused the credentials: {err}"
            ) from err
        if not isinstance(err, _RETRYABLE) or isinstance(err, _NOT_RETRYABLE):
            raise KVStoreError(f"Redis {what} failed: {err}") from err
        if attempt >= self._retries:
            raise BackendUnavailableError(
                f"Redis at {location} is unavailable: {what} failed {attempt + 1} time(s),"
                f" last with {type(err).__name__}{_failed_node(err)}: {err}"
            ) from err
        # On a cluster the slot map may be what changed (a failover): reload it.
        await self._connection.refresh()
        await asyncio.sleep(min(self._retry_backoff * 2**attempt, _MAX_BACKOFF))

    async def _open(self) -> None:
        await self._retrying(self._connection.connect, "connect")

    # -- primitives -----------------------------------------------------------------------------
    # Single-key commands are the same on one server and on a cluster (redis-py
    # routes them by slot); the bulk ones, update, entries and clear differ.

    async def _get(self, key: str) -> Any:
        stored = await self._command("GET", self._key(key))
        return MISSING if stored is None else stored

    async def _get_many(self, keys: list[str]) -> list[Any]:
        connection = self._connection
        rkeys = [self._key(key) for key in keys]
        if isinstance(connection, _ClusterConnection):
            found = await self._cluster_mget(connection, rkeys)
        else:
            found = await self._command("MGET", *rkeys)
        return [MISSING if stored is None else stored for stored in found]

    async def _set(self, key: str, stored: Any, ttl: float | None) -> None:
        await self._command("SET", self._key(key), stored, *_px(ttl))

    async def _set_many(self, items: list[tuple[str, Any]], ttl: float | None) -> None:
        connection = self._connection
        if isinstance(connection, _ClusterConnection):
            await self._cluster_set_many(connection, items, ttl)
            return
        if ttl is None:
            # MSET is atomic and a single command, so it may share a pipeline.
            await self._command(
                "MSET", *[part for key, stored in items for part in (self._key(key), stored)]
            )
            return
        px = _px(ttl)

        async def transaction() -> None:
            async with connection.use().pipeline(transaction=True) as pipe:
                for key, stored in items:
                    pipe.execute_command("SET", self._key(key), stored, *px)
                await pipe.execute()

        await self._retrying(transaction, "MULTI/SET/EXEC")

    async def _delete(self, key: str) -> bool:
        removed: int = await self._command("DEL", self._key(key))
        return removed > 0

    async def _delete_many(self, keys: list[str]) -> int:
        connection = self._connection
        rkeys = [self._key(key) for key in keys]
        if isinstance(connection, _ClusterConnection):
            groups = _slot_groups(rkeys)
            counts = await self._batch(connection, [("DEL", *group) for group in groups], "DEL")
            return sum(counts)
        removed: int = await self._command("DEL", *rkeys)
        return removed

    async def _add(self, key: str, stored: Any, ttl: float | None) -> bool:
        return bool(await self._command("SET", self._key(key), stored, "NX", *_px(ttl)))

    async def _update(self, key: str, transform: Callable[[Any], Any], ttl: float | None) -> None:
        rkey = self._key(key)
        connection = self._connection
        for conflicts in range(MAX_UPDATE_CONFLICTS):
            outcome: bool | Exception
            if isinstance(connection, _ClusterConnection):
                outcome = await self._try_compare_and_set(rkey, transform, ttl)
            else:
                outcome = await self._retrying(
                    lambda: self._try_update(connection, rkey, transform, ttl),
                    "WATCH/MULTI/EXEC",
                )
            if outcome is True:
                return
            if isinstance(outcome, BaseException):
                raise outcome
            # Another client wrote the key between our read and write. Everyone
            # retries at once at first; after a few conflicts, a random pause
            # spreads the contenders out.
            await asyncio.sleep(random.uniform(0, min(0.0001 * 2 ** min(conflicts, 8), 0.02)))
        raise KVStoreError(
            f"update({key!r}) gave up after {MAX_UPDATE_CONFLICTS} conflicting writes by"
            " other clients"
        )

    async def _try_update(
        self,
        connection: _ServerConnection,
        rkey: bytes,
        transform: Callable[[Any], Any],
        ttl: float | None,
    ) -> bool | Exception:
        """One optimistic attempt: True if committed, False on a WATCH conflict.

        An exception from *transform* (the caller's fn, or encoding) is returned
        rather than raised, so that driver-error handling around this attempt
        can never mistake it for a connection error; ``_update`` raises it.
        """
        async with connection.use().pipeline(transaction=True) as pipe:
            await pipe.watch(rkey)
            # After WATCH the pipeline runs commands immediately.
            stored = await cast(Awaitable[Any], pipe.execute_command("GET", rkey))
            try:
                new = transform(MISSING if stored is None else stored)
            except Exception as err:
                return err
            pipe.multi()  # type: ignore[no-untyped-call]
            pipe.execute_command("SET", rkey, new, *_px(ttl))
            try:
                await pipe.execute()
            except redis.exceptions.WatchError:
                return False
        return True

    async def _try_compare_and_set(
        self, rkey: bytes, transform: Callable[[Any], Any], ttl: float | None
    ) -> bool | Exception:
        """The cluster form of :meth:`_try_update`: read, transform, then compare-and-set.

        redis-py's async cluster pipeline does support WATCH, but runs every
        command of a watched pipeline on a new thread and event loop and joins
        it from ours, blocking the loop; a Lua script on the key's node is one
        atomic step instead, and both commands may share the auto-pipeline.
        """
        stored = await self._command("GET", rkey)
        try:
            new = transform(MISSING if stored is None else stored)
        except Exception as err:
            return err
        px = b"" if ttl is None else str(_millis(ttl)).encode()
        expected = (b"0", b"") if stored is None else (b"1", stored)
        swapped = await self._command("EVAL", _CAS_SCRIPT, 1, rkey, *expected, new, px)
        return bool(swapped)

    async def _ttl(self, key: str) -> float | None:
        millis: int = await self._command("PTTL", self._key(key))
        # -2: no such key; -1: no expiry.
        return None if millis < 0 else millis / 1000

    async def _expire(self, key: str, ttl: float) -> bool:
        return bool(await self._command("PEXPIRE", self._key(key), _millis(ttl)))

    async def _entries(self, prefix: str) -> AsyncGenerator[tuple[str, Any], None]:
        pattern = _glob_escape(self._key(prefix)) + b"*"
        skip = len(self._key_prefix)
        async for names, values in self._scan_values(pattern):
            for name, stored in zip(names, values, strict=True):
                if stored is None:  # deleted or expired since the SCAN
                    continue
                try:
                    key = name[skip:].decode("utf-8")
                except UnicodeDecodeError:
                    # Not written through a store (keys are valid UTF-8): another
                    # client's key in our namespace. It is no entry of ours.
                    continue
                yield key, stored

    async def _scan_values(
        self, pattern: bytes
    ) -> AsyncGenerator[tuple[list[bytes], list[Any]], None]:
        """SCAN every node that holds keys; yield each batch of fresh names with their values."""
        connection = self._connection
        async for names in self._scan_names(pattern):
            if isinstance(connection, _ClusterConnection):
                values = await self._cluster_mget(connection, names)
            else:
                values = await self._command("MGET", *names)
            yield names, values

    async def _scan_names(
        self, pattern: bytes, *, unique: bool = True
    ) -> AsyncGenerator[list[bytes], None]:
        """Yield batches of key names matching *pattern* (each name once if *unique*).

        One server is scanned with its own cursor; a cluster, primary after
        primary (replicas only copy their primary's keys).
        """
        connection = self._connection
        if not isinstance(connection, _ClusterConnection):
            async for names in _scan(lambda args: self._command(*args), pattern, unique=unique):
                yield names
            return
        for node in await self._retrying(connection.primaries, "CLUSTER SLOTS"):
            async for names in _scan(self._sender_to(connection, node), pattern, unique=unique):
                yield names

    def _sender_to(
        self, connection: _ClusterConnection, node: ClusterNode
    ) -> Callable[[tuple[Any, ...]], Awaitable[Any]]:
        """Sends a command to *node* itself, with retries (SCAN has no key to route by)."""

        def send(args: tuple[Any, ...]) -> Awaitable[Any]:
            return self._retrying(lambda: connection.execute_on(node, args), str(args[0]))

        return send

    async def _clear(self) -> None:
        connection = self._connection
        pattern = _glob_escape(self._key_prefix) + b"*"
        # Names seen twice are unlinked twice, harmlessly: no set of every name.
        async for names in self._scan_names(pattern, unique=False):
            if isinstance(connection, _ClusterConnection):
                commands = [("UNLINK", *group) for group in _slot_groups(names)]
                await self._batch(connection, commands, "UNLINK")
            else:
                await self._command("UNLINK", *names)

    async def _aclose(self) -> None:
        if self._root:
            await self._connection.aclose()

    # -- cluster mode ----------------------------------------------------------------------------
    # A multi-key command must name keys of one slot: bulk calls send one
    # command per slot, all in one batch that goes out as a pipeline per node.

    async def _batch(
        self, connection: _ClusterConnection, commands: list[tuple[Any, ...]], what: str
    ) -> list[Any]:
        """Replies to *commands* (each on one slot), retried together as configured.

        With auto-pipelining they join the commands other tasks are sending.
        """

        async def attempt() -> list[Any]:
            replies: list[Any]
            if self._auto_pipeline:
                queue = connection.auto_pipeline
                replies = await asyncio.gather(
                    *[queue.execute(args) for args in commands], return_exceptions=True
                )
            else:
                replies = await connection.run_batch(commands)
            for reply in replies:
                if isinstance(reply, BaseException):
                    raise reply
            return replies

        if len(commands) == 1:
            return [await self._command(*commands[0])]
        connection.use()
        return await self._retrying(attempt, what)

    async def _cluster_mget(self, connection: _ClusterConnection, rkeys: list[bytes]) -> list[Any]:
        """Values of *rkeys* (None for absent ones), with one MGET per slot."""
        groups = _slot_groups(rkeys)
        replies = await self._batch(connection, [("MGET", *group) for group in groups], "MGET")
        found = {
            rkey: stored
            for group, values in zip(groups, replies, strict=True)
            for rkey, stored in zip(group, values, strict=True)
        }
        return [found[rkey] for rkey in rkeys]

    async def _cluster_set_many(
        self, connection: _ClusterConnection, items: list[tuple[str, Any]], ttl: float | None
    ) -> None:
        """One atomic command per slot: MSET, or SET PX / a Lua loop with a TTL."""
        values = {self._key(key): stored for key, stored in items}
        commands: list[tuple[Any, ...]] = []
        for group in _slot_groups(list(values)):
            if ttl is None:
                pairs = [part for rkey in group for part in (rkey, values[rkey])]
                commands.append(("MSET", *pairs))
            elif len(group) == 1:
                commands.append(("SET", group[0], values[group[0]], *_px(ttl)))
            else:
                px = _millis(ttl)
                commands.append(
                    ("EVAL", _SET_PX_SCRIPT, len(group), *group, px, *[values[k] for k in group])
                )
        await self._batch(connection, commands, "MSET")


_Client = TypeVar("_Client", redis.asyncio.Redis, RedisCluster)
_Deliver = Callable[[list[int], list[Any]], None]
"""Receives the replies to some commands of a batch: ``deliver(indexes, replies)``."""


class _Connection(Generic[_Client]):
    """The client and auto-pipeline shared by a root store and its named stores."""

    def __init__(self, client: _Client, *, owns_client: bool, location: str) -> None:
        self._client: _Client = client
        self.owns_client = owns_client
        self.location = location
        self.auto_pipeline = _AutoPipeline(self.send_batch, self.direct_sender())
        self.closed = False
        # redis.asyncio connections belong to the event loop that opened them.
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def client(self) -> _Client:
        """The client; :class:`StoreClosedError` once the root store is closed."""
        if self.closed:
            raise StoreClosedError(f"the Redis connection to {self.location} is closed")
        return self._client

    def use(self) -> _Client:
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

    def direct_sender(self) -> Callable[[tuple[Any, ...]], Awaitable[Any]] | None:
        """How the auto-pipeline sends a lone command at once; None: always queue."""
        return None

    async def send_batch(self, commands: list[tuple[Any, ...]], deliver: _Deliver) -> None:
        """Send *commands* together, passing replies to ``deliver(indexes, replies)``.

        A command's own error is its reply. Replies may come in several parts
        (a cluster delivers each node's as soon as that node answered). Raises
        when the rest of the batch failed as a whole (e.g. the connection broke).
        """
        raise NotImplementedError

    async def run_batch(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Replies to *commands* sent together (see :meth:`send_batch`), in order."""
        replies: list[Any] = [None] * len(commands)

        def deliver(indexes: list[int], values: list[Any]) -> None:
            for index, value in zip(indexes, values, strict=True):
                replies[index] = value

        await self.send_batch(commands, deliver)
        return replies

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
        await self._client.aclose()


class _ServerConnection(_Connection[redis.asyncio.Redis]):
    """One Redis server (or a proxy in front of several)."""

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        socket_timeout: float,
        socket_connect_timeout: float,
        max_connections: int,
    ) -> _ServerConnection:
        """A client of our own, on a pool that waits (boundedly) for a free connection."""
        try:
            pool = redis.asyncio.BlockingConnectionPool.from_url(
                url,
                max_connections=max_connections,
                timeout=socket_timeout,
                socket_timeout=socket_timeout,
                socket_connect_timeout=socket_connect_timeout,
                # The store retries with its own policy; the driver must not
                # retry underneath it.
                retry=Retry(NoBackoff(), 0),
                decode_responses=False,
            )
        except ValueError as err:
            raise ConfigError(f"invalid Redis URL {_redact(url)!r}: {err}") from err
        return cls(redis.asyncio.Redis.from_pool(pool), owns_client=True, location=_redact(url))

    @classmethod
    def from_client(cls, client: redis.asyncio.Redis) -> _ServerConnection:
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

    def direct_sender(self) -> Callable[[tuple[Any, ...]], Awaitable[Any]]:
        """A lone command goes straight to the pool, as with auto-pipelining off.

        (A cluster keeps queueing: its batch path carries the per-node
        concurrency limit and error handling a bare command would bypass.)
        """
        return self.execute

    async def send_batch(self, commands: list[tuple[Any, ...]], deliver: _Deliver) -> None:
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


class _ClusterConnection(_Connection[RedisCluster]):
    """A Redis Cluster, through redis-py's ``RedisCluster`` (one pool per node).

    redis-py fails at once when a node's pool is exhausted (it does not wait
    like ``BlockingConnectionPool``), so every command or batch first takes
    one of ``max_connections`` permits, waiting at most ``wait_timeout``
    seconds. A permit holder uses at most one connection per node.

    After a node error redis-py closes that node's idle connections, and may
    close one another task has just taken: the write then fails inside the
    transport with an AttributeError or TypeError instead of a ConnectionError
    (the leak redis-py issue #4287 describes for connections the peer closed).
    Inside :meth:`permit` those two mean a broken connection and become
    ``redis.exceptions.ConnectionError``, which the store retries.
    """

    def __init__(
        self,
        client: RedisCluster,
        *,
        owns_client: bool,
        location: str,
        max_connections: int,
        wait_timeout: float,
    ) -> None:
        super().__init__(client, owns_client=owns_client, location=location)
        self.max_connections = max_connections
        self.wait_timeout = wait_timeout
        self._permits = asyncio.Semaphore(max_connections)
        self._refreshed_at = -math.inf
        self._failed_node: str | None = None

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        socket_timeout: float,
        socket_connect_timeout: float,
        max_connections: int,
    ) -> _ClusterConnection:
        """A ``RedisCluster`` of our own, starting from the nodes the URL lists."""
        shown = _redact(url)
        parts = urlsplit(url)
        userinfo, nodes = _cluster_nodes(parts, shown)
        # redis-py parses credentials, TLS and query options from a one-node URL.
        (host, port), others = nodes[0], nodes[1:]
        netloc = _netloc(host, port)
        if userinfo:
            netloc = f"{userinfo}@{netloc}"
        scheme = "rediss" if parts.scheme.lower() == "rediss+cluster" else "redis"
        try:
            client = RedisCluster.from_url(
                urlunsplit((scheme, netloc, "", parts.query, "")),
                startup_nodes=[ClusterNode(host, port) for host, port in others],
                max_connections=max_connections,
                socket_timeout=socket_timeout,
                socket_connect_timeout=socket_connect_timeout,
                # The store retries with its own policy (re-reading the slot map
                # between attempts); redis-py must not retry underneath it.
                retry=Retry(NoBackoff(), 0),
                # Keys of a slot whose owner is unknown fail alone, as unavailable.
                require_full_coverage=False,
                decode_responses=False,
            )
        except (ValueError, TypeError, redis.exceptions.RedisClusterException) as err:
            raise ConfigError(f"invalid Redis Cluster URL {shown!r}: {err}") from err
        return cls(
            client,
            owns_client=True,
            location=shown,
            max_connections=max_connections,
            wait_timeout=socket_timeout,
        )

    @classmethod
    def from_client(cls, client: RedisCluster) -> _ClusterConnection:
        """Wrap a caller's ``RedisCluster``, which the caller keeps owning."""
        kwargs = client.get_connection_kwargs()
        if kwargs.get("decode_responses"):
            raise ConfigError(
                "RedisStore needs a client built with decode_responses=False: values are bytes"
            )
        names = ",".join(client.nodes_manager.startup_nodes) or "?"
        timeout = kwargs.get("socket_timeout")
        return cls(
            client,
            owns_client=False,
            location=f"redis+cluster://{names}/",
            max_connections=int(kwargs.get("max_connections") or 100),
            wait_timeout=float(timeout) if timeout else 5.0,
        )

    @asynccontextmanager
    async def permit(self) -> AsyncIterator[None]:
        """Hold one of the ``max_connections`` permits around calls into redis-py.

        See the class docstring, also for the errors this translates.
        """
        try:
            if self._permits.locked():
                async with asyncio.timeout(self.wait_timeout):
                    await self._permits.acquire()
            else:
                await self._permits.acquire()  # returns at once
        except TimeoutError:
            # What BlockingConnectionPool raises in the same situation.
            raise redis.exceptions.ConnectionError(
                f"no free connection within {self.wait_timeout} s"
                f" (max_connections={self.max_connections} per node)"
            ) from None
        try:
            yield
        except (AttributeError, TypeError) as err:
            raise _as_driver_error(err) from err
        finally:
            self._permits.release()

    async def execute(self, args: tuple[Any, ...]) -> Any:
        """Send one command on its own to the node owning its key."""
        client = self.use()
        async with self.permit():
            await self._load_slots(client)
            try:
                return await client.execute_command(*args)
            except Exception as err:
                self._note_failure(err, getattr(err, "connection", None))
                raise

    async def execute_on(self, node: ClusterNode, args: tuple[Any, ...]) -> Any:
        """Send one command to *node* (SCAN: it has no key); SCAN gives ``(cursor, names)``."""
        client = self.use()
        async with self.permit():
            await self._load_slots(client)
            try:
                reply = await client.execute_command(*args, target_nodes=node)
            except Exception as err:
                self._note_failure(err, node)
                raise
        if args[0] == "SCAN":
            # redis-py merges SCAN replies of several nodes: {node name: cursor}.
            cursors, names = reply
            return cursors[node.name], names
        return reply

    async def send_batch(self, commands: list[tuple[Any, ...]], deliver: _Deliver) -> None:
        """Send *commands* as one pipeline per node, to the nodes concurrently.

        Each node's replies are delivered as soon as it answered, so a slow or
        dead node delays and fails only its own commands.
        """
        client = self.use()
        async with self.permit():
            await self._load_slots(client)
            by_node: dict[str, tuple[ClusterNode, list[int]]] = {}
            for index, args in enumerate(commands):
                try:
                    node = client.get_node_from_key(args[3] if args[0] == "EVAL" else args[1])
                except redis.exceptions.RedisClusterException as err:  # slot not covered
                    deliver([index], [err])
                    continue
                if node is not None:
                    by_node.setdefault(node.name, (node, []))[1].append(index)
            sends = [
                self._send_to_node(client, node, [commands[i] for i in group], group, deliver)
                for node, group in by_node.values()
            ]
            if len(sends) == 1:
                await sends[0]
            else:
                await asyncio.gather(*sends)

    async def _send_to_node(
        self,
        client: RedisCluster,
        node: ClusterNode,
        commands: list[tuple[Any, ...]],
        indexes: list[int],
        deliver: _Deliver,
    ) -> None:
        replies: list[Any]
        try:
            if len(commands) == 1:
                # execute_command also follows MOVED/ASK and marks the slot map stale.
                replies = [await client.execute_command(*commands[0])]
            else:
                pipe = client.pipeline(transaction=False)
                for args in commands:
                    pipe.execute_command(*args)
                replies = await pipe.execute(raise_on_error=False)
        except Exception as err:
            failure = _as_driver_error(err)
            self._note_failure(failure, node)
            replies = [failure] * len(commands)
        deliver(indexes, replies)

    async def primaries(self) -> list[ClusterNode]:
        """The primary nodes (loading the slot map first if needed)."""
        client = self.use()
        async with self.permit():
            await self._load_slots(client)
        return client.get_primaries()

    async def connect(self) -> None:
        """Load the slot map from the first startup node that answers."""
        client = self.use()
        async with self.permit():
            await self._load_slots(client)

    async def refresh(self) -> None:
        """Re-read the slot map, at most every ``_REFRESH_INTERVAL`` seconds.

        redis-py does so itself after a failed single command, but not after
        a failed pipeline; without it the slots of a failed-over primary would
        keep pointing at the dead node.
        """
        now = time.monotonic()
        if self.closed or now - self._refreshed_at < _REFRESH_INTERVAL:
            return
        self._refreshed_at = now
        manager = self.use().nodes_manager
        with contextlib.suppress(*_DRIVER_ERRORS):
            # A failure here is the next attempt's to report.
            async with self.permit():
                if _DEFERS_FAILED_NODE and self._failed_node is not None:
                    await manager.initialize(last_failed_node_name=self._failed_node)
                else:
                    await manager.initialize()

    async def _close_client(self) -> None:
        client = self._client
        await client.aclose()
        # RedisCluster.aclose() does nothing while redis-py has marked its slot
        # map stale (after any node error): close every node's connections anyway.
        with contextlib.suppress(*_DRIVER_ERRORS):
            await client.nodes_manager.aclose()
            await client.nodes_manager.aclose("startup_nodes")

    async def _load_slots(self, client: RedisCluster) -> None:
        """Load the slot map if redis-py has none or marked it stale (else a no-op).

        The node that failed last is asked last: a frozen node would otherwise
        hold every command up for a socket timeout whenever it is asked first.
        """
        if _DEFERS_FAILED_NODE and self._failed_node is not None:
            await client.initialize(last_failed_node_name=self._failed_node)
        else:
            await client.initialize()

    def _note_failure(self, err: BaseException, node: object) -> None:
        """Remember *node* as the one to ask last, if *err* says it is unreachable."""
        if isinstance(node, ClusterNode) and isinstance(err, _UNREACHABLE):
            self._failed_node = node.name


class _AutoPipeline:
    """Sends the single commands issued in one event-loop iteration as one pipeline.

    When many tasks each await one command, each would otherwise take a pooled
    connection and pay a full round trip plus redis-py's per-call overhead.
    Instead :meth:`execute` queues the command with a future for its reply.
    The first command queued starts a flush task; a new task first runs in the
    next loop iteration, after every task woken in this one has had its turn to
    queue. The flush sends the whole queue as one non-transactional pipeline on
    one connection (on a cluster, one per node, concurrently) and resolves each
    future with that command's own reply or error (e.g. WRONGTYPE goes to its
    caller alone). A connection error fails every command of the batch (on a
    cluster, of that node); each caller's retry policy then re-sends its own.
    Commands queued while a flush is in flight go out in the next flush.

    Semantics are those of awaiting each command alone: a caller resumes only
    after its own reply, and commands of different tasks were never ordered.
    Transactions (WATCH/MULTI/EXEC) never go through here.

    With *direct* given, a command that finds nothing queued and nothing in
    flight is sent at once by its caller's own task (like redis-py alone),
    sparing the flush task's extra loop iterations. Commands that arrive while
    it is in flight queue up as above, so concurrency still batches.
    """

    def __init__(
        self,
        send: Callable[[list[tuple[Any, ...]], _Deliver], Awaitable[None]],
        direct: Callable[[tuple[Any, ...]], Awaitable[Any]] | None = None,
    ) -> None:
        self._send = send
        self._direct = direct
        self._direct_in_flight = 0
        self._queue: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._flushes: set[asyncio.Task[None]] = set()

    def execute(self, args: tuple[Any, ...]) -> Awaitable[Any]:
        """Send or queue one command; the awaitable resolves to its reply."""
        if (
            self._direct is not None
            and not self._queue
            and not self._flushes
            and not self._direct_in_flight
        ):
            return self._execute_direct(self._direct, args)
        return self._enqueue(args)

    async def _execute_direct(
        self, direct: Callable[[tuple[Any, ...]], Awaitable[Any]], args: tuple[Any, ...]
    ) -> Any:
        self._direct_in_flight += 1
        try:
            return await direct(args)
        finally:
            self._direct_in_flight -= 1

    def _enqueue(self, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((args, future))
        if len(self._queue) == 1:
            flush = loop.create_task(self._flush())
            # The loop keeps only weak references to tasks.
            self._flushes.add(flush)
            flush.add_done_callback(self._flushes.discard)
        return future

    async def _flush(self) -> None:
        batch, self._queue = self._queue, []
        futures = [future for _, future in batch]

        def deliver(indexes: list[int], replies: list[Any]) -> None:
            for index, reply in zip(indexes, replies, strict=True):
                future = futures[index]
                if future.done():  # its caller was cancelled meanwhile
                    continue
                if isinstance(reply, Exception):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)

        try:
            await self._send([args for args, _ in batch], deliver)
        except BaseException as err:
            for future in futures:
                if future.done():  # delivered, or its caller was cancelled
                    continue
                if isinstance(err, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(err)
            if not isinstance(err, Exception):
                raise

    async def drain(self) -> None:
        """Wait for the flushes in flight (used before closing the client).

        Direct commands need no waiting: they run in their callers' own tasks.
        """
        while self._flushes:
            await asyncio.wait(list(self._flushes))


# -- helpers ---------------------------------------------------------------------------------


def _millis(ttl: float) -> int:
    # Round first so that 0.3 s is 300 ms, not 301 from 300.00000000000006.
    return max(1, math.ceil(round(ttl * 1000, 6)))


def _px(ttl: float | None) -> tuple[Any, ...]:
    return () if ttl is None else ("PX", _millis(ttl))


def _glob_escape(raw: bytes) -> bytes:
    """Escape Redis glob characters so that *raw* matches only itself."""
    if not _GLOB_SPECIAL.intersection(raw):
        return raw
    out = bytearray()
    for byte in raw:
        if byte in _GLOB_SPECIAL:
            out.append(0x5C)  # backslash
        out.append(byte)
    return bytes(out)


def _check_prefix(prefix: object) -> str:
    if type(prefix) is not str:
        raise TypeError(f"prefix must be a str, not {type(prefix).__name__}")
    try:
        return check_store_name(prefix)
    except ValueError:
        raise ConfigError(
            f"invalid key prefix {prefix!r}: use 1 to 64 characters from A-Z, a-z, 0-9, '_',"
            " '.' and '-' (no ':', which separates prefix, namespace and key)"
        ) from None


def _count(value: object, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def _positive(value: object, name: str) -> float:
    seconds = _number(value, name)
    if seconds <= 0:
        raise ValueError(f"{name} must be > 0 seconds, got {value!r}")
    return seconds


def _non_negative(value: object, name: str) -> float:
    seconds = _number(value, name)
    if seconds < 0:
        raise ValueError(f"{name} must be >= 0 seconds, got {value!r}")
    return seconds


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true/false, got {raw!r}")


def _parse_int(raw: str) -> int:
    return int(raw.strip())


def _parse_float(raw: str) -> float:
    value = float(raw.strip())
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {raw!r}")
    return value


_STORE_QUERY_OPTIONS: Final[Mapping[str, Callable[[str], Any]]] = {
    "namespace": check_store_name,
    "prefix": _check_prefix,
    "default_ttl": _parse_float,
    "max_value_bytes": _parse_int,
    "retries": _parse_int,
    "retry_backoff": _parse_float,
    "socket_timeout": _parse_float,
    "socket_connect_timeout": _parse_float,
    "max_connections": _parse_int,
    "auto_pipeline": _parse_bool,
}


def _parse_url(url: str) -> tuple[SplitResult, dict[str, Any]]:
    """Split store options off a Redis URL; what is left is for redis-py.

    Raises :class:`ConfigError` for another scheme, a bad port or database,
    an unknown or repeated query option, or a malformed value.
    """
    if not isinstance(url, str):
        raise ConfigError(f"a Redis URL must be a str, not {type(url).__name__}")
    shown = _redact(url)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    cluster = scheme in CLUSTER_SCHEMES
    if scheme not in SCHEMES and not cluster:
        raise ConfigError(
            f"{shown!r} is not a Redis URL: use redis://, rediss://, unix://,"
            " redis+cluster:// or rediss+cluster://"
        )
    if cluster:
        _cluster_nodes(parts, shown)
        if parts.path.strip("/") not in ("", "0"):
            raise ConfigError(
                f"Redis Cluster has only database 0, but {shown!r} names {parts.path!r}:"
                " end the URL with / (or /0)"
            )
    else:
        try:
            parts.port  # noqa: B018 - parsing it is the check
        except ValueError as err:
            raise ConfigError(f"invalid port in Redis URL {shown!r}: {err}") from None
    if scheme in ("redis", "rediss"):
        database = parts.path.strip("/")
        if database and not database.isdigit():
            raise ConfigError(
                f"invalid database {database!r} in Redis URL {shown!r}: use /0, /1, …"
            )
    elif scheme == "unix" and not parts.path:
        raise ConfigError(f"{shown!r} names no socket: use unix:///path/to/redis.sock")
    store_options: dict[str, Any] = {}
    passed_on: list[tuple[str, str]] = []
    seen: set[str] = set()
    for name, raw in parse_qsl(parts.query, keep_blank_values=True):
        if name in seen:
            raise ConfigError(f"option {name!r} is given twice in {shown!r}")
        seen.add(name)
        parser = _STORE_QUERY_OPTIONS.get(name)
        if parser is not None:
            try:
                store_options[name] = parser(raw)
            except (ValueError, TypeError) as err:
                raise ConfigError(f"invalid {name}={raw!r} in {shown!r}: {err}") from None
        elif name in _DRIVER_QUERY_OPTIONS:
            if cluster and name == "db" and raw.strip() != "0":
                raise ConfigError(f"Redis Cluster has only database 0, not db={raw!r} ({shown!r})")
            passed_on.append((name, raw))
        else:
            allowed = ", ".join(sorted([*_STORE_QUERY_OPTIONS, *_DRIVER_QUERY_OPTIONS]))
            raise ConfigError(f"unknown option {name!r} in {shown!r}; allowed: {allowed}")
    return parts._replace(query=urlencode(passed_on)), store_options


def _cluster_nodes(parts: SplitResult, shown: str) -> tuple[str, list[tuple[str, int]]]:
    """The user info and the ``(host, port)`` startup nodes of a cluster URL."""
    userinfo, _, hosts = parts.netloc.rpartition("@")
    nodes: list[tuple[str, int]] = []
    for item in hosts.split(","):
        node = urlsplit(f"//{item.strip()}")
        try:
            port = node.port or 6379
        except ValueError as err:
            raise ConfigError(f"invalid port in {item.strip()!r} of {shown!r}: {err}") from None
        if not node.hostname:
            raise ConfigError(
                f"{shown!r} names no node: use redis+cluster://host:port[,host:port…]/"
            )
        nodes.append((node.hostname, port))
    return userinfo, nodes


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _slot_groups(rkeys: list[bytes]) -> list[list[bytes]]:
    """*rkeys* grouped by hash slot (order kept within a group)."""
    groups: dict[int, list[bytes]] = {}
    for rkey in rkeys:
        groups.setdefault(key_slot(rkey), []).append(rkey)
    return list(groups.values())


async def _scan(
    send: Callable[[tuple[Any, ...]], Awaitable[Any]], pattern: bytes, *, unique: bool = True
) -> AsyncGenerator[list[bytes], None]:
    """Batches of names matching *pattern*, from one SCAN cursor sent with *send*.

    With *unique*, each name comes once: SCAN may return a key twice (while
    Redis resizes its table), so the names yielded so far are kept.
    """
    seen: set[bytes] = set()
    cursor: int = 0
    while True:
        cursor, names = await send(("SCAN", cursor, "MATCH", pattern, "COUNT", SCAN_COUNT))
        if unique:
            names = [name for name in dict.fromkeys(names) if name not in seen]
            seen.update(names)
        if names:
            yield names
        if cursor == 0:
            return


def _as_driver_error(err: Exception) -> Exception:
    """*err*, or for an AttributeError or TypeError from a transport closed under
    a command, the ConnectionError it stands for (see :class:`_ClusterConnection`)."""
    if not isinstance(err, AttributeError | TypeError):
        return err
    broken = redis.exceptions.ConnectionError(
        f"the connection broke during the command ({type(err).__name__}: {err})"
    )
    broken.__cause__ = err
    return broken


def _failed_node(err: BaseException) -> str:
    """ " from node HOST:PORT" when redis-py tells which cluster node failed."""
    node = getattr(err, "connection", None)
    return f" from node {node.name}" if isinstance(node, ClusterNode) else ""


def _unsplit(parts: SplitResult) -> str:
    # urlunsplit() drops the "//" of "unix:///path" (an empty host).
    if parts.scheme.lower() == "unix":
        return f"unix://{parts.path}" + (f"?{parts.query}" if parts.query else "")
    return urlunsplit(parts)


def _redact(url: str) -> str:
    """*url* without its password, for messages and ``repr``."""
    try:
        parts = urlsplit(url)
        if parts.password is None and "password=" not in parts.query:
            return url
        netloc = parts.netloc
        if parts.password is not None:
            userinfo, _, hostinfo = netloc.rpartition("@")
            user = userinfo.partition(":")[0]
            netloc = f"{user}:***@{hostinfo}"
        query = urlencode(
            [
                (name, "***" if name == "password" else raw)
                for name, raw in parse_qsl(parts.query, keep_blank_values=True)
            ]
        )
        return urlunsplit(parts._replace(netloc=netloc, query=query))
    except ValueError:
        return "<unparseable Redis URL>"
