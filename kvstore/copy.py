"""Copying a store to another, keeping each key's remaining TTL: the migration engine.

:func:`copy_store` streams the live entries of one :class:`~kvstore.KVStore` into
another in batches, so memory use does not grow with the size of the store. It is
what ``python -m kvstore copy`` runs, and it works on any two stores, so an
application can migrate from inside its own process (``memory://`` included)::

    from kvstore import open_service
    from kvstore.copy import copy_store

    async with open_service("sqlite:///kv.db") as old, open_service("redis://…") as new:
        counts = await copy_store(old.get_store("sessions"), new.get_store("sessions"))

It reports progress through a callback and displays nothing itself
(:mod:`kvstore.progress` is the command line's display).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Final

import anyio

from .options import check_int, check_seconds
from .protocol import KVStore

__all__ = [
    "DEFAULT_BATCH",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_TTL_PRECISION",
    "CopyCounts",
    "copy_store",
]

DEFAULT_BATCH: Final = 500
"""Entries read and written per batch."""
DEFAULT_TTL_PRECISION: Final = 1.0
"""Seconds of deadline that keys may share in one write (see :func:`copy_store`)."""
DEFAULT_CONCURRENCY: Final = 16
"""Writes in flight at once."""


@dataclass
class CopyCounts:
    """What :func:`copy_store` did with each entry it read."""

    copied: int = 0
    """Entries written to the destination."""
    skipped: int = 0
    """Entries left alone because the key exists in the destination (no-overwrite)."""
    expired: int = 0
    """Entries that expired or vanished between being read and being written."""

    @property
    def total(self) -> int:
        """Every entry read from the source."""
        return self.copied + self.skipped + self.expired

    def __iadd__(self, other: CopyCounts) -> CopyCounts:
        self.copied += other.copied
        self.skipped += other.skipped
        self.expired += other.expired
        return self


@dataclass
class _Group:
    """Entries of one batch written together, with the earliest deadline among them."""

    deadline: float
    items: dict[str, Any] = field(default_factory=dict)


async def copy_store(
    source: KVStore,
    target: KVStore,
    *,
    prefix: str = "",
    batch: int = DEFAULT_BATCH,
    overwrite: bool = True,
    ttl_precision: float = DEFAULT_TTL_PRECISION,
    concurrency: int = DEFAULT_CONCURRENCY,
    on_batch: Callable[[CopyCounts], object] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> CopyCounts:
    """Copy the live entries of *source* to *target*, keeping their remaining TTLs.

    Reads ``entries(prefix)`` *batch* entries at a time and asks ``ttl(key)`` for
    each. Persistent keys are written with one ``set_many``; keys with a TTL are
    grouped by deadline, in windows of *ttl_precision* seconds, and each group is
    written with one ``set_many`` whose TTL is the group's earliest deadline, so
    no copy outlives its original (0 gives each key its own exact write). With
    ``overwrite=False`` keys already in *target* are kept (``add``). The writes
    of a batch run concurrently, at most *concurrency* at a time, which lets
    SQLite commit them together and Redis pipeline them.

    *on_batch* is called with the counts of each batch as it completes. Returns
    the totals. *clock* must be monotonic seconds; only durations are used.

    >>> counts = await copy_store(old.get_store("sessions"),   # doctest: +SKIP
    ...                           new.get_store("sessions"))
    """
    check_int("batch", batch, minimum=1)
    copier = _Copier(
        source,
        target,
        overwrite=overwrite,
        ttl_precision=check_seconds("ttl_precision", ttl_precision, allow_zero=True),
        concurrency=check_int("concurrency", concurrency, minimum=1),
        clock=clock,
    )
    totals = CopyCounts()
    # Leaving early (an error) must release the source's cursor/scan now, not at GC time.
    async with aclosing(source.entries(prefix)) as rows:
        pending: list[tuple[str, Any]] = []
        async for item in rows:
            pending.append(item)
            if len(pending) >= batch:
                totals += await copier.copy_batch(pending, on_batch)
                pending = []
        if pending:
            totals += await copier.copy_batch(pending, on_batch)
    return totals


class _Copier:
    def __init__(
        self,
        source: KVStore,
        target: KVStore,
        *,
        overwrite: bool,
        ttl_precision: float,
        concurrency: int,
        clock: Callable[[], float],
    ) -> None:
        self._source = source
        self._target = target
        self._overwrite = overwrite
        self._precision = ttl_precision
        self._limiter = anyio.CapacityLimiter(concurrency)
        self._clock = clock

    async def copy_batch(
        self,
        batch: list[tuple[str, Any]],
        on_batch: Callable[[CopyCounts], object] | None,
    ) -> CopyCounts:
        counts = CopyCounts()
        maybe_persistent: list[str] = []
        groups: dict[float, _Group] = {}
        # ttl() one key at a time: running them concurrently measured no faster
        # on SQLite (one connection) and barely faster on Redis.
        for key, value in batch:
            # A deadline from the time *before* asking keeps the copy conservative.
            asked_at = self._clock()
            remaining = await self._source.ttl(key)
            if remaining is None:
                maybe_persistent.append(key)
                continue
            if remaining <= 0:
                counts.expired += 1
                continue
            deadline = asked_at + remaining
            window = math.ceil(deadline / self._precision) if self._precision else deadline
            group = groups.get(window)
            if group is None:
                group = groups[window] = _Group(deadline)
            group.deadline = min(group.deadline, deadline)
            group.items[key] = value
        writes: list[tuple[Mapping[str, Any], float | None]] = []
        if maybe_persistent:
            # ttl() is None both for a persistent key and for one that expired or
            # was deleted since entries() yielded it: only the first is still there.
            persistent = await self._source.get_many(maybe_persistent)
            counts.expired += len(maybe_persistent) - len(persistent)
            if persistent:
                writes.append((persistent, None))
        writes.extend((group.items, group.deadline) for group in groups.values())
        if not self._overwrite:
            # One bulk read spares an add() for keys already there (a rerun);
            # add() itself still settles races with concurrent writers.
            existing = await self._target.get_many([key for items, _ in writes for key in items])
            counts.skipped += len(existing)
            writes = [
                ({key: value}, deadline)
                for items, deadline in writes
                for key, value in items.items()
                if key not in existing
            ]
        counts += await self._write_all(writes)
        if on_batch is not None:
            on_batch(counts)
        return counts

    async def _write_all(self, writes: list[tuple[Mapping[str, Any], float | None]]) -> CopyCounts:
        """Run the writes concurrently, at most *concurrency* at a time.

        Concurrent writes are what the backends batch best: SQLite commits them
        in one transaction, Redis pipelines them.
        """
        counts = CopyCounts()

        async def write(items: Mapping[str, Any], deadline: float | None) -> None:
            nonlocal counts
            async with self._limiter:
                counts += await self._write(items, deadline)

        try:
            async with anyio.create_task_group() as tasks:
                # Soonest deadlines first: they are the ones that could run out.
                for items, deadline in sorted(writes, key=_deadline_order):
                    tasks.start_soon(write, items, deadline)
        except ExceptionGroup as group:
            # Callers expect the store's own error, not a task group's wrapper.
            first = _first_leaf(group)
            raise first from first.__cause__
        return counts

    async def _write(self, items: Mapping[str, Any], deadline: float | None) -> CopyCounts:
        ttl = None if deadline is None else deadline - self._clock()
        if ttl is not None and ttl <= 0:
            return CopyCounts(expired=len(items))
        if self._overwrite and len(items) > 1:
            await self._target.set_many(items, ttl=ttl)
            return CopyCounts(copied=len(items))
        ((key, value),) = items.items()
        if self._overwrite:
            # A lone key: set() can share a pipeline with concurrent writes
            # where a one-item set_many may need a transaction of its own.
            await self._target.set(key, value, ttl=ttl)
            return CopyCounts(copied=1)
        if await self._target.add(key, value, ttl=ttl):
            return CopyCounts(copied=1)
        return CopyCounts(skipped=1)


def _deadline_order(write: tuple[Mapping[str, Any], float | None]) -> float:
    deadline = write[1]
    return math.inf if deadline is None else deadline


def _first_leaf(err: BaseException) -> BaseException:
    while isinstance(err, BaseExceptionGroup):
        err = err.exceptions[0]
    return err
