"""The base of store decorators: a store that forwards every call to another.

:class:`StoreWrapper` satisfies :class:`~kvstore.KVStore` by forwarding each
protocol method, ``async with`` and ``aclose`` to the store it wraps, and shows
the wrapped store's optional ``get_metrics`` when it has one. A decorator (the
metrics one, a near-cache, a test double that records calls) subclasses it and
overrides only the calls it changes:

>>> class ReadOnly(StoreWrapper):
...     async def set(self, key, value, *, ttl=None):
...         raise PermissionError("this store is read-only")
>>> store = ReadOnly(MemoryStore())                     # doctest: +SKIP

Each forwarding method is one ``await`` of the inner call: a subclass whose
hot path matters (:class:`~kvstore.MetricsStore`) overrides it outright rather
than calling ``super()``, which would add a coroutine frame per call.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, aclosing
from typing import Any, Self

from .protocol import KVStore

__all__ = ["StoreWrapper"]


class StoreWrapper:
    """Forwards every :class:`~kvstore.KVStore` call to *inner*.

    Args:
        inner: the store to wrap. It is used as is; closing the wrapper (or
            leaving its ``async with``) closes it.

    ``get_metrics`` is present exactly when *inner* has it (``hasattr`` tells),
    so wrapping a :class:`~kvstore.MetricsStore` keeps its metrics reachable.
    """

    def __init__(self, inner: KVStore) -> None:
        self._inner = inner

    @property
    def inner(self) -> KVStore:
        """The wrapped store."""
        return self._inner

    @property
    def get_metrics(self) -> Callable[[], Any]:
        """The wrapped store's ``get_metrics``; an AttributeError when it has none."""
        method: Callable[[], Any] = self._inner.get_metrics  # type: ignore[attr-defined]
        return method

    async def get(self, key: str, default: Any = None) -> Any:
        """Return the value of *key*, or *default* when it is missing or expired."""
        return await self._inner.get(key, default)

    async def set(
        self, key: str, value: Any, *, ttl: float | None = None, keep_ttl: bool = False
    ) -> None:
        """Store *value* under *key* with *ttl* seconds (``None``: the default TTL).

        ``keep_ttl`` is passed on only when set, so an inner store written
        before it existed keeps working for every other call.
        """
        if keep_ttl:
            await self._inner.set(key, value, ttl=ttl, keep_ttl=keep_ttl)
        else:
            await self._inner.set(key, value, ttl=ttl)

    async def delete(self, key: str) -> bool:
        """Remove *key*; True if a live key was removed."""
        return await self._inner.delete(key)

    async def entries(self, prefix: str = "") -> AsyncGenerator[tuple[str, Any], None]:
        """Yield ``(key, value)`` for each live key starting with *prefix*.

        Closing this generator (or breaking out of the loop) closes the inner one.
        """
        async with aclosing(self._inner.entries(prefix)) as rows:
            async for item in rows:
                yield item

    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """Return ``{key: value}`` for the live keys among *keys*."""
        return await self._inner.get_many(keys)

    async def set_many(self, mapping: Mapping[str, Any], *, ttl: float | None = None) -> None:
        """Store every item of *mapping*, all or nothing where the backend allows."""
        await self._inner.set_many(mapping, ttl=ttl)

    async def delete_many(self, keys: Iterable[str]) -> int:
        """Remove *keys*; return how many live keys were removed."""
        return await self._inner.delete_many(keys)

    async def add(self, key: str, value: Any, *, ttl: float | None = None) -> bool:
        """Store *value* only if *key* has no live value; True if it was stored."""
        return await self._inner.add(key, value, ttl=ttl)

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

        ``keep_ttl`` is passed on only when set (see :meth:`set`).
        """
        if keep_ttl:
            return await self._inner.update(key, fn, default=default, ttl=ttl, keep_ttl=keep_ttl)
        return await self._inner.update(key, fn, default=default, ttl=ttl)

    async def ttl(self, key: str) -> float | None:
        """Remaining seconds before *key* expires; None if missing or persistent."""
        return await self._inner.ttl(key)

    async def expire(self, key: str, ttl: float) -> bool:
        """Set a new TTL on a live *key*; False if it is missing."""
        return await self._inner.expire(key, ttl)

    async def persist(self, key: str) -> bool:
        """Remove a live *key*'s TTL; False if it is missing."""
        return await self._inner.persist(key)

    def lock(
        self, name: str, *, ttl: float, timeout: float | None = None, blocking: bool = True
    ) -> AbstractAsyncContextManager[Any]:
        """The inner store's lock on *name* (see :meth:`kvstore.KVStore.lock`)."""
        return self._inner.lock(name, ttl=ttl, timeout=timeout, blocking=blocking)

    async def clear(self) -> None:
        """Remove every key of the inner store's namespace."""
        await self._inner.clear()

    async def aclose(self) -> None:
        """Close the inner store (idempotent, as the inner store's ``aclose`` is)."""
        await self._inner.aclose()

    async def __aenter__(self) -> Self:
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._inner.__aexit__(*exc_info)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._inner!r})"
