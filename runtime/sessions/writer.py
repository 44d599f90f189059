"""Appending messages: allocate, write, commit, with concurrent appends to one session batched.

An append is three store steps, whatever the backend:

1. an atomic ``update`` of the record allocates a range of seqs (and their
   whole-millisecond timestamps) and lists it as pending;
2. one ``set_many`` writes the messages;
3. an ``update`` commits the range: readers now see it (they never read past
   the oldest pending range, see :mod:`.record`).

An exchange sent with an idempotency key adds a step between 2 and 3: the
*claim*, an ``update`` of its marker that stores the answer only if the marker
still names this request as its owner (:mod:`.idempotency`). An append whose
claim is lost overwrites its messages with tombstones before the commit, which
counts them as holes, so a stalled request whose marker a retry took over
never stores its exchange next to the retry's. The pending range lists its
keyed exchanges (:data:`~.record.Fence`) for whoever has to give it up.

Inside one process the appends to one session go through a *lane*
(:mod:`.lanes`): the task that gets the lane's lock writes every append queued
so far as one batch (one allocation, one write, one commit), the others wait for
their answer. So 64
concurrent senders on one session cost a few store round trips per batch, not
an optimistic-transaction retry storm; replicas still coordinate through the
record's atomic ``update`` only, so any :class:`~kvstore.KVStore` works.

A range whose writer died between steps 1 and 3 would hold the watermark
forever: after ``commit_timeout`` the next writer gives it up. For a keyed
exchange it first revokes the marker if its owner still holds it pending, so a
late claim fails, and overwrites the exchange's seqs with tombstones unless the
claim was made (then the answer was given, and the messages stay). Elsewhere
it ``add``\\ s a tombstone at each seq that has no message (``add`` is atomic,
so a message that made it in is kept). Then it drops the range, listing the
seqs that hold no message (and the revoked exchanges' seqs) as *dead* in the
record: readers skip them, and they count as holes. A writer checks the clock
before step 2 and gives up its own range past half of ``commit_timeout``. A
writer stalled in step 2 itself may land its messages after the give-up, over
the tombstones: its commit finds the range gone and its seqs dead, and it
raises :class:`~runtime.errors.ExchangeNotStoredError` (nothing of it is
visible), so history and counts still agree.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

import anyio

from kvstore import KVStore

from ..errors import ExchangeNotStoredError
from ..messages import Message, Role
from . import idempotency
from .history import TOMBSTONE_FIELD, is_hole
from .idempotency import ClaimLostError, Lease
from .keys import message_key, session_key
from .lanes import Lanes
from .record import Fence, Lifetime, Pending, SessionRecord, spans

__all__ = ["Appended", "Draft", "SessionWriter"]

logger = logging.getLogger(__name__)

_MAX_BATCH: Final = 256
"""Appends written in one batch at most (bounds one set_many)."""


@dataclass(frozen=True, slots=True)
class Draft:
    """One message to append, before it has a seq and a timestamp."""

    role: Role
    content: str
    metadata: dict[str, Any]
    id: str = field(default_factory=lambda: str(uuid.uuid4()))


class Appended(NamedTuple):
    """What :meth:`SessionWriter.append` stored, and the session's record right after."""

    messages: list[Message]
    """The messages as stored, in order."""
    record: SessionRecord | None
    """The record as the commit left it; None if the commit did not run (a claim's
    outcome was unknown: the range stays pending until it is given up)."""


@dataclass(slots=True)
class _Append:
    drafts: Sequence[Draft]
    renewals: int
    lease: Lease | None
    known: Lifetime | None = None
    messages: list[Message] = field(default_factory=list)
    record: SessionRecord | None = None
    error: BaseException | None = None


