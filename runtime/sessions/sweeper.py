"""Removing expired sessions: the expiry bucket index and the sweep over it.

Every session is indexed under the ``e:{bucket}`` key of the
:data:`~runtime.sessions.keys.BUCKET_SECONDS`-wide time bucket its expiry falls
in. A sweep reads only the buckets that came due since the last sweep (the
``c:sweep`` cursor). A session renewed since it was indexed is found there,
still alive, and moved to the bucket of its new expiry; renewals themselves
never touch the index. So a sweep costs what came due, not all sessions.

Removing a session is claim, purge, report: an atomic ``update`` marks the
record ``expired`` (exactly one replica wins it, and a renewal racing with the
sweep is fenced: whichever lands first wins), then its messages, index entry
and record are deleted, record last, and ``on_expired`` is called.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final

from kvstore import KVStore

from .keys import (
    BUCKET_PREFIX,
    BUCKET_SECONDS,
    CURSOR_KEY,
    agent_prefix,
    bucket_key,
    bucket_of,
    message_key,
    session_key,
)
from .record import SessionRecord

__all__ = ["Skip", "Sweeper"]

# Sweeping walks bucket numbers one by one (in get_many batches); after a very
# long pause it is cheaper to list the few buckets that exist instead.
_MAX_BUCKET_WALK: Final = 4096
_BUCKET_BATCH: Final = 256
_DELETE_BATCH: Final = 512


class Skip(Exception):
    """Control flow inside ``update``: leave the record as it is (not active any more)."""

    def __init__(self, record: SessionRecord | None) -> None:
        super().__init__()
        self.record = record


class _NotExpired(Exception):
    """The sweeper's claim found the session renewed meanwhile."""

    def __init__(self, record: SessionRecord) -> None:
        super().__init__()
        self.record = record


def decoded(current: Any) -> SessionRecord | None:
    """*current* (what ``update`` passes its function) as a record, None when absent."""
    return SessionRecord.from_dict(current) if isinstance(current, dict) else None


class Sweeper:
    """The expiry index and sweeps of one ``"sessions"`` store.

    Args:
        store: the sessions store.
        grace_seconds: how long keys outlive the expiry they are indexed for.
        report: awaited once per session this sweeper removed.
    """

    def __init__(
        self,
        store: KVStore,
        *,
        grace_seconds: float,
        report: Callable[[SessionRecord], Awaitable[None]],
    ) -> None:
        self._store = store
        self._grace = grace_seconds
        self._report = report

    async def sweep(self, now: float) -> int:
        """Remove the sessions expired at *now*; returns how many this call removed."""
        current = bucket_of(now)
        # Buckets up to `settled` are finished after this sweep; the two newest
        # are kept because other replicas' clocks may be a little behind ours.
        settled = current - 2
        cursor = await self._store.get(CURSOR_KEY)
        buckets: Iterable[int]
        walkable = isinstance(cursor, int) and not isinstance(cursor, bool)
        if walkable and current - cursor <= _MAX_BUCKET_WALK:
            buckets = range(cursor + 1, current + 1)
        else:
            buckets = await self._existing_buckets(current)
        removed = 0
        batch: list[int] = []
        for bucket in buckets:
            batch.append(bucket)
            if len(batch) == _BUCKET_BATCH:
                removed += await self._sweep_buckets(batch, now, settled)
                batch = []
        if batch:
            removed += await self._sweep_buckets(batch, now, settled)
        await self._store.update(
            CURSOR_KEY,
            lambda old: max(old, settled) if isinstance(old, int) else settled,
        )
        return removed

    async def index(self, sid: str, expires_at: float, now: float) -> None:
        """Add *sid* to the bucket of *expires_at*."""
        bucket = bucket_of(expires_at)
        await self._store.update(
            bucket_key(bucket),
            lambda ids: ids if sid in ids else [*ids, sid],
            default=[],
            ttl=self._bucket_ttl(bucket, now),
        )

    async def purge(self, sid: str, record: SessionRecord) -> None:
        """Delete session *sid*'s messages, index entry and record (the record last).

        If this process dies half-way, the record (already claimed or ended)
        is still there for the next sweep to finish the cleanup.
        """
        count = record.message_count
        for start in range(0, count, _DELETE_BATCH):
            stop = min(start + _DELETE_BATCH, count)
            await self._store.delete_many(message_key(sid, s) for s in range(start, stop))
        await self._store.delete(agent_prefix(record.agent_id) + sid)
        await self._store.delete(session_key(sid))

    async def _existing_buckets(self, current: int) -> list[int]:
        found: set[int] = set()
        async for key, _ in self._store.entries(BUCKET_PREFIX):
            suffix = key[len(BUCKET_PREFIX) :]
            if suffix.lstrip("-").isdigit() and int(suffix) <= current:
                found.add(int(suffix))
        return sorted(found)

    async def _sweep_buckets(self, buckets: list[int], now: float, settled: int) -> int:
        found = await self._store.get_many(bucket_key(b) for b in buckets)
        removed = 0
        for bucket in buckets:
            ids = found.get(bucket_key(bucket))
            if isinstance(ids, list) and ids:
                removed += await self._sweep_bucket(bucket, ids, now, settled)
        done = [bucket_key(b) for b in buckets if b <= settled and bucket_key(b) in found]
        if done:
            await self._store.delete_many(done)
        return removed

    async def _sweep_bucket(self, bucket: int, ids: list[Any], now: float, settled: int) -> int:
        unique = [sid for sid in dict.fromkeys(ids) if isinstance(sid, str)]
        records = await self._store.get_many(session_key(sid) for sid in unique)
        removed = 0
        handled: set[str] = set()
        for sid in unique:
            record = decoded(records.get(session_key(sid)))
            if record is None:
                handled.add(sid)  # ended, or removed by the store's TTL
            elif record.expires_at <= now or record.state != "active":
                removed += await self._expire(sid, now)
                handled.add(sid)
            elif bucket_of(record.expires_at) != bucket:
                # Renewed since it was indexed: check again when the new expiry comes.
                await self.index(sid, record.expires_at, now)
                handled.add(sid)
        if bucket > settled and handled:
            # This bucket stays (it is still filling); forget what was dealt with.
            await self._store.update(
                bucket_key(bucket),
                lambda current: [i for i in current or [] if i not in handled],
                ttl=self._bucket_ttl(bucket, now),
            )
        return removed

    async def _expire(self, sid: str, now: float) -> int:
        def claim(current: Any) -> dict[str, Any]:
            record = decoded(current)
            if record is None or record.state != "active":
                raise Skip(record)
            if record.expires_at > now:
                raise _NotExpired(record)
            return record.with_state("expired").to_dict()

        try:
            # The atomic claim is what makes on_expired exactly-once across
            # replicas, and it also fences a renewal racing with this sweep:
            # whichever lands first wins, the other sees it.
            stored = await self._store.update(session_key(sid), claim, ttl=self._grace)
        except _NotExpired as renewed:
            await self.index(sid, renewed.record.expires_at, now)
            return 0
        except Skip as skipped:
            # Claimed by another sweeper or ended: cleaning up again is harmless
            # and finishes the job if that one died half-way.
            if skipped.record is not None:
                await self.purge(sid, skipped.record)
            return 0
        record = SessionRecord.from_dict(stored)
        await self.purge(sid, record)
        await self._report(record)
        return 1

    def _bucket_ttl(self, bucket: int, now: float) -> float:
        return max((bucket + 1) * BUCKET_SECONDS - now, 0.0) + self._grace
