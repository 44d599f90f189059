"""Lanes: concurrent jobs on one key of this process run in batches, one batch at a time.

The task that gets a lane's lock runs every job queued on the lane so far (up to
``max_batch``) as one batch; the others wait for the lock and find their job
done. So *n* concurrent jobs on one key cost a few batches, each one store
round trip or a few, instead of *n* optimistic updates of one key retrying
against each other. Session appends (:mod:`.writer`) and the sweeper's index
of new sessions (:mod:`.sweeper`) use them; replicas still coordinate through
the store's atomic ``update`` only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import anyio

__all__ = ["Lanes"]

K = TypeVar("K", bound=Hashable)
J = TypeVar("J")


@dataclass(slots=True)
class _Slot(Generic[J]):
    job: J
    taken: bool = False
    error: BaseException | None = None


@dataclass(slots=True)
class _Lane(Generic[J]):
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    queue: list[_Slot[J]] = field(default_factory=list)
    users: int = 0


class Lanes(Generic[K, J]):
    """One lane per key; :meth:`run` returns once a batch holding the job was processed.

    Args:
        process: runs one batch of a key's jobs. It runs shielded from
            cancellation (the other jobs of the batch wait for it). What it
            raises is raised to every job of the batch; an outcome of one job
            alone is for *process* to record on the job.
        max_batch: jobs processed in one batch at most.
    """

    def __init__(self, process: Callable[[K, list[J]], Awaitable[None]], *, max_batch: int) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self._process = process
        self._max_batch = max_batch
        self._lanes: dict[K, _Lane[J]] = {}

    async def run(self, key: K, job: J) -> None:
        """Queue *job* on *key*'s lane; return once a batch holding it was processed.

        A job whose caller is cancelled before a batch took it is dropped.

        Raises:
            what *process* raised for the batch holding *job*.
        """
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane()
        slot = _Slot(job)
        lane.queue.append(slot)
        lane.users += 1
        try:
            async with lane.lock:
                if not slot.taken:
                    batch = lane.queue[: self._max_batch]
                    del lane.queue[: self._max_batch]
                    for taken in batch:
                        taken.taken = True
                    with anyio.CancelScope(shield=True):
                        await self._run_batch(key, batch)
        finally:
            if not slot.taken:
                lane.queue.remove(slot)
            lane.users -= 1
            if lane.users == 0:
                del self._lanes[key]
        if slot.error is not None:
            raise slot.error

    async def _run_batch(self, key: K, batch: list[_Slot[J]]) -> None:
        try:
            await self._process(key, [slot.job for slot in batch])
        except BaseException as err:
            for slot in batch:
                slot.error = err
            if not isinstance(err, Exception):
                raise
