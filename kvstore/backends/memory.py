"""In-process backend: a dict with per-key TTLs and an optional LRU bound."""

from __future__ import annotations

import heapq
import math
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable, Iterable
from typing import Any, ClassVar, Final, Self
from urllib.parse import urlsplit

from ..base import DEFAULT_MAX_VALUE_BYTES, MISSING, URL_OPTIONS, BaseStore, as_key_list
from ..codec import Codec, JSONCodec, check_key, check_store_name, check_ttl, is_int64, is_utf8
from ..errors import SerializationError
from ..options import TextOption, check_bool, check_int, int_option, parse_query

__all__ = ["MemoryStore"]

# Scalars are immutable, so storing them as they are shares nothing with the
# caller and skips a JSON round trip on both set and get.
_SCALARS: Final = frozenset({str, int, float, bool, type(None)})
# The longest JSON encoding of one character is a 6-byte "\uXXXX" escape.
_MAX_BYTES_PER_CHAR: Final = 6

RECLAIM_BATCH: Final = 512
"""Most expired entries one call reclaims (expired keys are invisible at once regardless)."""

BUCKET_SECONDS: Final = 1.0
"""Width of one expiry bucket: keys expiring within the same second share one."""

_Entry = tuple[Any, float | None]  # (stored value, absolute expiry on the clock or None)

_URL_OPTIONS: Final[dict[str, TextOption]] = {
    "default_ttl": URL_OPTIONS["default_ttl"],
    "max_entries": int_option(minimum=1),
}


