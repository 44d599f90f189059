"""Redis backend: server-side TTLs, SCAN iteration, WATCH transactions, auto-pipelining.

Keys live at ``{prefix}:{namespace}:{key}`` and hold the codec's bytes. Store
names cannot contain ``:``, so namespace ``a`` never sees the keys of ``ab`` or
``a.b``, and every SCAN pattern is glob-escaped, so keys containing ``*``,
``?``, ``[``, ``]`` or ``\\`` match only themselves.

This module imports redis-py; :mod:`kvstore` imports it only when a Redis store
is asked for.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from typing import Any, ClassVar, Final, Self, TypeVar, cast
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ..base import DEFAULT_MAX_VALUE_BYTES, MISSING, BaseStore
from ..codec import Codec, check_store_name
from ..errors import BackendUnavailableError, ConfigError, KVStoreError, StoreClosedError

__all__ = ["RedisStore"]

_T = TypeVar("_T")

SCHEMES: Final = ("redis", "rediss", "unix")
SCAN_COUNT: Final = 500
"""Keys asked of each SCAN (a hint to the server); each batch is then read with one MGET."""
MAX_UPDATE_CONFLICTS: Final = 10_000
"""WATCH conflicts one ``update()`` tolerates before giving up with :class:`KVStoreError`."""
_MAX_BACKOFF: Final = 2.0
_GLOB_SPECIAL: Final = frozenset(b"*?[]\\")

# Errors that mean "the server could not be reached or did not answer": worth
# retrying. redis-py wraps most socket errors in its ConnectionError, but not
# all, and the builtin TimeoutError is an OSError.
_RETRYABLE: Final = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
_DRIVER_ERRORS: Final = (redis.exceptions.RedisError, OSError)

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
    """A store on Redis (redis-py asyncio, hiredis parser when installed).

    Args:
        url_or_client: a ``redis://``, ``rediss://`` or ``unix://`` URL, or a
            ``redis.asyncio.Redis`` client built with ``decode_responses=False``.
            A client passed in is never closed by the store.
        default_ttl: seconds for writes with ``ttl=None``; None keeps keys forever.
        namespace: this store's namespace (``[A-Za-z0-9_.-]{1,64}``).
        prefix: first part of every key, to share a database with other users.
        max_value_bytes: largest encoded value accepted (default 16 MiB).
        codec: value codec (default JSON).
        retries: how many times a command failing with a connection error or
            timeout is re-sent before :class:`~kvstore.BackendUnavailableError`.
        retry_backoff: seconds before the first retry, doubled for each next one.
        socket_timeout: seconds to wait for a reply (also the longest wait for a
            free pooled connection). URL form only.
        socket_connect_timeout: seconds to wait for a connection. URL form only.
        max_connections: size of the connection pool. URL form only.
        auto_pipeline: send the single commands that concurrent tasks issue in
            the same event-loop iteration as one pipeline (see
            :class:`_AutoPipeline`). Results and errors are unchanged.

    Every named store made by :meth:`namespaced` shares this store's client
    and pool; this (root) store closes them in :meth:`aclose`. Like the
    redis.asyncio connections under it, a store belongs to the event loop
    that first uses it; using it from another loop raises :class:`KVStoreError`.

    Retries and idempotency: a command whose reply is lost to a connection
    error is sent again. That is harmless for ``get``, ``set``, ``set_many``,
    ``get_many``, ``ttl``, ``expire``, ``entries`` and ``clear``, but
    ``delete``/``delete_many`` may then report a key removed by the lost first
    attempt as absent, ``add`` may return False for a value it did store, and
    ``update`` may apply *fn* twice if the EXEC itself succeeded but its reply
    was lost. Pass ``retries=0`` where that matters.

    >>> store = RedisStore("redis://localhost:6379/0", namespace="app", default_ttl=300)
    >>> async with store:                                 # doctest: +SKIP
    ...     await store.set("user:1", {"name": "Ada"})
    """

    backend: ClassVar[str] = "redis"
    """The backend's name, as reported by services and metrics."""

    def __init__(
        self,
        url_or_client: str | redis.asyncio.Redis,
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
        if isinstance(url_or_client, str):
            connection = _Connection.from_url(
                url_or_client,
                socket_timeout=_positive(socket_timeout, "socket_timeout"),
                socket_connect_timeout=_positive(socket_connect_timeout, "socket_connect_timeout"),
                max_connections=_count(max_connections, "max_connections", minimum=1),
            )
        elif isinstance(url_or_client, redis.asyncio.Redis):
            connection = _Connection.from_client(url_or_client)
        else:
            raise TypeError(
                "RedisStore needs a redis://, rediss:// or unix:// URL or a redis.asyncio.Redis"
                f" client, not {type(url_or_client).__name__}"
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
        connection: _Connection,
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
        """Build from ``redis://[user:password@]host:port/db``, ``rediss://…`` or
        ``unix:///path.sock?db=N``.

        Store options may also come from the query string: ``namespace``,
        ``prefix``, ``default_ttl``, ``max_value_bytes``, ``retries``,
        ``retry_backoff``, ``socket_timeout``, ``socket_connect_timeout``,
        ``max_connections``, ``auto_pipeline``; keyword *options* win over
        them. redis-py's own ``db``, ``password``, ``client_name``,
        ``health_check_interval`` and ``ssl_*`` options pass through. Anything
        else, or a malformed value, raises :class:`~kvstore.ConfigError`.

        >>> RedisStore.from_url("redis://localhost:6379/0?namespace=app&retries=5")
        RedisStore('redis://localhost:6379/0', namespace='app', prefix='kv')
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
        """The redis-py client, shared with every store namespaced from the root."""
        return self._connection.client

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
        # surrogatepass: any str the key check accepts round-trips, even a lone surrogate.
        return self._key_prefix + key.encode("utf-8", "surrogatepass")

    def _send(self, args: tuple[Any, ...]) -> Awaitable[Any]:
        client = self._connection.use()
        if self._auto_pipeline:
            return self._connection.auto_pipeline.execute(args)
        command = client.execute_command(*args)  # type: ignore[no-untyped-call]
        return cast(Awaitable[Any], command)

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
        if isinstance(err, redis.exceptions.AuthenticationError):
            # Reachable but refusing us: retrying cannot help.
            raise BackendUnavailableError(
                f"Redis at {self._connection.location} refused the credentials: {err}"
            ) from err
        if not isinstance(err, _RETRYABLE):
            raise KVStoreError(f"Redis {what} failed: {err}") from err
        if attempt >= self._retries:
            raise BackendUnavailableError(
                f"Redis at {self._connection.location} is unavailable: {what} failed"
                f" {attempt + 1} time(s), last with {type(err).__name__}: {err}"
            ) from err
        await asyncio.sleep(min(self._retry_backoff * 2**attempt, _MAX_BACKOFF))

    async def _open(self) -> None:
        await self._retrying(lambda: self._connection.use().ping(), "PING")

    # -- primitives -----------------------------------------------------------------------------

    async def _get(self, key: str) -> Any:
        stored = await self._command("GET", self._key(key))
        return MISSING if stored is None else stored

    async def _get_many(self, keys: list[str]) -> list[Any]:
        found = await self._command("MGET", *[self._key(key) for key in keys])
        return [MISSING if stored is None else stored for stored in found]

    async def _set(self, key: str, stored: Any, ttl: float | None) -> None:
        await self._command("SET", self._key(key), stored, *_px(ttl))

    async def _set_many(self, items: list[tuple[str, Any]], ttl: float | None) -> None:
        if ttl is None:
            # MSET is atomic and a single command, so it may share a pipeline.
            await self._command(
                "MSET", *[part for key, stored in items for part in (self._key(key), stored)]
            )
            return
        px = _px(ttl)

        async def transaction() -> None:
            async with self._connection.use().pipeline(transaction=True) as pipe:
                for key, stored in items:
                    pipe.execute_command("SET", self._key(key), stored, *px)
                await pipe.execute()

        await self._retrying(transaction, "MULTI/SET/EXEC")

    async def _delete(self, key: str) -> bool:
        removed: int = await self._command("DEL", self._key(key))
        return removed > 0

    async def _delete_many(self, keys: list[str]) -> int:
        removed: int = await self._command("DEL", *[self._key(key) for key in keys])
        return removed

    async def _add(self, key: str, stored: Any, ttl: float | None) -> bool:
        return bool(await self._command("SET", self._key(key), stored, "NX", *_px(ttl)))

    async def _update(self, key: str, transform: Callable[[Any], Any], ttl: float | None) -> None:
        rkey = self._key(key)
        for conflicts in range(MAX_UPDATE_CONFLICTS):
            outcome = await self._retrying(
                lambda: self._try_update(rkey, transform, ttl), "WATCH/MULTI/EXEC"
            )
            if outcome is True:
                return
            if isinstance(outcome, BaseException):
                raise outcome
            # Another client wrote the key between our WATCH and EXEC. Everyone
            # retries at once at first; after a few conflicts, a random pause
            # spreads the contenders out.
            await asyncio.sleep(random.uniform(0, min(0.0001 * 2 ** min(conflicts, 8), 0.02)))
        raise KVStoreError(
            f"update({key!r}) gave up after {MAX_UPDATE_CONFLICTS} conflicting writes by"
            " other clients"
        )

    async def _try_update(
        self, rkey: bytes, transform: Callable[[Any], Any], ttl: float | None
    ) -> bool | Exception:
        """One optimistic attempt: True if committed, False on a WATCH conflict.

        An exception from *transform* (the caller's fn, or encoding) is returned
        rather than raised, so that driver-error handling around this attempt
        can never mistake it for a connection error; ``_update`` raises it.
        """
        async with self._connection.use().pipeline(transaction=True) as pipe:
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

    async def _ttl(self, key: str) -> float | None:
        millis: int = await self._command("PTTL", self._key(key))
        # -2: no such key; -1: no expiry.
        return None if millis < 0 else millis / 1000

    async def _expire(self, key: str, ttl: float) -> bool:
        return bool(await self._command("PEXPIRE", self._key(key), _millis(ttl)))

    async def _entries(self, prefix: str) -> AsyncGenerator[tuple[str, Any], None]:
        pattern = _glob_escape(self._key(prefix)) + b"*"
        skip = len(self._key_prefix)
        # SCAN may return a key twice (while Redis resizes its table); the
        # names yielded so far (not the values) are kept to drop repeats.
        seen: set[bytes] = set()
        cursor: int = 0
        while True:
            cursor, names = await self._command(
                "SCAN", cursor, "MATCH", pattern, "COUNT", SCAN_COUNT
            )
            fresh = [name for name in dict.fromkeys(names) if name not in seen]
            if fresh:
                seen.update(fresh)
                values = await self._command("MGET", *fresh)
                for name, stored in zip(fresh, values, strict=True):
                    if stored is not None:  # deleted or expired since the SCAN
                        yield name[skip:].decode("utf-8", "surrogatepass"), stored
            if cursor == 0:
                return

    async def _clear(self) -> None:
        pattern = _glob_escape(self._key_prefix) + b"*"
        cursor: int = 0
        while True:
            cursor, names = await self._command(
                "SCAN", cursor, "MATCH", pattern, "COUNT", SCAN_COUNT
            )
            if names:
                await self._command("UNLINK", *names)
            if cursor == 0:
                return

    async def _aclose(self) -> None:
        if self._root:
            await self._connection.aclose()


class _Connection:
    """The client and auto-pipeline shared by a root store and its named stores."""

    def __init__(self, client: redis.asyncio.Redis, *, owns_client: bool, location: str) -> None:
        self._client = client
        self.owns_client = owns_client
        self.location = location
        self.auto_pipeline = _AutoPipeline(client)
        self.closed = False
        # redis.asyncio connections belong to the event loop that opened them.
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        socket_timeout: float,
        socket_connect_timeout: float,
        max_connections: int,
    ) -> _Connection:
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
    def from_client(cls, client: redis.asyncio.Redis) -> _Connection:
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

    @property
    def client(self) -> redis.asyncio.Redis:
        """The client; :class:`StoreClosedError` once the root store is closed."""
        if self.closed:
            raise StoreClosedError(f"the Redis connection to {self.location} is closed")
        return self._client

    def use(self) -> redis.asyncio.Redis:
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

    async def aclose(self) -> None:
        """Let queued commands finish, then close the client if we made it."""
        self.closed = True
        await self.auto_pipeline.drain()
        if self.owns_client and self._loop in (None, asyncio.get_running_loop()):
            await self._client.aclose()
        # Otherwise the connections belong to a loop that is gone (or another
        # thread's): they cannot be closed from here and close when collected.


class _AutoPipeline:
    """Sends the single commands issued in one event-loop iteration as one pipeline.

    When many tasks each await one command, each would otherwise take a pooled
    connection and pay a full round trip plus redis-py's per-call overhead.
    Instead :meth:`execute` queues the command with a future for its reply.
    The first command queued starts a flush task; a new task first runs in the
    next loop iteration, after every task woken in this one has had its turn to
    queue. The flush sends the whole queue as one non-transactional pipeline on
    one connection and resolves each future with that command's own reply or
    error (e.g. WRONGTYPE goes to its caller alone). A connection error fails
    every command of the batch; each caller's retry policy then re-sends its
    own. Commands queued while a flush is in flight go out in the next flush.

    Semantics are those of awaiting each command alone: a caller resumes only
    after its own reply, and commands of different tasks were never ordered.
    Transactions (WATCH/MULTI/EXEC) never go through here.
    """

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self._client = client
        self._queue: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._flushes: set[asyncio.Task[None]] = set()

    def execute(self, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        """Queue one command; the future resolves to its reply."""
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
        try:
            if len(batch) == 1:
                # Nobody else had a command: a pipeline object would be pure overhead.
                reply: Any
                try:
                    reply = await self._client.execute_command(*batch[0][0])  # type: ignore[no-untyped-call]
                except redis.exceptions.ResponseError as err:
                    reply = err
                replies = [reply]
            else:
                async with self._client.pipeline(transaction=False) as pipe:
                    for args, _ in batch:
                        pipe.execute_command(*args)
                    replies = await pipe.execute(raise_on_error=False)
        except BaseException as err:
            for _, future in batch:
                if future.done():
                    continue
                if isinstance(err, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(err)
            if not isinstance(err, Exception):
                raise
            return
        for (_, future), reply in zip(batch, replies, strict=True):
            if future.done():  # its caller was cancelled meanwhile
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def drain(self) -> None:
        """Wait for the flushes in flight (used before closing the client)."""
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
    if parts.scheme.lower() not in SCHEMES:
        raise ConfigError(f"{shown!r} is not a Redis URL: use redis://, rediss:// or unix://")
    try:
        parts.port  # noqa: B018 - parsing it is the check
    except ValueError as err:
        raise ConfigError(f"invalid port in Redis URL {shown!r}: {err}") from None
    if parts.scheme.lower() != "unix":
        database = parts.path.strip("/")
        if database and not database.isdigit():
            raise ConfigError(
                f"invalid database {database!r} in Redis URL {shown!r}: use /0, /1, …"
            )
    elif not parts.path:
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
            passed_on.append((name, raw))
        else:
            allowed = ", ".join(sorted([*_STORE_QUERY_OPTIONS, *_DRIVER_QUERY_OPTIONS]))
            raise ConfigError(f"unknown option {name!r} in {shown!r}; allowed: {allowed}")
    return parts._replace(query=urlencode(passed_on)), store_options


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
