"""Removing expired sessions: the expiry bucket index and the sweep over it.

Every session is indexed in the :data:`~runtime.sessions.keys.BUCKET_SECONDS`-wide
time bucket its expiry falls in. A bucket is a head key ``x:{bucket}`` holding
``{"n": chunks, "ids": [...]}`` with at most :data:`CHUNK` ids, and full chunks
``x:{bucket}:{i}``: a create rewrites at most one chunk, so creates cost the
same however many sessions share the bucket, and concurrent creates of one
process share one update of the head (the first release kept one list
per bucket under ``e:{bucket}``, which is still read). A full head is first
copied to its chunk (one that cannot take a whole batch, too), then emptied,
so a crash in between loses no id.

A sweep reads the buckets that came due since the last sweep (the ``c:sweep``
cursor), and always those of the last ``lookback`` seconds by its own clock:
a replica whose clock runs ahead moves the cursor, and may delete buckets its
clock thinks are done, but sessions indexed there later are still found when
the other replicas' clocks reach them. A session renewed since it was indexed
is found there, still alive, and moved to the bucket of its new expiry;
renewals themselves never touch the index. So a sweep costs what came due
plus the lookback, not all sessions.

Removing a session is claim, purge, report: an atomic ``update`` marks the
record ``expired`` (exactly one replica wins it, and a renewal racing with the
sweep is fenced: whichever lands first wins), then its messages, their cached
states, its index entry and record are deleted, record last, and
``on_expired`` is called.
"""

from __future__ import annotations

import math
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
from .lanes import Lanes
from .record import SessionRecord

__all__ = ["Skip", "Sweeper"]

# Sweeping walks bucket numbers one by one (in get_many batches); after a very
# long pause it is cheaper to list the few buckets that exist instead.
_MAX_BUCKET_WALK: Final = 4096
_BUCKET_BATCH: Final = 256
_DELETE_BATCH: Final = 512
CHUNK: Final = 128
"""Most session ids one index key holds."""
_INDEX_PREFIX: Final = "x:"


def _head_key(bucket: int) -> str:
    return f"{_INDEX_PREFIX}{bucket}"


def _chunk_key(bucket: int, chunk: int) -> str:
    return f"{_INDEX_PREFIX}{bucket}:{chunk}"


class _Full(Exception):
    """The bucket's head holds CHUNK ids: copy them to a chunk first."""

    def __init__(self, chunk: int, ids: list[str]) -> None:
        super().__init__()
        self.chunk = chunk
        self.ids = ids


