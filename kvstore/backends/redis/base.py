"""What the Redis store and the Redis Cluster store share.

:class:`RedisStoreBase` holds everything that is the same on one server and on
a cluster: options and their checks, URLs, named stores on one connection,
key layout, the retry policy, auto-pipelining, the single-key commands (redis-py
routes those by slot on a cluster), the conflict loop of ``update()``, and
``entries()``/``clear()`` over SCAN. A subclass brings its connection and the
four primitives whose commands differ: :meth:`~RedisStoreBase._mget`,
:meth:`~RedisStoreBase._remove`, ``_set_many`` and
:meth:`~RedisStoreBase._scan_names`; one server also lends update receipts
(:meth:`~RedisStoreBase._update_receipt`).
"""

from __future__ import annotations

import asyncio
import math
import random
import secrets
from abc import abstractmethod
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, ClassVar, Final, Generic, Self, TypeVar

from ...base import DEFAULT_MAX_VALUE_BYTES, MISSING, BaseStore
from ...codec import Codec, check_store_name
from ...errors import ConfigError, UpdateConflictError
from ...options import check_bool
from ...redaction import scrub
from .connection import Connection, PoolOptions
from .errors import DRIVER_ERRORS
from .keys import check_key_prefix, glob_escape, key_prefix
from .retry import RetryPolicy
from .urls import redact, split_store_options

__all__ = ["MAX_UPDATE_CONFLICTS", "SCAN_COUNT", "RedisStoreBase", "millis", "px", "scan"]

ClientT = TypeVar("ClientT")
ConnectionT = TypeVar("ConnectionT", bound=Connection[Any])

SCAN_COUNT: Final = 500
"""Keys asked of each SCAN (a hint to the server); each batch is then read with one MGET."""
MAX_UPDATE_CONFLICTS: Final = 10_000
"""Conflicting writes (compare-and-sets that found another client's write) one
``update()`` tolerates before giving up with :class:`~kvstore.UpdateConflictError`."""

# The second round's primitives, each one atomic step on the key's own node
# (one key per script, so they work unchanged on a cluster).
# update(): compare-and-set. It stores ARGV[3] (with PX ARGV[4] unless empty,
# and keeping the key's TTL if it exists and ARGV[5] is "1") only if the key
# still holds what was read: ARGV[2] when ARGV[1] is "1", no live value when it
# is "0". A value written and then restored meanwhile counts as unchanged, which
# is still a correct read-modify-write. With a second key (a receipt), a swap
# also writes ARGV[6] (a token) to it with PX ARGV[7], and a call that finds its
# token there answers 1 at once: a resend after a lost reply cannot apply twice.
_CAS_SCRIPT: Final = """\
if KEYS[2] and redis.call('GET', KEYS[2]) == ARGV[6] then return 1 end
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if current ~= ARGV[2] then return 0 end
elseif current then
  return 0
end
if ARGV[5] == '1' and current then
  redis.call('SET', KEYS[1], ARGV[3], 'KEEPTTL')
elseif ARGV[4] == '' then
  redis.call('SET', KEYS[1], ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
end
if KEYS[2] then redis.call('SET', KEYS[2], ARGV[6], 'PX', ARGV[7]) end
return 1
"""
RECEIPT_TTL_MS: Final = 120_000
"""How long an update's receipt outlives its last write: longer than any retry sequence."""

# set(keep_ttl=True) with a TTL for a new key: ARGV[1] the value, ARGV[2] the PX.
_SET_KEEP_TTL_SCRIPT: Final = """\
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('SET', KEYS[1], ARGV[1], 'KEEPTTL')
end
return redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
"""
# persist(): PERSIST alone answers 0 for a live key without a TTL too.
_PERSIST_SCRIPT: Final = """\
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('PERSIST', KEYS[1])
return 1
"""
# Lock acquire: SET NX PX, and "already ours" counts as acquired, so that a
# request retried after its reply was lost does not wait out its own lock.
_ACQUIRE_SCRIPT: Final = """\
if redis.call('GET', KEYS[1]) == ARGV[1] then return 1 end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""
# Lock release: compare-and-delete.
_RELEASE_SCRIPT: Final = """\
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# A named store shares the root's pool, so these belong to the root alone.
_CONNECTION_OPTIONS: Final = ("socket_timeout", "socket_connect_timeout", "max_connections")


