"""The shared base of every backend: validation, encoding, TTL defaults, lifecycle.

A backend subclasses :class:`BaseStore` and implements only the storage
primitives (the ``_``-prefixed abstract methods). Keys reach a primitive already
validated, values already encoded, and TTLs already resolved to seconds or
``None`` (no expiry), so no backend repeats a check.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from contextlib import aclosing
from typing import Any, ClassVar, Final, Self

from .codec import MAX_TTL, Codec, JSONCodec, check_key, check_prefix, check_ttl
from .errors import StoreClosedError, ValueTooLargeError
from .lock import StoreLock
from .options import TextOption, check_bool, check_int, int_option, number_option

__all__ = ["DEFAULT_MAX_VALUE_BYTES", "MISSING", "URL_OPTIONS", "BaseStore", "Missing"]

DEFAULT_MAX_VALUE_BYTES: Final = 16 * 1024 * 1024

URL_OPTIONS: Final[Mapping[str, TextOption]] = {
    "default_ttl": number_option(above=0.0, maximum=MAX_TTL),
    "max_value_bytes": int_option(minimum=1),
}
"""Parsers of the URL query options of :class:`BaseStore`'s own arguments.

A backend builds its table for :func:`kvstore.options.parse_query` from these
and its own, so a bad value is a :class:`~kvstore.ConfigError` on every backend.
"""


class Missing(enum.Enum):
    """Type of :data:`MISSING`, the primitives' "no live value" marker."""

    MISSING = enum.auto()


MISSING: Final = Missing.MISSING
"""Returned by primitives for an absent or expired key (``None`` is a real value)."""


