"""Appending messages: allocate, write, commit, with concurrent appends to one session batched.

An append is three store steps, whatever the backend:

1. an atomic ``update`` of the record allocates a range of seqs (and their
   whole-millisecond timestamps) and lists it as pending;
2. one ``set_many`` writes the messages, together with whatever else must
   become durable with them (the idempotency answer);
3. an ``update`` commits the range: readers now see it (they never read past
   the oldest pending range, see :mod:`.record`).

Inside one process the appends to one session go through a *lane*: the task
that gets the lane's lock writes every append queued so far as one batch (one
allocation, one write, one commit), the others wait for their answer. So 64
concurrent senders on one session cost a few store round trips per batch, not
an optimistic-transaction retry storm; replicas still coordinate through the
record's atomic ``update`` only, so any :class:`~kvstore.KVStore` works.

A range whose writer died between steps 1 and 3 would hold the watermark
forever: after ``commit_timeout`` the next writer gives it up. It ``add``\\ s a
tombstone at each seq of the range that has no message (``add`` is atomic, so a
message that made it in is kept, and a tombstone is never overwritten by a late
writer, which instead fails), then drops the range, counting the tombstones
as holes. A writer checks the clock before step 2 and gives up its own range
past half of ``commit_timeout``, so a live writer is never overtaken.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import anyio

from kvstore import KVStore

from ..errors import ExchangeNotStoredError
from ..messages import Message, Role
from .history import TOMBSTONE_FIELD
from .keys import message_key, session_key
from .record import Pending, SessionRecord

__all__ = ["Draft", "SessionWriter"]

logger = logging.getLogger(__name__)

_MAX_BATCH: Final = 256
"""Appends written in one batch at most (bounds one set_many)."""

Extra = Callable[[list[Message]], Mapping[str, Any]]
"""Given an append's stored messages, more keys to write in the same ``set_many``."""


@dataclass(frozen=True, slots=True)
class Draft:
    """One message to append, before it has a seq and a timestamp."""

    role: Role
    content: str
    metadata: dict[str, Any]
    id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass(slots=True)
class _Append:
    drafts: Sequence[Draft]
    renewals: int
    extra: Extra | None
    extra_ttl: float
    deadline: Callable[[], float] | None
    known: SessionRecord | None = None
    done: bool = False
    messages: list[Message] = field(default_factory=list)
    error: BaseException | None = None


@dataclass(slots=True)
class _Lane:
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    queue: list[_Append] = field(default_factory=list)
    users: int = 0


