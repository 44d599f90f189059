"""The sync face of the integrations: coroutines run on a private event loop thread.

LangGraph and LangChain call their sync methods (``put``, ``mget``, …) from
plain threads. An adapter owns one :class:`StorePortal`, an anyio blocking
portal started on the first sync call: one event loop in one thread for the
adapter's whole life, so the store's connections (an aiosqlite thread, a
Redis pool) are made once and reused, as they would be under ``asyncio.run``
of a whole program, instead of a new loop per call. ``close()`` stops it.

A store used through the portal belongs to the portal's loop: drive one
adapter either through its sync methods or through its async ones, not both
(connections of a Redis pool or an aiosqlite thread are bound to the loop that
made them).
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Final, Self, TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal

from ..protocol import KVStore

__all__ = ["PortalLifecycle", "StorePortal"]

T = TypeVar("T")

BATCH: Final = 128
"""Items an iterator pulls from the loop per hop (one thread hop per batch, not per item)."""


class StorePortal:
    """A lazily started anyio blocking portal, shared by the sync methods of one adapter.

    Thread-safe: any number of threads may call at once; the calls run as tasks
    on the portal's loop. After :meth:`close` the next call starts a new portal.

    >>> portal = StorePortal()
    >>> portal.call(anyio.sleep, 0)     # doctest: +SKIP
    >>> portal.close()
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._context: AbstractContextManager[BlockingPortal] | None = None
        self._portal: BlockingPortal | None = None

    @property
    def started(self) -> bool:
        """True between the first call and :meth:`close`."""
        return self._portal is not None

    def _get(self) -> BlockingPortal:
        with self._guard:
            if self._portal is None:
                context = start_blocking_portal("asyncio")
                self._portal = context.__enter__()
                self._context = context
            return self._portal

    def call(self, fn: Callable[..., Awaitable[T]], *args: object) -> T:
        """Run ``await fn(*args)`` on the portal's loop and return its result.

        Raises:
            RuntimeError: called from the portal's own loop (it would wait on itself).
        """
        return self._get().call(fn, *args)

    def iterate(self, open_iterator: Callable[[], AsyncIterator[T]]) -> Iterator[T]:
        """Yield the items of ``open_iterator()``, an async iterator run on the portal's loop.

        Items cross in batches of :data:`BATCH`. Leaving the loop early (or
        closing the generator) closes the async iterator on the portal's loop.
        """
        portal = self._get()
        source = open_iterator()

        async def pull() -> list[T]:
            batch: list[T] = []
            async for item in source:
                batch.append(item)
                if len(batch) >= BATCH:
                    break
            return batch

        async def close_source() -> None:
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                await aclose()

        try:
            while batch := portal.call(pull):
                yield from batch
                if len(batch) < BATCH:
                    break
        finally:
            if self._portal is portal:  # after close() the loop and the iterator are gone
                portal.call(close_source)

    def close(self) -> None:
        """Stop the loop thread once its running calls are done. Idempotent."""
        with self._guard:
            context, self._context, self._portal = self._context, None, None
        if context is not None:
            context.__exit__(None, None, None)


class PortalLifecycle:
    """Closing and context managers of an adapter that has a store and a :class:`StorePortal`.

    The adapter sets ``store``, ``_owns_store`` and ``_portal``. Used async
    (``async with``/``aclose``), it closes the store if it owns it; used sync
    (``with``/``close``), it also stops the portal's loop thread, closing an
    owned store on that loop first (its connections were made there).
    """

    store: KVStore
    _owns_store: bool
    _portal: StorePortal

    async def aclose(self) -> None:
        """Close the store if this adapter owns it (async use). Idempotent."""
        if self._owns_store:
            await self.store.aclose()

    def close(self) -> None:
        """Stop the sync methods' loop thread, closing an owned store on it first."""
        if self._portal.started and self._owns_store:
            self._portal.call(self.store.aclose)
        self._portal.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