class MemoryStore(BaseStore):
    """A TTL-aware in-process store, optionally bounded with LRU eviction.

    Expired keys are invisible at once and reclaimed bucket by bucket: keys
    with a TTL are indexed by the second they expire in (a dict per second,
    and a heap of the seconds), so reclaiming costs O(expired), never a scan
    of every key, and a rewrite moves its key between buckets in O(1), so the
    index never needs rebuilding. Containers are
    stored JSON-encoded, which validates them and keeps the caller's objects
    and the stored ones apart; scalars are stored as they are.

    Args:
        default_ttl: seconds for writes with ``ttl=None``; None keeps keys forever.
        max_entries: when set, the least recently used keys are evicted beyond it.
        clock: monotonic seconds; inject a fake one in tests instead of sleeping.
        max_value_bytes: largest encoded value accepted (default 16 MiB).
        codec: value codec (default JSON).

    >>> store = MemoryStore(max_entries=10_000, default_ttl=300)
    """

    backend: ClassVar[str] = "memory"

    def __init__(
        self,
        *,
        default_ttl: float | None = None,
        max_entries: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        codec: Codec | None = None,
    ) -> None:
        super().__init__(default_ttl=default_ttl, max_value_bytes=max_value_bytes, codec=codec)
        if max_entries is not None:
            check_int("max_entries", max_entries, minimum=1)
        self._max_entries = max_entries
        self._bound = max_entries or 0
        self._clock = clock
        self._data: dict[str, _Entry] = OrderedDict() if max_entries else {}
        self._lru: OrderedDict[str, _Entry] | None = (
            self._data if isinstance(self._data, OrderedDict) else None
        )
        # Expiry index: bucket (expires_at // BUCKET_SECONDS) -> its keys, as an
        # insertion-ordered set; and a heap of the buckets. A bucket may hold a
        # key that has since been deleted or rewritten only while it is due to
        # be reclaimed (expired keys are not unindexed when a read drops them).
        self._buckets: dict[float, dict[str, None]] = {}
        self._due: list[float] = []
        self._raw_scalars = type(self._codec) is JSONCodec
        self._max_raw_str = (self._max_value_bytes - 2) // _MAX_BYTES_PER_CHAR

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """Build from ``memory://`` (query options: ``max_entries``, ``default_ttl``).

        Keyword *options* that are not None win over the query's. An unknown,
        repeated or malformed option raises :class:`~kvstore.ConfigError`.
        """
        parsed = parse_query(urlsplit(url).query, _URL_OPTIONS, source=url)
        for name, value in parsed.items():
            # An explicit keyword wins; None (as open_service passes) lets the URL decide.
            if options.get(name) is None:
                options[name] = value
        return cls(**options)

    def namespaced(self, name: str, **options: Any) -> Self:
        """A separate in-memory store with the same settings, overridden by *options*."""
        check_store_name(name)
        settings: dict[str, Any] = {
            "default_ttl": self._default_ttl,
            "max_entries": self._max_entries,
            "clock": self._clock,
            "max_value_bytes": self._max_value_bytes,
            "codec": self._codec,
        }
        return type(self)(**(settings | options))

    def __len__(self) -> int:
        """Number of entries held, including expired ones not yet reclaimed."""
        return len(self._data)

    # -- hot paths ------------------------------------------------------------------
    # get and set skip the base class's primitive hop (one coroutine per call
    # is a third of the cost of an in-memory get); behaviour is identical.

    async def get(self, key: str, default: Any = None) -> Any:
        """Return the value of *key*, or *default* when it is missing or expired."""
        if self._closed:
            self._check_open()
        stored = self._lookup(key)
        if stored is MISSING:
            return default
        return self._codec.decode(stored) if type(stored) is bytes else stored

    async def set(
        self, key: str, value: Any, *, ttl: float | None = None, keep_ttl: bool = False
    ) -> None:
        """Store *value* under *key* with *ttl* seconds (``None``: the default TTL).

        With *keep_ttl*, a live key keeps its remaining TTL; *ttl* is for a new key.
        """
        if self._closed:
            self._check_open()
        key = check_key(key)
        seconds = self._default_ttl if ttl is None else check_ttl(ttl)
        if keep_ttl is not False and check_bool("keep_ttl", keep_ttl):
            self._put_keeping_ttl(key, self._encode(value), seconds)
        else:
            self._put(key, self._encode(value), seconds)

    # Synchronous forms of get and set for MetricsStore, which calls them in its
    # own frame: an in-memory call never waits, and the inner coroutine frame
    # it saves is most of a metered call's overhead. Same bodies as above,
    # repeated because a shared helper would cost the bare calls a frame too.

    def _get_now(self, key: str, default: Any) -> Any:
        if self._closed:
            self._check_open()
        stored = self._lookup(key)
        if stored is MISSING:
            return default
        return self._codec.decode(stored) if type(stored) is bytes else stored

    def _set_now(self, key: str, value: Any, ttl: float | None) -> None:
        if self._closed:
            self._check_open()
        key = check_key(key)
        seconds = self._default_ttl if ttl is None else check_ttl(ttl)
        self._put(key, self._encode(value), seconds)

    def _now_forms(
        self,
    ) -> tuple[Callable[[str, Any], Any], Callable[[str, Any, Any], None]] | None:
        """``(get, set)`` that answer without awaiting; None if a subclass overrides those."""
        cls = type(self)
        if cls.get is not MemoryStore.get or cls.set is not MemoryStore.set:
            return None
        return self._get_now, self._set_now

    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """Return ``{key: value}`` for the live keys among *keys*."""
        self._check_open()
        decode = self._codec.decode
        found: dict[str, Any] = {}
        for key in as_key_list(keys):
            stored = self._lookup(key)
            if stored is not MISSING:
                found[key] = decode(stored) if type(stored) is bytes else stored
        return found

    # -- value representation ---------------------------------------------------

    def _encode(self, value: Any) -> Any:
        kind = type(value)
        if self._raw_scalars and kind in _SCALARS:
            if kind is str:
                # Longer or non-UTF-8 strings take the codec's path, which sizes
                # them exactly and rejects lone surrogates as other backends do.
                if len(value) <= self._max_raw_str and is_utf8(value):
                    return value
            elif kind is float:
                if not math.isfinite(value):
                    raise SerializationError("NaN and infinite floats are not valid JSON values")
                return value
            elif kind is int:
                if not is_int64(value):
                    raise SerializationError("integers must fit in 64 bits to round-trip as JSON")
                return value
            else:
                return value
        # The base class's _encode, inlined: this is the hot path of set().
        data = self._codec.encode(value)
        if len(data) > self._max_value_bytes:
            raise self._too_large(len(data))
        # orjson's bytes keep the allocation of its output buffer (about 4 KB
        # of RSS each, whatever the length); a kept copy is sized exactly.
        return bytes(memoryview(data))

    def _decode(self, stored: Any) -> Any:
        return self._codec.decode(stored) if type(stored) is bytes else stored

    # -- expiry -------------------------------------------------------------------

    def _live(self, key: str) -> Any:
        """Stored value of *key* if live, else MISSING (dropping it if expired)."""
        entry = self._data.get(key)
        if entry is None:
            return MISSING
        expires_at = entry[1]
        if expires_at is not None and expires_at <= self._clock():
            del self._data[key]
            return MISSING
        return entry[0]

    def _put(self, key: str, stored: Any, ttl: float | None) -> None:
        data = self._data
        if self._buckets:  # some key has a TTL: this one may be moving buckets
            old = data.get(key)
            if old is not None:
                self._unschedule(key, old[1])
        if ttl is None:
            data[key] = (stored, None)
        else:
            expires_at = self._clock() + ttl
            data[key] = (stored, expires_at)
            self._schedule(key, expires_at)
        lru = self._lru
        if lru is not None:
            lru.move_to_end(key)
            if len(lru) > self._bound:
                self._reclaim()
                while len(lru) > self._bound:
                    evicted, entry = lru.popitem(last=False)
                    self._unschedule(evicted, entry[1])
        elif self._due and self._due[0] + BUCKET_SECONDS <= self._clock():
            self._reclaim()

    def _put_keeping_ttl(self, key: str, stored: Any, ttl: float | None) -> None:
        """:meth:`_put`, but a live key keeps its expiry (and its place in the expiry index)."""
        if self._live(key) is MISSING:
            self._put(key, stored, ttl)
            return
        self._data[key] = (stored, self._data[key][1])
        if self._lru is not None:
            self._lru.move_to_end(key)

    def _schedule(self, key: str, expires_at: float) -> None:
        bucket_id = expires_at // BUCKET_SECONDS
        bucket = self._buckets.get(bucket_id)
        if bucket is None:
            bucket = self._buckets[bucket_id] = {}
            heapq.heappush(self._due, bucket_id)
        bucket[key] = None

    def _unschedule(self, key: str, expires_at: float | None) -> None:
        if expires_at is None:
            return
        bucket = self._buckets.get(expires_at // BUCKET_SECONDS)
        if bucket is not None:
            bucket.pop(key, None)  # an emptied bucket leaves with the next reclaim

    def _reclaim(self) -> None:
        """Drop up to :data:`RECLAIM_BATCH` expired entries, oldest bucket first.

        Bounded so that no call pays for a mass expiry at once (a million keys
        expiring together would otherwise stall the event loop for seconds):
        every write reclaims one batch, so reclaiming keeps ahead of writing.
        Only buckets wholly in the past are taken, so every key of one has
        expired, unless it was rewritten or deleted since (then it is skipped).
        """
        due, buckets, data = self._due, self._buckets, self._data
        horizon = self._clock() - BUCKET_SECONDS
        work = RECLAIM_BATCH
        while due and due[0] <= horizon:
            bucket_id = due[0]
            bucket = buckets[bucket_id]
            while bucket:
                if work == 0:
                    return
                work -= 1
                key, _ = bucket.popitem()
                entry = data.get(key)
                if entry is not None and entry[1] is not None:
                    if entry[1] // BUCKET_SECONDS == bucket_id:
                        del data[key]
            del buckets[bucket_id]
            heapq.heappop(due)

    # -- primitives -----------------------------------------------------------------

    def _lookup(self, key: Any) -> Any:
        """Stored value of *key* if live, else MISSING; marks it recently used.

        Only validated keys are ever stored, so a hit proves *key* valid and
        only a miss pays for :func:`check_key` (which raises on a bad key). A
        ``str`` subclass is looked up as the plain string it holds, as it is
        stored, whatever its own ``__eq__`` and ``__hash__`` say.
        """
        if type(key) is not str:
            key = check_key(key)
        try:
            entry = self._data.get(key)
        except TypeError:  # unhashable: certainly not a valid key
            entry = None
        if entry is None:
            check_key(key)
            return MISSING
        stored, expires_at = entry
        if expires_at is not None and expires_at <= self._clock():
            del self._data[key]
            return MISSING
        if self._lru is not None:
            self._lru.move_to_end(key)
        return stored

    async def _get(self, key: str) -> Any:
        return self._lookup(key)

    async def _get_many(self, keys: list[str]) -> list[Any]:
        return [self._lookup(key) for key in keys]

    async def _set(self, key: str, stored: Any, ttl: float | None) -> None:
        self._put(key, stored, ttl)

    async def _set_many(self, items: list[tuple[str, Any]], ttl: float | None) -> None:
        for key, stored in items:
            self._put(key, stored, ttl)

    async def _delete(self, key: str) -> bool:
        if self._live(key) is MISSING:
            return False
        self._unschedule(key, self._data.pop(key)[1])
        return True

    async def _add(self, key: str, stored: Any, ttl: float | None) -> bool:
        if self._live(key) is not MISSING:
            return False
        self._put(key, stored, ttl)
        return True

    async def _update(self, key: str, transform: Callable[[Any], Any], ttl: float | None) -> None:
        # No await between read and write: atomic on the event loop.
        self._put(key, transform(self._live(key)), ttl)

    async def _ttl(self, key: str) -> float | None:
        if self._live(key) is MISSING:
            return None
        expires_at = self._data[key][1]
        return None if expires_at is None else max(expires_at - self._clock(), 0.0)

    async def _expire(self, key: str, ttl: float) -> bool:
        stored = self._live(key)
        if stored is MISSING:
            return False
        self._unschedule(key, self._data[key][1])
        expires_at = self._clock() + ttl
        self._data[key] = (stored, expires_at)
        self._schedule(key, expires_at)
        return True

    # No await between reading and writing in these: each is atomic on the event loop.

    async def _set_keep_ttl(self, key: str, stored: Any, ttl: float | None) -> None:
        self._put_keeping_ttl(key, stored, ttl)

    async def _update_keep_ttl(
        self, key: str, transform: Callable[[Any], Any], ttl: float | None
    ) -> None:
        self._put_keeping_ttl(key, transform(self._live(key)), ttl)

    async def _persist(self, key: str) -> bool:
        stored = self._live(key)
        if stored is MISSING:
            return False
        self._unschedule(key, self._data[key][1])
        self._data[key] = (stored, None)
        return True

    async def _release_lock(self, key: str, token: Any, ttl: float) -> bool:
        stored = self._live(key)
        if stored is MISSING or stored != token:
            return False
        self._unschedule(key, self._data.pop(key)[1])
        return True

    async def _entries(self, prefix: str) -> AsyncGenerator[tuple[str, Any], None]:
        # A snapshot of the keys lets other tasks write between our yields.
        keys = [key for key in self._data if key.startswith(prefix)]
        for key in keys:
            stored = self._live(key)
            if stored is not MISSING:
                yield key, stored

    async def _clear(self) -> None:
        self._data.clear()
        self._buckets.clear()
        self._due.clear()

    async def _aclose(self) -> None:
        await self._clear()