class BaseStore(ABC):
    """Implements the public :class:`~kvstore.KVStore` API on top of primitives.

    Args:
        default_ttl: seconds applied when a write passes ``ttl=None``; ``None``
            keeps such keys until deleted.
        max_value_bytes: largest encoded value accepted (default 16 MiB).
        codec: turns values into bytes and back (default :class:`JSONCodec`).
    """

    backend: ClassVar[str] = "custom"
    """Short backend name (``memory``, ``sqlite``, ``redis``), used as a metrics label."""

    def __init__(
        self,
        *,
        default_ttl: float | None = None,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        codec: Codec | None = None,
    ) -> None:
        self._default_ttl = None if default_ttl is None else check_ttl(default_ttl)
        self._max_value_bytes = check_int("max_value_bytes", max_value_bytes, minimum=1)
        self._codec: Codec = JSONCodec() if codec is None else codec
        self._closed = False

    # -- configuration --------------------------------------------------------

    @property
    def default_ttl(self) -> float | None:
        """The TTL in seconds applied when a write passes ``ttl=None``."""
        return self._default_ttl

    @property
    def max_value_bytes(self) -> int:
        """The largest encoded value this store accepts."""
        return self._max_value_bytes

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` has been called."""
        return self._closed

    # -- value representation (MemoryStore overrides these) --------------------

    def _encode(self, value: Any) -> Any:
        """Turn a caller's value into what the primitives store."""
        data = self._codec.encode(value)
        if len(data) > self._max_value_bytes:
            raise self._too_large(len(data))
        return data

    def _too_large(self, size: int) -> ValueTooLargeError:
        return ValueTooLargeError(
            f"encoded value is {size} bytes; this store accepts at most"
            f" {self._max_value_bytes} (max_value_bytes)"
        )

    def _decode(self, stored: Any) -> Any:
        """Turn what a primitive returned into a fresh value for the caller."""
        return self._codec.decode(stored)

    def _resolve_ttl(self, ttl: float | None) -> float | None:
        return self._default_ttl if ttl is None else check_ttl(ttl)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"{type(self).__name__} is closed")

    # -- public API -------------------------------------------------------------

    async def get(self, key: str, default: Any = None) -> Any:
        """Return the value of *key*, or *default* when it is missing or expired."""
        self._check_open()
        stored = await self._get(check_key(key))
        return default if stored is MISSING else self._decode(stored)

    async def set(
        self, key: str, value: Any, *, ttl: float | None = None, keep_ttl: bool = False
    ) -> None:
        """Store *value* under *key* with *ttl* seconds (``None``: the default TTL).

        With *keep_ttl*, a live key keeps its remaining TTL (or its lack of one),
        as Redis ``SET … KEEPTTL`` does; *ttl* then applies only to a new key.
        """
        self._check_open()
        key = check_key(key)
        seconds = self._resolve_ttl(ttl)
        if check_bool("keep_ttl", keep_ttl):
            await self._set_keep_ttl(key, self._encode(value), seconds)
        else:
            await self._set(key, self._encode(value), seconds)

    async def delete(self, key: str) -> bool:
        """Remove *key*; True if a live key was removed."""
        self._check_open()
        return await self._delete(check_key(key))

    async def entries(self, prefix: str = "") -> AsyncGenerator[tuple[str, Any], None]:
        """Yield ``(key, value)`` for each live key starting with *prefix*.

        Order is unspecified. Expired keys are never yielded, and writes by other
        tasks during iteration are safe: each key live throughout is yielded once.
        """
        self._check_open()
        check_prefix(prefix)
        async with aclosing(self._entries(prefix)) as rows:
            async for key, stored in rows:
                yield key, self._decode(stored)

    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """Return ``{key: value}`` for the live keys among *keys*."""
        self._check_open()
        wanted = list(dict.fromkeys(check_key(key) for key in as_key_list(keys)))
        if not wanted:
            return {}
        found = await self._get_many(wanted)
        return {
            key: self._decode(stored)
            for key, stored in zip(wanted, found, strict=True)
            if stored is not MISSING
        }

    async def set_many(self, mapping: Mapping[str, Any], *, ttl: float | None = None) -> None:
        """Store every item of *mapping*, all or nothing where the backend allows."""
        self._check_open()
        if not isinstance(mapping, Mapping):
            raise TypeError(f"set_many() takes a mapping, not {type(mapping).__name__}")
        seconds = self._resolve_ttl(ttl)
        # Validate and encode everything first, so a rejected item changes nothing.
        items = [(check_key(key), self._encode(value)) for key, value in mapping.items()]
        if items:
            await self._set_many(items, seconds)

    async def delete_many(self, keys: Iterable[str]) -> int:
        """Remove *keys*; return how many live keys were removed."""
        self._check_open()
        wanted = list(dict.fromkeys(check_key(key) for key in as_key_list(keys)))
        return await self._delete_many(wanted) if wanted else 0

    async def add(self, key: str, value: Any, *, ttl: float | None = None) -> bool:
        """Store *value* only if *key* has no live value; True if it was stored."""
        self._check_open()
        key = check_key(key)
        seconds = self._resolve_ttl(ttl)
        return await self._add(key, self._encode(value), seconds)

    async def update(
        self,
        key: str,
        fn: Callable[[Any], Any],
        *,
        default: Any = None,
        ttl: float | None = None,
        keep_ttl: bool = False,
    ) -> Any:
        """Atomically replace the value of *key* by ``fn(current)`` and return it.

        ``current`` is the live value, or *default* when the key is missing. If
        *fn* raises, the exception propagates unchanged and nothing is stored.
        *fn* may run more than once when a backend retries a conflicting
        transaction, so it must not have side effects. With *keep_ttl*, a live
        key keeps its remaining TTL; *ttl* then applies only to a new key.
        A backend that updates optimistically raises
        :class:`~kvstore.UpdateConflictError` when other clients keep winning.

        >>> await store.update("hits", lambda n: n + 1, default=0)  # doctest: +SKIP
        1
        """
        self._check_open()
        key = check_key(key)
        if not callable(fn):
            raise TypeError(f"update() needs a callable, not {type(fn).__name__}")
        seconds = self._resolve_ttl(ttl)
        result: Any = None

        def transform(stored: Any) -> Any:
            nonlocal result
            current = default if stored is MISSING else self._decode(stored)
            result = fn(current)
            return self._encode(result)

        if check_bool("keep_ttl", keep_ttl):
            await self._update_keep_ttl(key, transform, seconds)
        else:
            await self._update(key, transform, seconds)
        return result

    async def ttl(self, key: str) -> float | None:
        """Remaining seconds before *key* expires; None if missing or persistent."""
        self._check_open()
        return await self._ttl(check_key(key))

    async def expire(self, key: str, ttl: float) -> bool:
        """Set a new TTL on a live *key*; False if it is missing."""
        self._check_open()
        key = check_key(key)
        return await self._expire(key, check_ttl(ttl))

    async def persist(self, key: str) -> bool:
        """Remove the TTL of a live *key*, keeping it until deleted; False if it is missing."""
        self._check_open()
        return await self._persist(check_key(key))

    def lock(
        self, name: str, *, ttl: float, timeout: float | None = None, blocking: bool = True
    ) -> StoreLock:
        """A lock held under the key *name* of this store, for ``async with``.

        Exclusive among everyone using this backend and namespace (other tasks,
        other processes on the same SQLite file or Redis); it expires after *ttl*
        seconds if its holder never releases it. Waits up to *timeout* seconds
        (None: no limit) to acquire, or not at all with ``blocking=False``, then
        raises :class:`~kvstore.LockTimeoutError`. Leaving the block after the
        TTL ran out raises :class:`~kvstore.LockNotOwnedError`. While held, the
        key *name* holds a random token (``entries()`` shows it): give locks
        names your data does not use, such as ``"lock:reindex"``.

        >>> async with store.lock("lock:reindex", ttl=30, timeout=5):  # doctest: +SKIP
        ...     await reindex()
        """
        key = check_key(name)
        seconds = check_ttl(ttl)

        async def acquire(token: str) -> bool:
            self._check_open()
            return await self._acquire_lock(key, self._encode(token), seconds)

        async def release(token: str) -> bool:
            self._check_open()
            return await self._release_lock(key, self._encode(token), seconds)

        return StoreLock(
            key, ttl=seconds, timeout=timeout, blocking=blocking, acquire=acquire, release=release
        )

    async def clear(self) -> None:
        """Remove every key of this store's namespace."""
        self._check_open()
        await self._clear()

    async def aclose(self) -> None:
        """Release the store's resources. Safe to call more than once."""
        if not self._closed:
            self._closed = True
            await self._aclose()

    async def __aenter__(self) -> Self:
        self._check_open()
        await self._open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- construction and namespaces ------------------------------------------------

    @classmethod
    @abstractmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """Build a store from a URL of this backend's scheme (see :func:`~kvstore.open_store`)."""

    @abstractmethod
    def namespaced(self, name: str, **options: Any) -> Self:
        """Return a store for namespace *name* that shares this store's connection.

        *options* override this store's constructor options for the new store
        (``default_ttl``, ``max_value_bytes``, and backend ones such as
        ``max_entries``). The returned store does not own the connection:
        closing it leaves the shared resources open; they close with this store.
        """

    # -- primitives ------------------------------------------------------------

    async def _open(self) -> None:  # noqa: B027 - optional hook, lazy by default
        """Connect eagerly (``async with``). Backends connect lazily otherwise."""

    @abstractmethod
    async def _get(self, key: str) -> Any:
        """Stored value of *key*, or :data:`MISSING`."""

    async def _get_many(self, keys: list[str]) -> list[Any]:
        """Stored values of distinct *keys*, :data:`MISSING` for absent ones."""
        return [await self._get(key) for key in keys]

    @abstractmethod
    async def _set(self, key: str, stored: Any, ttl: float | None) -> None:
        """Store *stored* under *key*; *ttl* None means no expiry."""

    async def _set_many(self, items: list[tuple[str, Any]], ttl: float | None) -> None:
        for key, stored in items:
            await self._set(key, stored, ttl)

    @abstractmethod
    async def _delete(self, key: str) -> bool:
        """Remove *key*; True if a live value was removed."""

    async def _delete_many(self, keys: list[str]) -> int:
        return sum([await self._delete(key) for key in keys])

    @abstractmethod
    async def _add(self, key: str, stored: Any, ttl: float | None) -> bool:
        """Store *stored* unless *key* is live, atomically."""

    @abstractmethod
    async def _update(self, key: str, transform: Callable[[Any], Any], ttl: float | None) -> None:
        """Atomically store ``transform(stored or MISSING)`` under *key*.

        *transform* may raise; then nothing must be stored.
        """

    @abstractmethod
    async def _ttl(self, key: str) -> float | None:
        """Remaining seconds of a live *key*, None if missing or persistent."""

    @abstractmethod
    async def _expire(self, key: str, ttl: float) -> bool:
        """Give a live *key* a TTL of *ttl* seconds; False if missing."""

    @abstractmethod
    def _entries(self, prefix: str) -> AsyncGenerator[tuple[str, Any], None]:
        """Yield ``(key, stored)`` for live keys starting with *prefix*."""

    @abstractmethod
    async def _clear(self) -> None:
        """Remove every key of this namespace."""

    async def _aclose(self) -> None:  # noqa: B027 - optional hook
        """Release resources owned by this store (called once)."""

    # -- primitives of the second round, with portable defaults -------------------------
    # The defaults are built on the primitives above, so a backend written
    # before them still has every method; each backend here overrides them
    # with one atomic step of its own.

    async def _set_keep_ttl(self, key: str, stored: Any, ttl: float | None) -> None:
        """Store *stored* under *key*, keeping a live key's TTL; *ttl* for a new key."""
        await self._update_keep_ttl(key, lambda _: stored, ttl)

    async def _update_keep_ttl(
        self, key: str, transform: Callable[[Any], Any], ttl: float | None
    ) -> None:
        """:meth:`_update`, keeping a live key's TTL; *ttl* for a new key.

        The default reads the remaining TTL, then updates with it, checking in
        the atomic update that the key is still live (or still absent) as read;
        if not, it starts again. A TTL another client sets between the two
        steps is overwritten: override this for a backend shared by clients.
        """
        while True:
            remaining = await self._ttl(key)  # None: persistent, or missing
            try:
                if remaining is not None:
                    await self._update(key, _expecting(transform, live=True), remaining)
                    return
                try:
                    await self._update(key, _expecting(transform, live=False), ttl)
                    return  # it was missing: stored as a new key
                except _StateChanged:
                    pass  # live: persistent, unless a TTL came with it meanwhile
                if await self._ttl(key) is None:
                    await self._update(key, _expecting(transform, live=True), None)
                    return
            except _StateChanged:
                continue

    async def _persist(self, key: str) -> bool:
        """Drop the TTL of a live *key*; False if missing. Default: an identity update."""
        try:
            await self._update(key, _expecting(lambda stored: stored, live=True), None)
        except _StateChanged:
            return False
        return True

    async def _acquire_lock(self, key: str, token: Any, ttl: float) -> bool:
        """Store *token* under *key* for *ttl* seconds unless *key* is live (default: ``_add``)."""
        return await self._add(key, token, ttl)

    async def _release_lock(self, key: str, token: Any, ttl: float) -> bool:
        """Delete *key* if it holds *token*; True if it did.

        The default swaps the token for a marker in one atomic update (so no
        one else can match it any more), then deletes the marker. Override it
        with a single compare-and-delete where the backend has one.
        """
        released = self._encode(["released", self._decode(token)])

        def swap(stored: Any) -> Any:
            if stored != token:
                raise _StateChanged
            return released

        try:
            await self._update(key, swap, ttl)
        except _StateChanged:
            return False
        await self._delete(key)
        return True


class _StateChanged(Exception):
    """Raised inside a transform to abort an update whose premise no longer holds."""


def _expecting(transform: Callable[[Any], Any], *, live: bool) -> Callable[[Any], Any]:
    """*transform*, aborted with :class:`_StateChanged` unless the key is live as expected."""

    def checked(stored: Any) -> Any:
        if (stored is not MISSING) != live:
            raise _StateChanged
        return transform(stored)

    return checked


def as_key_list(keys: Iterable[str]) -> Iterable[str]:
    """Return *keys*, refusing a lone str (an iterable of str that is surely a mistake)."""
    # A str is an iterable of str: passing one by mistake would query its letters.
    if isinstance(keys, str | bytes):
        raise TypeError("expected an iterable of keys, not a single str")
    return keys