class SessionWriter:
    """Appends messages to sessions of one store (see the module docs).

    Args:
        store: the sessions store.
        check_live: decodes a stored record and raises unless the session is live.
        clock: seconds since the epoch.
        grace_seconds: how long message keys outlive the session's latest end.
        commit_timeout: after this, a pending range is given up.
        answer_ttl: how long a claimed idempotency answer is kept.
        lease_seconds: life of a marker freed by a give-up.
    """

    def __init__(
        self,
        store: KVStore,
        *,
        check_live: Callable[[Any, str, float], SessionRecord],
        clock: Callable[[], float],
        grace_seconds: float,
        commit_timeout: float,
        answer_ttl: float,
        lease_seconds: float,
    ) -> None:
        self._store = store
        self._answer_ttl = answer_ttl
        self._lease_seconds = lease_seconds
        self._check_live = check_live
        self._clock = clock
        self._grace = grace_seconds
        self._commit_timeout = commit_timeout
        self._lanes: Lanes[str, _Append] = Lanes(self._write, max_batch=_MAX_BATCH)

    async def append(
        self,
        sid: str,
        drafts: Sequence[Draft],
        *,
        renewals: int,
        lease: Lease | None = None,
        known: Lifetime | None = None,
    ) -> Appended:
        """Store *drafts* as consecutive messages of *sid*; return them as stored.

        With *lease* (an exchange of a user message and its reply sent with an
        idempotency key), the messages are committed only if the lease's marker
        still names its owner when they are written, and the marker then holds
        the answer (see the module docs). *known*: the session's lifetime as
        read just before, which saves reading the record to fix its TTL.

        Raises:
            SessionNotFoundError, SessionExpiredError: the session is not live.
            ClaimLostError: the lease's marker was not its owner's any more;
                nothing of this append is visible.
            ExchangeNotStoredError: given up (too slow, by this writer or by
                another one meanwhile); nothing is visible.
            KVStoreError: the store failed. Nothing of this append is visible,
                except after a claim was made: then the messages become visible
                when the range is given up (``commit_timeout``).
        """
        job = _Append(drafts, renewals, lease, known)
        await self._lanes.run(sid, job)
        if job.error is not None:
            raise job.error
        return Appended(job.messages, job.record)

    async def _write(self, sid: str, batch: list[_Append]) -> None:
        now = self._clock()
        total = sum(len(job.drafts) for job in batch)
        renewals = sum(job.renewals for job in batch)
        fences: list[Fence] = []
        offset = 0
        for job in batch:
            if job.lease is not None:
                fences.append((offset, len(job.drafts), job.lease.marker, job.lease.owner))
            offset += len(job.drafts)
        allocated: SessionRecord | None = None
        times: list[float] = []

        def allocate(current: Any) -> dict[str, Any]:
            nonlocal allocated, times
            live = self._check_live(current, sid, now)
            times = live.stamps_after(now, total)
            allocated = live.with_messages(now, total, renewals=renewals, fences=tuple(fences))
            return allocated.to_dict()

        # The TTL is fixed before the update runs: an upper bound of the new
        # expiry from the fields no writer changes (created_at, timeout).
        bound = next((job.known for job in batch if job.known is not None), None)
        if bound is None:
            bound = self._check_live(await self._store.get(session_key(sid)), sid, now).lifetime
        ttl = max(bound.expiry_bound(now) - now, 0.0) + self._grace
        await self._store.update(session_key(sid), allocate, ttl=ttl)
        if allocated is None:  # a store that did not call fn; cannot happen with ours
            raise ExchangeNotStoredError(f"session {sid!r}: the allocation was not applied")
        record = allocated
        range_ = record.pending[-1]
        first = range_[0]
        stamps = iter(times)
        entries: dict[str, Any] = {}
        seq = first
        for job in batch:
            for draft in job.drafts:
                message = Message(
                    draft.id, sid, draft.role, draft.content, next(stamps), draft.metadata
                )
                job.messages.append(message)
                entries[message_key(sid, seq)] = message.to_dict()
                seq += 1
        try:
            if self._clock() - now > self._commit_timeout / 2:
                raise ExchangeNotStoredError(
                    f"session {sid!r}: storing the messages took too long; nothing was stored"
                )
            await self._store.set_many(entries, ttl=record.latest_end - now + self._grace)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._give_up_quietly(sid, range_)
            raise
        lost = await self._claim(batch, first) if fences else []
        if lost is None:
            # A claim's outcome is unknown (the store failed): the range stays
            # pending, and whoever gives it up settles it by the markers.
            return
        if lost:
            tombstones = {message_key(sid, s): _tombstone(s) for s in lost}
            try:
                await self._store.set_many(tombstones, ttl=self._grace * 4)
            except Exception:
                # The range stays pending; giving it up tombstones these seqs.
                logger.warning("could not drop the lost exchange(s) of session %r", sid)
                return
        committed: SessionRecord | None = None

        def commit(current: Any) -> dict[str, Any]:
            nonlocal committed
            if not isinstance(current, dict):
                raise ExchangeNotStoredError(
                    f"session {sid!r} went away while its messages were written"
                )
            stored = SessionRecord.from_dict(current)
            # Not pending any more: another writer gave the range up meanwhile,
            # and its record says which seqs are dead (checked below).
            committed = stored.given_up(first, len(lost)) if stored.is_pending(first) else stored
            return committed.to_dict()

        result = await self._store.update(session_key(sid), commit, ttl=ttl)
        if committed is None:  # a store that did not call fn; cannot happen with ours
            committed = SessionRecord.from_dict(result)
        if committed.timeout != bound.timeout:
            # The timeout was changed meanwhile: the TTL fixed above may be short.
            await self._store.expire(
                session_key(sid), max(committed.expiry_bound(now) - now, 0.0) + self._grace
            )
        dead = committed.dead_seqs()
        seq = first
        for job in batch:
            if job.error is None and any(s in dead for s in range(seq, seq + len(job.drafts))):
                job.error = ExchangeNotStoredError(
                    f"session {sid!r}: storing the messages took too long and another"
                    " writer gave them up; nothing was stored"
                )
            job.record = committed
            seq += len(job.drafts)
        for entry in record.stale(now, self._commit_timeout):
            await self._give_up_quietly(sid, entry)

    async def _claim(self, batch: list[_Append], first: int) -> list[int] | None:
        """Claim the markers of the batch's keyed appends; the seqs of those that lost.

        *first*: the seq of the batch's first message. None if a claim's outcome
        is unknown. An append that lost its claim gets ClaimLostError.
        """
        lost: list[int] = []
        unknown = False

        async def claim(job: _Append, lease: Lease, seqs: range) -> None:
            nonlocal unknown
            try:
                await self._store.update(
                    lease.marker, idempotency.claim(lease, job.messages), ttl=self._answer_ttl
                )
            except ClaimLostError as err:
                job.error = err
                lost.extend(seqs)
            except Exception as err:
                job.error = err
                unknown = True

        async with anyio.create_task_group() as group:
            seq = first
            for job in batch:
                if job.lease is not None:
                    group.start_soon(claim, job, job.lease, range(seq, seq + len(job.drafts)))
                seq += len(job.drafts)
        return None if unknown else lost

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
        first, count, _, fences = entry
        seqs = range(first, first + count)
        fenced: set[int] = set()
        revoked: set[int] = set()
        for seq, n, marker, owner in fences:
            fenced.update(range(seq, seq + n))
            try:
                await self._store.update(marker, idempotency.revoke(owner), ttl=self._lease_seconds)
            except ClaimLostError as lost:
                if idempotency.owned_by(lost.found, owner, "done"):
                    continue  # the claim was made: the answer was given, the messages stay
            # Revoked (or never this owner's): its late claim fails; its messages must go.
            revoked.update(range(seq, seq + n))
            await self._store.set_many(
                {message_key(sid, s): _tombstone(s) for s in range(seq, seq + n)},
                ttl=self._grace * 4,
            )
        for seq in seqs:
            if seq not in fenced:
                await self._store.add(message_key(sid, seq), _tombstone(seq), ttl=self._grace * 4)
        # Decided from what the seqs hold, so an earlier attempt cut short counts
        # too; the dead seqs stay holes whatever a late writer puts there.
        held = await self._store.get_many(message_key(sid, seq) for seq in seqs)
        dead = spans(
            seq
            for seq in seqs
            if seq in revoked or (seq not in fenced and is_hole(held.get(message_key(sid, seq))))
        )
        holes = sum(n for _, n in dead)

        def drop(current: Any) -> Any:
            if not isinstance(current, dict):
                raise _Gone
            return SessionRecord.from_dict(current).given_up(first, holes, dead).to_dict()

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


def _tombstone(seq: int) -> dict[str, Any]:
    return {TOMBSTONE_FIELD: True, "seq": seq}