class SessionWriter:
    """Appends messages to sessions of one store (see the module docs).

    Args:
        store: the sessions store.
        check_live: decodes a stored record and raises unless the session is live.
        clock: seconds since the epoch.
        grace_seconds: how long message keys outlive the session's latest end.
        commit_timeout: after this, a pending range is given up.
    """

    def __init__(
        self,
        store: KVStore,
        *,
        check_live: Callable[[Any, str, float], SessionRecord],
        clock: Callable[[], float],
        grace_seconds: float,
        commit_timeout: float,
    ) -> None:
        self._store = store
        self._check_live = check_live
        self._clock = clock
        self._grace = grace_seconds
        self._commit_timeout = commit_timeout
        self._lanes: dict[str, _Lane] = {}

    async def append(
        self,
        sid: str,
        drafts: Sequence[Draft],
        *,
        renewals: int,
        extra: Extra | None = None,
        extra_ttl: float = 0.0,
        deadline: Callable[[], float] | None = None,
        known: SessionRecord | None = None,
    ) -> list[Message]:
        """Store *drafts* as consecutive messages of *sid*; return them as stored.

        *extra* keys are written with the messages, in one ``set_many``, with
        a TTL of at least *extra_ttl*. If the clock is past ``deadline()`` when the
        messages are about to be written, nothing is written. *known*: the
        session's record as read just before, which saves reading it again
        (only its fields that never change are used).

        Raises:
            SessionNotFoundError, SessionExpiredError: the session is not live.
            ExchangeNotStoredError: given up (too slow); nothing is visible.
            KVStoreError: the store failed; nothing of this append is visible.
        """
        job = _Append(drafts, renewals, extra, extra_ttl, deadline, known)
        lane = self._lanes.get(sid)
        if lane is None:
            lane = self._lanes[sid] = _Lane()
        lane.queue.append(job)
        lane.users += 1
        try:
            async with lane.lock:
                if not job.done:
                    batch, lane.queue = lane.queue[:_MAX_BATCH], lane.queue[_MAX_BATCH:]
                    # Shielded: the other tasks of the batch wait for this one.
                    with anyio.CancelScope(shield=True):
                        await self._write(sid, batch)
        finally:
            lane.users -= 1
            if lane.users == 0:
                del self._lanes[sid]
        if job.error is not None:
            raise job.error
        return job.messages

    async def _write(self, sid: str, batch: list[_Append]) -> None:
        try:
            await self._write_batch(sid, batch)
        except BaseException as err:
            for job in batch:
                if not job.done:
                    job.error = err
            if not isinstance(err, Exception):
                raise
        finally:
            for job in batch:
                job.done = True

    async def _write_batch(self, sid: str, batch: list[_Append]) -> None:
        now = self._clock()
        total = sum(len(job.drafts) for job in batch)
        renewals = sum(job.renewals for job in batch)
        allocated: SessionRecord | None = None
        times: list[float] = []

        def allocate(current: Any) -> dict[str, Any]:
            nonlocal allocated, times
            live = self._check_live(current, sid, now)
            times = live.stamps_after(now, total)
            allocated = live.with_messages(now, total, renewals=renewals)
            return allocated.to_dict()

        # The TTL is fixed before the update runs: an upper bound of the new
        # expiry from the fields no writer changes (created_at, timeout).
        bound = next((job.known for job in batch if job.known is not None), None)
        if bound is None:
            bound = self._check_live(await self._store.get(session_key(sid)), sid, now)
        ttl = max(bound.expiry_bound(now) - now, 0.0) + self._grace
        await self._store.update(session_key(sid), allocate, ttl=ttl)
        if allocated is None:  # a store that did not call fn; cannot happen with ours
            raise ExchangeNotStoredError(f"session {sid!r}: the allocation was not applied")
        record = allocated
        first = record.message_count - total
        stamps = iter(times)
        entries: dict[str, Any] = {}
        extra_ttl = 0.0
        seq = first
        for job in batch:
            for draft in job.drafts:
                message = Message(
                    draft.id, sid, draft.role, draft.content, next(stamps), draft.metadata
                )
                job.messages.append(message)
                entries[message_key(sid, seq)] = message.to_dict()
                seq += 1
            if job.extra is not None:
                entries.update(job.extra(job.messages))
                extra_ttl = max(extra_ttl, job.extra_ttl)
        message_ttl = record.latest_end - now + self._grace
        try:
            late = self._clock()
            if late - now > self._commit_timeout / 2 or any(
                job.deadline is not None and late > job.deadline() for job in batch
            ):
                raise ExchangeNotStoredError(
                    f"session {sid!r}: storing the messages took too long; nothing was stored"
                )
            await self._store.set_many(entries, ttl=max(message_ttl, extra_ttl))
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._give_up_quietly(sid, (first, total, now))
            raise
        await self._store.update(
            session_key(sid), lambda current: _committed(current, first), ttl=ttl
        )
        for entry in record.stale(now, self._commit_timeout):
            await self._give_up_quietly(sid, entry)

    async def give_up_stale(self, record: SessionRecord) -> None:
        """Give up *record*'s pending ranges older than ``commit_timeout`` (see the module docs)."""
        for entry in record.stale(self._clock(), self._commit_timeout):
            await self._give_up_quietly(record.id, entry)

    async def _give_up_quietly(self, sid: str, entry: Pending) -> None:
        try:
            await self._give_up(sid, entry)
        except Exception:
            # Someone retries once commit_timeout has passed.
            logger.warning("could not give up pending seqs %s of session %r", entry, sid)

    async def _give_up(self, sid: str, entry: Pending) -> None:
        first, count, _ = entry
        tombstones = 0
        for seq in range(first, first + count):
            if await self._store.add(
                message_key(sid, seq), {TOMBSTONE_FIELD: True, "seq": seq}, ttl=self._grace * 4
            ):
                tombstones += 1

        def drop(current: Any) -> Any:
            if not isinstance(current, dict):
                raise _Gone
            return SessionRecord.from_dict(current).given_up(first, tombstones).to_dict()

        now = self._clock()
        stored = await self._store.get(session_key(sid))
        if not isinstance(stored, dict):
            return
        record = SessionRecord.from_dict(stored)
        # An upper bound of what the record's TTL is now; nothing here renews it.
        ttl = max(record.expires_at - now, 0.0) + self._grace
        with contextlib.suppress(_Gone):
            await self._store.update(session_key(sid), drop, ttl=ttl)


class _Gone(Exception):
    """The record went away (ended, swept) while a range was being given up."""


def _committed(current: Any, first: int) -> Any:
    if not isinstance(current, dict):
        raise ExchangeNotStoredError("the session went away while its messages were written")
    return SessionRecord.from_dict(current).committed(first).to_dict()