def _head(value: Any) -> tuple[int, list[str]]:
    if (
        isinstance(value, dict)
        and isinstance(value.get("n"), int)
        and isinstance(value.get("ids"), list)
    ):
        return value["n"], [i for i in value["ids"] if isinstance(i, str)]
    return 0, []


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
        lookback: seconds of past buckets every sweep reads again (see the module docs).
        state_store: the state cache's store, whose entries (by message id)
            are removed with the messages; None for none.
    """

    def __init__(
        self,
        store: KVStore,
        *,
        grace_seconds: float,
        report: Callable[[SessionRecord], Awaitable[None]],
        lookback: float = 0.0,
        state_store: KVStore | None = None,
    ) -> None:
        self._store = store
        self._grace = grace_seconds
        self._report = report
        self._lookback = math.ceil(lookback / BUCKET_SECONDS) + 2
        self._state_store = state_store
        # A batch fits an empty head, so a full one is copied at most once per batch.
        self._indexing: Lanes[int, tuple[str, float]] = Lanes(self._index_batch, max_batch=CHUNK)

    async def sweep(self, now: float) -> int:
        """Remove the sessions expired at *now*; returns how many this call removed."""
        current = bucket_of(now)
        # Buckets up to `settled` are finished after this sweep; the two newest
        # are kept because other replicas' clocks may be a little behind ours.
        settled = current - 2
        cursor = await self._store.get(CURSOR_KEY)
        buckets: Iterable[int]
        walkable = isinstance(cursor, int) and not isinstance(cursor, bool)
        if walkable and current - min(cursor, current - self._lookback) <= _MAX_BUCKET_WALK:
            buckets = range(min(cursor + 1, current - self._lookback), current + 1)
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
        """Add *sid* to the bucket of *expires_at*.

        Concurrent calls of this process for one bucket share one update of
        its head (:mod:`.lanes`): creates at once would otherwise all retry
        their compare-and-set on that one key.
        """
        await self._indexing.run(bucket_of(expires_at), (sid, now))

    async def _index_batch(self, bucket: int, batch: list[tuple[str, float]]) -> None:
        sids = list(dict.fromkeys(sid for sid, _ in batch))
        ttl = max(self._bucket_ttl(bucket, now) for _, now in batch)
        copied: _Full | None = None

        def add(value: Any) -> dict[str, Any]:
            chunk, ids = _head(value)
            if copied is not None and copied.chunk == chunk:
                done = set(copied.ids)
                chunk, ids = chunk + 1, [i for i in ids if i not in done]
            present = set(ids)
            new = [sid for sid in sids if sid not in present]
            if not new:
                return {"n": chunk, "ids": ids}
            if ids and len(ids) + len(new) > CHUNK:
                raise _Full(chunk, ids)
            return {"n": chunk, "ids": [*ids, *new]}

        while True:
            try:
                await self._store.update(_head_key(bucket), add, ttl=ttl)
                return
            except _Full as full:
                # The chunk is written before the head forgets its ids.
                await self._store.set(_chunk_key(bucket, full.chunk), full.ids, ttl=ttl)
                copied = full

    async def purge(self, sid: str, record: SessionRecord) -> None:
        """Delete session *sid*'s messages, index entry and record (the record last).

        If this process dies half-way, the record (already claimed or ended)
        is still there for the next sweep to finish the cleanup.
        """
        count = record.message_count
        for start in range(0, count, _DELETE_BATCH):
            keys = [message_key(sid, s) for s in range(start, min(start + _DELETE_BATCH, count))]
            if self._state_store is not None:
                found = await self._store.get_many(keys)
                ids = [m["id"] for m in found.values() if isinstance(m, dict) and "id" in m]
                if ids:
                    await self._state_store.delete_many(ids)
            await self._store.delete_many(keys)
        await self._store.delete(agent_prefix(record.agent_id) + sid)
        await self._store.delete(session_key(sid))

    async def _existing_buckets(self, current: int) -> list[int]:
        found: set[int] = set()
        for prefix in (BUCKET_PREFIX, _INDEX_PREFIX):
            async for key, _ in self._store.entries(prefix):
                number = key[len(prefix) :].split(":")[0]
                if number.lstrip("-").isdigit() and int(number) <= current:
                    found.add(int(number))
        return sorted(found)

    async def _sweep_buckets(self, buckets: list[int], now: float, settled: int) -> int:
        keys = [bucket_key(b) for b in buckets] + [_head_key(b) for b in buckets]
        found = await self._store.get_many(keys)
        chunks = [
            _chunk_key(b, i) for b in buckets for i in range(_head(found.get(_head_key(b)))[0])
        ]
        if chunks:
            found |= await self._store.get_many(chunks)
        removed = 0
        for bucket in buckets:
            ids: list[Any] = []
            legacy = found.get(bucket_key(bucket))
            if isinstance(legacy, list):
                ids.extend(legacy)
            chunk_count, head = _head(found.get(_head_key(bucket)))
            for i in range(chunk_count):
                part = found.get(_chunk_key(bucket, i))
                if isinstance(part, list):
                    ids.extend(part)
            ids.extend(head)
            if ids:
                removed += await self._sweep_bucket(bucket, ids, now, settled)
        done = [key for key in (*keys, *chunks) if key in found and _bucket_in(key) <= settled]
        if done:
            await self._store.delete_many(done)
        return removed

    async def _sweep_bucket(self, bucket: int, ids: list[Any], now: float, settled: int) -> int:
        unique = [sid for sid in dict.fromkeys(ids) if isinstance(sid, str)]
        records = await self._store.get_many(session_key(sid) for sid in unique)
        removed = 0
        for sid in unique:
            record = decoded(records.get(session_key(sid)))
            if record is None:
                continue  # ended, or removed by the store's TTL
            if record.expires_at <= now or record.state != "active":
                removed += await self._expire(sid, now)
            elif bucket <= settled and bucket_of(record.expires_at) != bucket:
                # Renewed since it was indexed: check again when the new expiry comes.
                # (An unsettled bucket is read again by the next sweep anyway.)
                await self.index(sid, record.expires_at, now)
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
        # Long enough for every replica within the lookback to read it.
        return (
            max((bucket + 1) * BUCKET_SECONDS - now, 0.0)
            + self._grace
            + self._lookback * BUCKET_SECONDS
        )


def _bucket_in(key: str) -> int:
    """The bucket number of an index key (``e:{b}``, ``x:{b}`` or ``x:{b}:{chunk}``)."""
    return int(key.split(":")[1])
