"""Reading a page of a session's history without reading the whole history.

Messages are stored one per key, ``m:{id}:{seq}``, and their timestamps
strictly increase with ``seq``. A page finds its ``before``/``after`` bounds by
a k-ary search over ``seq`` (O(log n) keys, :data:`SEARCH_FANOUT` per round
trip), then reads at most ``limit + 1`` message keys with ``get_many``.

Only seqs below the record's watermark are read: a seq is allocated in the
record before its message is written, and reading past a range still being
written would let a poller's cursor move past it for good. Below the watermark
a seq can still be a hole (a tombstone for a writer that died, or a key the
first release allocated and never wrote), or a seq of a given-up range that
the record lists as dead (whatever a late writer put there): the search steps
over holes and the page skips them.

With ``after`` the page holds the ``limit`` messages right after it (ElizaOS's
rule), so walking forward from a cursor visits every message; otherwise the
newest ``limit`` before ``before``. Pages are newest first either way.
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any, Final

from kvstore import KVStore

from ..messages import Message
from .keys import message_key
from .models import MessagePage
from .record import SessionRecord

__all__ = ["SEARCH_FANOUT", "TOMBSTONE_FIELD", "is_hole", "read_page", "search"]

TOMBSTONE_FIELD: Final = "abandoned"
"""The field that marks a message key's value as a tombstone, not a message."""

SEARCH_FANOUT: Final = 4
"""Probes per round of the history search: log(n)/log(FANOUT + 1) round trips."""


async def read_page(
    store: KVStore,
    record: SessionRecord,
    *,
    limit: int,
    before: float | None,
    after: float | None,
) -> MessagePage:
    """Up to *limit* messages of *record*'s session, newest first.

    Those with ``after < created_at < before``; a bound that is None is no bound.
    """
    sid, count = record.id, record.watermark
    dead = record.dead_seqs()
    first, last = record.first_message_at, record.last_message_at
    if count == 0 or first is None or last is None:
        return MessagePage([], False)
    if before is not None and after is not None and after >= before:
        return MessagePage([], False)
    # Seqs [lower, upper) hold the matching messages. The record's first and
    # last timestamps settle the common cases without a search.
    upper = count
    if before is not None and before <= last:
        upper = (
            0
            if before <= first
            else await search(store, sid, count, before, strict=True, dead=dead)
        )
    lower = 0
    if after is not None and after >= first:
        # Every message at or above `upper` is after `before > after`: the
        # boundary for `after` lies in [0, upper].
        lower = (
            upper
            if after >= last
            else await search(store, sid, upper, after, strict=False, dead=dead)
        )
    collected: list[Message] = []
    forward = after is not None
    low, high = lower, upper
    while low < high and len(collected) <= limit:
        want = min(limit + 1 - len(collected), high - low)
        if forward:
            seqs = range(low, low + want)
            low += want
        else:
            seqs = range(high - 1, high - 1 - want, -1)
            high -= want
        found = await store.get_many(message_key(sid, s) for s in seqs)
        for s in seqs:
            data = found.get(message_key(sid, s))
            if data is not None and not is_hole(data) and s not in dead:
                collected.append(Message.from_dict(data))
    page = collected[:limit]
    if forward:
        page.reverse()
    return MessagePage(page, len(collected) > limit)


def is_hole(data: Any) -> bool:
    """True for what a seq without a message holds: nothing, or a tombstone."""
    return data is None or (isinstance(data, dict) and TOMBSTONE_FIELD in data)


async def search(
    store: KVStore,
    sid: str,
    count: int,
    cursor: float,
    *,
    strict: bool,
    dead: Container[int] = frozenset(),
) -> int:
    """First seq below *count* whose ``created_at`` is ``>= cursor`` (strict) or ``> cursor``.

    Returns *count* when there is none. Seqs in *dead* count as holes (see
    :mod:`.record`), whatever they hold.

    A k-ary search: each round reads :data:`SEARCH_FANOUT` messages with one
    ``get_many``. Holes are skipped at the edges of the interval, and a round
    that finds only holes falls back to probing consecutive seqs, so the search
    always terminates.
    """
    # Invariant: present messages below `low` are before the cursor, present
    # messages at or above `high` are not.
    low, high = 0, count
    dense = False
    while low < high:
        span = high - low
        if dense or span <= SEARCH_FANOUT:
            probes = list(range(low, min(low + SEARCH_FANOUT, high)))
        else:
            probes = sorted(
                {low + span * (i + 1) // (SEARCH_FANOUT + 1) for i in range(SEARCH_FANOUT)}
            )
        found = await store.get_many(message_key(sid, s) for s in probes)
        new_low, new_high = low, high
        missing: set[int] = set()
        for seq in probes:
            data = found.get(message_key(sid, seq))
            if data is None or is_hole(data) or seq in dead:
                missing.add(seq)
                continue
            created = data["created_at"]
            if created < cursor or (not strict and created == cursor):
                new_low = max(new_low, seq + 1)
            else:
                new_high = min(new_high, seq)
                break
        while new_low < new_high and new_low in missing:
            new_low += 1
        while new_low < new_high and new_high - 1 in missing:
            new_high -= 1
        dense = (new_low, new_high) == (low, high)
        low, high = new_low, new_high
    return low
