"""The protocols every store and store service satisfies."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Protocol, Self, TypeGuard, runtime_checkable

__all__ = ["KVStore", "KVStoreService", "is_kv_store_service"]


@runtime_checkable
class KVStore(Protocol):
    """An async key-value store holding JSON-compatible values.

    Keys are non-empty ``str`` of at most 1024 characters without NUL. A TTL is
    a finite number of seconds > 0; ``ttl=None`` means the store's default TTL
    (none unless configured). Expired keys behave as absent for every call.

    >>> async with MemoryStore() as store:             # doctest: +SKIP
    ...     await store.set("greeting", {"text": "hi"}, ttl=30)
    ...     await store.get("greeting")
    {'text': 'hi'}
    """

    async def get(self, key: str, default: Any = None) -> Any:
        """Return the value of *key*, or *default* when it is missing or expired."""
        ...

    async def set(
        self, key: str, value: Any, *, ttl: float | None = None, keep_ttl: bool = False
    ) -> None:
        """Store *value* under *key*, replacing any previous value and TTL.

        With *keep_ttl*, a live key keeps its remaining TTL (Redis ``KEEPTTL``);
        a new key gets *ttl* (or the default TTL).
        """
        ...

    async def delete(self, key: str) -> bool:
        """Remove *key*; True if a live key was removed."""
        ...

    def entries(self, prefix: str = "") -> AsyncGenerator[tuple[str, Any], None]:
        """Yield ``(key, value)`` for every live key starting with *prefix*.

        An async generator (``async def`` with ``yield``), so a caller that stops
        early can ``aclose()`` it (``contextlib.aclosing``) and release the
        backend's cursor or scan at once instead of at garbage collection.
        """
        ...

    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """Return the live keys among *keys*; missing ones are absent from the dict."""
        ...

    async def set_many(self, mapping: Mapping[str, Any], *, ttl: float | None = None) -> None:
        """Store every item of *mapping* at once (one round trip where possible)."""
        ...

    async def delete_many(self, keys: Iterable[str]) -> int:
        """Remove *keys*; return how many live keys were removed."""
        ...

    async def add(self, key: str, value: Any, *, ttl: float | None = None) -> bool:
        """Store *value* only if *key* is absent (atomically); True if it was stored."""
        ...

    async def update(
        self,
        key: str,
        fn: Callable[[Any], Any],
        *,
        default: Any = None,
        ttl: float | None = None,
        keep_ttl: bool = False,
    ) -> Any:
        """Atomically store and return ``fn(current value or default)``.

        With *keep_ttl*, a live key keeps its remaining TTL; a new key gets *ttl*.
        """
        ...

    async def ttl(self, key: str) -> float | None:
        """Remaining seconds of *key*; None if it is missing or has no expiry."""
        ...

    async def expire(self, key: str, ttl: float) -> bool:
        """Give a live *key* a new TTL; False if it is missing."""
        ...

    async def persist(self, key: str) -> bool:
        """Remove a live *key*'s TTL; False if it is missing."""
        ...

    def lock(
        self, name: str, *, ttl: float, timeout: float | None = None, blocking: bool = True
    ) -> AbstractAsyncContextManager[Any]:
        """A lock on *name* for ``async with``, exclusive among all users of the backend.

        Released only by its holder; expires after *ttl* seconds if the holder
        dies. :class:`~kvstore.LockTimeoutError` when it cannot be had within
        *timeout* (at once with ``blocking=False``);
        :class:`~kvstore.LockNotOwnedError` on leaving the block after it expired.
        """
        ...

    async def clear(self) -> None:
        """Remove every key of this store (its own namespace only)."""
        ...

    async def aclose(self) -> None:
        """Release the store's resources. Idempotent."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


@runtime_checkable
class KVStoreService(Protocol):
    """Hands out named stores that share one backend connection.

    This is the Python form of the seed's ``IKVStoreService``: an agent runtime
    looks for a registered service satisfying it and keeps its state there.
    """

    def get_store(self, name: str) -> KVStore:
        """Return the store for namespace *name* (the same namespace for the same name)."""
        ...

    async def aclose(self) -> None:
        """Close the shared connection. Idempotent."""
        ...


def is_kv_store_service(obj: object) -> TypeGuard[KVStoreService]:
    """True if *obj* provides ``get_store(name)`` and ``aclose()``.

    >>> is_kv_store_service(object())
    False
    """
    return isinstance(obj, KVStoreService) and not isinstance(obj, type)