class RedisStoreBase(BaseStore, Generic[ClientT, ConnectionT]):
    """The shared base of :class:`~kvstore.RedisStore` and :class:`~kvstore.RedisClusterStore`.

    Takes a URL or a client (of type *ClientT*) and builds a *ConnectionT*
    for it; see the subclasses for the arguments.
    """

    backend: ClassVar[str] = "redis"
    """The backend's name, as reported by services and metrics."""
    is_cluster: ClassVar[bool] = False
    """True for :class:`~kvstore.RedisClusterStore`."""

    def __init__(
        self,
        url_or_client: str | ClientT,
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
        connection: ConnectionT
        if isinstance(url_or_client, str):
            self._check_url(url_or_client)
            pool = PoolOptions(socket_timeout, socket_connect_timeout, max_connections)
            connection = self._connection_from_url(url_or_client, pool)
        else:
            connection = self._connection_from_client(url_or_client)
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
        connection: ConnectionT,
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
        self._prefix = check_key_prefix(prefix)
        self._key_prefix = key_prefix(self._prefix, self._namespace)
        self._retry = RetryPolicy(retries=retries, backoff=retry_backoff, target=connection)
        self._auto_pipeline = check_bool("auto_pipeline", auto_pipeline)

    # -- what a subclass says about its connection -----------------------------------------

    @classmethod
    @abstractmethod
    def _check_url(cls, url: str) -> None:
        """Raise :class:`ConfigError` if *url* is not for this class (the scheme)."""

    @classmethod
    @abstractmethod
    def _connection_from_url(cls, url: str, options: PoolOptions) -> ConnectionT:
        """A connection of our own (the store closes it) to the backend *url* names."""

    @classmethod
    @abstractmethod
    def _connection_from_client(cls, client: object) -> ConnectionT:
        """A connection on a caller's client (left open), or ``TypeError``/``ConfigError``."""

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """Build from a URL of this class's schemes (see the class), options in its query string.

        Store options may come from the query string: ``namespace``,
        ``prefix``, ``default_ttl``, ``max_value_bytes``, ``retries``,
        ``retry_backoff``, ``socket_timeout``, ``socket_connect_timeout``,
        ``max_connections``, ``auto_pipeline``; keyword *options* win over
        them. redis-py's own ``db``, ``password``, ``username``,
        ``client_name``, ``health_check_interval``, ``socket_keepalive`` and
        ``ssl_*`` options pass through. Anything else, or a malformed value,
        raises :class:`~kvstore.ConfigError`.
        """
        cls._check_url(url)
        driver_url, store_options = split_store_options(url)
        for name, value in store_options.items():
            # open_service passes default_ttl=None explicitly: None never hides
            # a value the URL gives.
            if options.get(name) is None:
                options[name] = value
        try:
            return cls(driver_url, **options)
        except ConfigError:
            raise
        except (ValueError, TypeError) as err:
            raise ConfigError(
                f"invalid Redis store options for {redact(url)!r}: {scrub(str(err), url)}"
            ) from None

    def namespaced(self, name: str, **options: Any) -> Self:
        """A store for namespace *name* on this store's client and pool.

        *options* override ``default_ttl``, ``max_value_bytes``, ``codec``,
        ``prefix``, ``retries``, ``retry_backoff`` and ``auto_pipeline``; any
        other raises :class:`~kvstore.ConfigError`. Connection options cannot
        differ: the pool is shared.
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
            "retries": self._retry.retries,
            "retry_backoff": self._retry.backoff,
            "auto_pipeline": self._auto_pipeline,
        }
        unknown = options.keys() - settings.keys()
        if unknown:
            raise ConfigError(
                f"namespaced() cannot set {', '.join(sorted(unknown))}: a named store may"
                f" override only {', '.join(sorted(settings))}"
            )
        store = type(self).__new__(type(self))
        store._setup(
            self._connection, root=False, namespace=check_store_name(name), **(settings | options)
        )
        return store

    # -- information ------------------------------------------------------------------------

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
        try:
            return await self._send(args)
        except DRIVER_ERRORS as err:
            return await self._retry.resume(lambda: self._send(args), err, str(args[0]))

    async def _open(self) -> None:
        await self._retry.run(self._connection.connect, "connect")

    async def _aclose(self) -> None:
        if self._root:
            await self._connection.aclose()

    # -- the primitives whose commands differ between one server and a cluster ---------------

    @abstractmethod
    async def _mget(self, rkeys: list[bytes]) -> list[Any]:
        """The stored values of *rkeys* (full names), None for absent ones."""

    @abstractmethod
    async def _remove(self, command: str, rkeys: list[bytes]) -> int:
        """Remove *rkeys* with *command* (``DEL`` or ``UNLINK``); how many existed."""

    @abstractmethod
    async def _set_many(self, items: list[tuple[str, Any]], ttl: float | None) -> None:
        """Store every item, atomically where the backend allows."""

    async def _try_update(
        self, rkey: bytes, transform: Callable[[Any], Any], ttl: float | None, keep_ttl: bool
    ) -> bool | Exception:
        """One optimistic read-modify-write: True if written, False on a conflict.

        GET, then a compare-and-set script (:data:`_CAS_SCRIPT`): two round
        trips, both lone commands that may share the auto-pipeline, where
        WATCH/MULTI/EXEC takes a dedicated connection and four or five. With
        *keep_ttl*, a key that exists keeps its TTL; *ttl* is for a new one.
        When :meth:`_update_receipt` lends a receipt key, the script records a
        token there, so a resend after a lost reply answers "done" instead of
        comparing against its own write and applying *fn* a second time.

        An exception from *transform* (the caller's fn, or encoding) is returned
        rather than raised, so that driver-error handling around the attempt
        can never mistake it for a connection error; :meth:`_update` raises it.
        """
        stored = await self._command("GET", rkey)
        try:
            new = transform(MISSING if stored is None else stored)
        except Exception as err:
            return err
        expiry = b"" if ttl is None else str(millis(ttl)).encode()
        expected = (b"0", b"") if stored is None else (b"1", stored)
        args = (*expected, new, expiry, b"1" if keep_ttl else b"0")
        receipt = self._update_receipt(rkey)
        if receipt is None:
            return bool(await self._command("EVAL", _CAS_SCRIPT, 1, rkey, *args))
        name, token, give_back = receipt
        try:
            swapped = await self._command(
                "EVAL", _CAS_SCRIPT, 2, rkey, name, *args, token, RECEIPT_TTL_MS
            )
        finally:
            give_back()
        return bool(swapped)

    def _update_receipt(self, rkey: bytes) -> tuple[bytes, bytes, Callable[[], None]] | None:
        """A receipt key in *rkey*'s slot, a fresh token, and how to hand the key back.

        None: no receipt, and a compare-and-set resent after a lost reply may
        find its own write and report a conflict, so *fn* runs again. Both
        stores lend one from a :class:`Receipts` pool (per slot tag on a cluster).
        """
        return None

    @abstractmethod
    def _scan_names(
        self, pattern: bytes, *, unique: bool = True
    ) -> AsyncGenerator[list[bytes], None]:
        """Batches of stored names matching *pattern* (each name once if *unique*)."""

    # -- the shared primitives ---------------------------------------------------------------

    async def _get(self, key: str) -> Any:
        stored = await self._command("GET", self._key(key))
        return MISSING if stored is None else stored

    async def _get_many(self, keys: list[str]) -> list[Any]:
        found = await self._mget([self._key(key) for key in keys])
        return [MISSING if stored is None else stored for stored in found]

    async def _set(self, key: str, stored: Any, ttl: float | None) -> None:
        await self._command("SET", self._key(key), stored, *px(ttl))

    async def _delete(self, key: str) -> bool:
        removed: int = await self._command("DEL", self._key(key))
        return removed > 0

    async def _delete_many(self, keys: list[str]) -> int:
        return await self._remove("DEL", [self._key(key) for key in keys])

    async def _add(self, key: str, stored: Any, ttl: float | None) -> bool:
        return bool(await self._command("SET", self._key(key), stored, "NX", *px(ttl)))

    async def _update(self, key: str, transform: Callable[[Any], Any], ttl: float | None) -> None:
        await self._update_until_written(key, transform, ttl, keep_ttl=False)

    async def _update_keep_ttl(
        self, key: str, transform: Callable[[Any], Any], ttl: float | None
    ) -> None:
        await self._update_until_written(key, transform, ttl, keep_ttl=True)

    async def _update_until_written(
        self, key: str, transform: Callable[[Any], Any], ttl: float | None, *, keep_ttl: bool
    ) -> None:
        rkey = self._key(key)
        for conflicts in range(MAX_UPDATE_CONFLICTS):
            outcome = await self._try_update(rkey, transform, ttl, keep_ttl)
            if outcome is True:
                return
            if isinstance(outcome, BaseException):
                raise outcome
            # Another client wrote the key between our read and write. Everyone
            # retries at once at first; after a few conflicts, a random pause
            # spreads the contenders out.
            await asyncio.sleep(random.uniform(0, min(0.0001 * 2 ** min(conflicts, 8), 0.02)))
        raise UpdateConflictError(
            f"update({key!r}) gave up after {MAX_UPDATE_CONFLICTS} conflicting writes by"
            " other clients; nothing was stored"
        )

    async def _ttl(self, key: str) -> float | None:
        millis_left: int = await self._command("PTTL", self._key(key))
        # -2: no such key; -1: no expiry.
        return None if millis_left < 0 else millis_left / 1000

    async def _expire(self, key: str, ttl: float) -> bool:
        return bool(await self._command("PEXPIRE", self._key(key), millis(ttl)))

    async def _set_keep_ttl(self, key: str, stored: Any, ttl: float | None) -> None:
        if ttl is None:
            await self._command("SET", self._key(key), stored, "KEEPTTL")
        else:
            await self._command(
                "EVAL", _SET_KEEP_TTL_SCRIPT, 1, self._key(key), stored, millis(ttl)
            )

    async def _persist(self, key: str) -> bool:
        return bool(await self._command("EVAL", _PERSIST_SCRIPT, 1, self._key(key)))

    async def _acquire_lock(self, key: str, token: Any, ttl: float) -> bool:
        rkey = self._key(key)
        return bool(await self._command("EVAL", _ACQUIRE_SCRIPT, 1, rkey, token, millis(ttl)))

    async def _release_lock(self, key: str, token: Any, ttl: float) -> bool:
        return bool(await self._command("EVAL", _RELEASE_SCRIPT, 1, self._key(key), token))

    async def _entries(self, prefix: str) -> AsyncGenerator[tuple[str, Any], None]:
        pattern = glob_escape(self._key(prefix)) + b"*"
        skip = len(self._key_prefix)
        async for names in self._scan_names(pattern):
            values = await self._mget(names)
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

    async def _clear(self) -> None:
        pattern = glob_escape(self._key_prefix) + b"*"
        # Names seen twice are unlinked twice, harmlessly: no set of every name.
        async for names in self._scan_names(pattern, unique=False):
            await self._remove("UNLINK", names)


def millis(ttl: float) -> int:
    """*ttl* seconds as whole milliseconds, at least 1 (so never "no expiry")."""
    # Round first so that 0.3 s is 300 ms, not 301 from 300.00000000000006.
    return max(1, math.ceil(round(ttl * 1000, 6)))


def px(ttl: float | None) -> tuple[Any, ...]:
    """The ``PX`` arguments of a ``SET`` for *ttl* (none for no expiry)."""
    return () if ttl is None else ("PX", millis(ttl))


async def scan(
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


class Receipts:
    """Names of the keys that record which update last committed through each.

    One receipt per update in flight, reused by later updates (so there are
    never more receipts than concurrent updates, each a few bytes, expiring
    after :data:`RECEIPT_TTL_MS` unused). Each name is *start*, a NUL and
    *owner* (a random id per store, default: one per pool): with the store
    prefix as *start* (one server) no key of any namespace can contain it, so
    no ``entries()`` or ``clear()`` pattern (``prefix:namespace:*``) matches a
    receipt. A pool made again with the same *start* and *owner* reuses the
    same names, so its receipts on the server are overwritten, not added.
    """

    def __init__(self, start: bytes, owner: bytes | None = None) -> None:
        owner = secrets.token_hex(8).encode() if owner is None else owner
        self._base = start + b"\x00update-receipt:" + owner + b":"
        self._free: list[bytes] = []
        self._made = 0

    def lend(self) -> tuple[bytes, bytes, Callable[[], None]]:
        """A receipt no other update in flight uses, a fresh token, and how to give it back."""
        if self._free:
            receipt = self._free.pop()
        else:
            self._made += 1
            receipt = self._base + str(self._made).encode()
        return receipt, secrets.token_bytes(16), lambda: self._free.append(receipt)

    @property
    def in_use(self) -> bool:
        """True while a receipt is lent and not given back."""
        return len(self._free) < self._made
