"""A LangGraph checkpointer on any :class:`~kvstore.KVStore` (extra ``[langgraph]``).

:class:`KVCheckpointSaver` implements LangGraph's ``BaseCheckpointSaver``,
async and sync, with the five base capabilities (put, put_writes, get_tuple,
list, delete_thread) and the three extended ones (delete_for_runs,
copy_thread, prune), on memory, SQLite, Redis and Redis Cluster alike:

>>> from kvstore import open_store
>>> saver = KVCheckpointSaver(open_store("sqlite:///threads.db"), ttl=7 * 86400)
>>> graph = builder.compile(checkpointer=saver)              # doctest: +SKIP
>>> await graph.ainvoke(inputs, {"configurable": {"thread_id": "t1"}})  # doctest: +SKIP

Key layout (under ``namespace``, default ``langgraph``; thread ids, namespaces,
channels and run ids are %-quoted, so ``/`` never appears inside a part):

==============================================  ===========================================
``{ns}:t/{thread}``                             the thread's index: per checkpoint_ns its
                                                newest ids (sorted; ids sort by time) and
                                                its pages ``[first id, last id, page]``
``{ns}:x/{thread}/{checkpoint_ns}/{page}``      one page of older ids (sorted)
``{ns}:c/{thread}/{checkpoint_ns}/{id}``        one checkpoint: serialized checkpoint and
                                                metadata, parent id, channel versions
``{ns}:w/{thread}/{checkpoint_ns}/{id}``        its pending writes
``{ns}:b/{thread}/{checkpoint_ns}/{ch}/{ver}``  one channel value at one version
``{ns}:r/{run_id}``                             ``[[thread, checkpoint_ns, id], …]`` of a run
==============================================  ===========================================

Values are serialized with LangGraph's serializer protocol (``dumps_typed`` /
``loads_typed``; by default a ``JsonPlusSerializer`` with ``pickle_fallback``
off) and stored as ``[type, base64]`` pairs, JSON the store accepts. The
indexes are changed with the store's atomic ``update``, so concurrent writers
(tasks, processes, replicas) never lose one another's checkpoints. See
``docs/integrations.md``.
"""

from __future__ import annotations

import base64
import builtins
import heapq
import random
import re
import secrets
from bisect import bisect_left
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Iterator, Sequence
from contextlib import aclosing
from functools import partial
from typing import Any, Final, Self
from urllib.parse import quote, unquote

import anyio
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    PendingWrite,
    get_checkpoint_id,
    get_checkpoint_metadata,
    writes_sort_key,
)
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from ..codec import check_ttl
from ..options import check_int
from ..protocol import KVStore
from ..service import open_store
from .portal import PortalLifecycle, StorePortal

__all__ = ["KVCheckpointSaver"]

DEFAULT_NAMESPACE: Final = "langgraph"
DEFAULT_PAGE_SIZE: Final = 128
_CHUNK: Final = 256  # keys per get_many / delete_many
_EMPTY: Final = "empty"  # the type of a blob for a channel that has no value at that version

_UNRESERVED: Final = re.compile(r"[A-Za-z0-9_.~-]*")

_Typed = list[str]  # [type, base64 bytes]
_Location = tuple[str, str, str]  # (thread_id, checkpoint_ns, checkpoint_id)


class KVCheckpointSaver(PortalLifecycle, BaseCheckpointSaver[str]):
    """LangGraph checkpoints, pending writes and channel values in a kvstore.

    Args:
        store: any :class:`~kvstore.KVStore` (a backend, a named store of a
            service, a :class:`~kvstore.MetricsStore`). Not closed by the saver
            unless *owns_store*.
        serde: LangGraph serializer (``dumps_typed``/``loads_typed``); default
            ``JsonPlusSerializer(pickle_fallback=False)``: nothing read back is
            ever unpickled.
        ttl: seconds a thread is kept after its last checkpoint (None: the
            store's default TTL, usually none). Each ``put`` renews the thread's
            index and everything its newest checkpoint needs; older checkpoints
            fade out *ttl* seconds after they were written.
        namespace: prefix of every key (``"{namespace}:…"``), so one store can
            hold other data too; ``""`` for none.
        owns_store: close *store* in :meth:`aclose` / :meth:`close`.
        index_page_size: ids per page of a namespace's checkpoint index (see
            ``docs/integrations.md``); the thread record keeps at most twice
            that many, so a put rewrites a bounded record.

    The async methods run on the caller's event loop; the sync ones (``put``,
    ``get_tuple``, ``list``, …) on a private loop thread the saver starts on
    first use and stops in :meth:`close` (or ``with saver:``). Use one saver
    either way, not both: a store's connections belong to the loop that made them.
    """

    def __init__(
        self,
        store: KVStore,
        *,
        serde: SerializerProtocol | None = None,
        ttl: float | None = None,
        namespace: str = DEFAULT_NAMESPACE,
        owns_store: bool = False,
        index_page_size: int = DEFAULT_PAGE_SIZE,
    ) -> None:
        if not isinstance(store, KVStore):
            raise TypeError(f"KVCheckpointSaver needs a KVStore, not {type(store).__name__}")
        if not isinstance(namespace, str):
            raise TypeError(f"namespace must be a str, not {type(namespace).__name__}")
        super().__init__(serde=serde or JsonPlusSerializer(pickle_fallback=False))
        self.store = store
        self.ttl = None if ttl is None else check_ttl(ttl)
        self.namespace = namespace
        self._prefix = f"{namespace}:" if namespace else ""
        self._owns_store = bool(owns_store)
        # With any expiry, a put renews what its checkpoint needs (see ttl above).
        self._renew = self.ttl is not None or getattr(store, "default_ttl", None) is not None
        self._page_size = check_int("index_page_size", index_page_size, minimum=1)
        # A memory store answers without waiting: its writes gain nothing from
        # being in flight together, and an anyio task group costs ~0.1 ms.
        self._concurrent = _backend(store) != "memory"
        self._portal = StorePortal()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """A saver on ``open_store(url)`` that owns (and closes) the store.

        *options* go to the saver (``ttl``, ``serde``, ``namespace``).

        >>> saver = KVCheckpointSaver.from_url("sqlite:///threads.db")  # doctest: +SKIP
        """
        return cls(open_store(url), owns_store=True, **options)

    # -- lifecycle: aclose, close, async with and with come from PortalLifecycle ---

    # -- keys and encoding ----------------------------------------------------------

    def _thread_key(self, thread_id: str) -> str:
        return f"{self._prefix}t/{_part(thread_id)}"

    def _checkpoint_key(self, where: _Location) -> str:
        return f"{self._prefix}c/{_parts(where)}"

    def _writes_key(self, where: _Location) -> str:
        return f"{self._prefix}w/{_parts(where)}"

    def _blob_key(self, thread_id: str, ns: str, channel: str, version: object) -> str:
        return f"{self._prefix}b/{_part(thread_id)}/{_part(ns)}/{_part(channel)}/{version}"

    def _page_key(self, thread_id: str, ns: str, page: str) -> str:
        return f"{self._prefix}x/{_part(thread_id)}/{_part(ns)}/{page}"

    def _run_key(self, run_id: str) -> str:
        return f"{self._prefix}r/{_part(run_id)}"

    def _dump(self, obj: Any) -> _Typed:
        type_, data = self.serde.dumps_typed(obj)
        return [type_, base64.b64encode(data).decode("ascii")]

    def _load(self, typed: _Typed) -> Any:
        return self.serde.loads_typed((typed[0], base64.b64decode(typed[1])))

    # -- async API ------------------------------------------------------------------------

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store *checkpoint* (and the channel values of *new_versions*) on the thread of *config*.

        Returns the config that names the stored checkpoint.
        """
        configurable = config["configurable"]
        thread_id = str(configurable["thread_id"])
        ns = str(configurable.get("checkpoint_ns") or "")
        checkpoint_id = checkpoint["id"]
        where = (thread_id, ns, checkpoint_id)
        values = checkpoint["channel_values"]
        saved = {key: value for key, value in checkpoint.items() if key != "channel_values"}
        full_metadata = get_checkpoint_metadata(config, metadata)
        run_id = full_metadata.get("run_id")
        versions = dict(checkpoint["channel_versions"])

        items: dict[str, Any] = {}
        for channel, version in new_versions.items():
            blob = self._dump(values[channel]) if channel in values else [_EMPTY, ""]
            items[self._blob_key(thread_id, ns, channel, version)] = blob
        stale: builtins.list[str] = []  # blobs the checkpoint needs whose TTL must be renewed
        if self._renew:
            for channel, version in versions.items():
                key = self._blob_key(thread_id, ns, channel, version)
                if key in items:
                    continue
                if channel in values:
                    items[key] = self._dump(values[channel])
                else:
                    stale.append(key)
        items[self._checkpoint_key(where)] = {
            "checkpoint": self._dump(saved),
            "metadata": self._dump(full_metadata),
            "parent": configurable.get("checkpoint_id"),
            "versions": versions,
            "blobs": [[channel, str(version)] for channel, version in new_versions.items()],
            "run": run_id if isinstance(run_id, str) else None,
        }
        if not self._concurrent:  # in-process: a task group would cost more than the writes
            await self.store.set_many(items, ttl=self.ttl)
            await self._index(thread_id, ns, [checkpoint_id])
            if isinstance(run_id, str):
                await self._index_run(run_id, [where])
            for key in stale:
                await self._renew_key(key)
            return _config(where)
        # The records and the indexes are independent keys: written concurrently
        # (one round trip on Redis, one group commit on SQLite). A reader that sees
        # an id before its record skips it, as it skips a record gone by TTL.
        async with anyio.create_task_group() as group:
            group.start_soon(partial(self.store.set_many, items, ttl=self.ttl))
            group.start_soon(self._index, thread_id, ns, [checkpoint_id])
            if isinstance(run_id, str):
                group.start_soon(self._index_run, run_id, [where])
            for key in stale:
                group.start_soon(self._renew_key, key)
        return _config(where)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store the pending *writes* of task *task_id* on the checkpoint of *config*.

        Idempotent per ``(task_id, index)``: a retried task does not duplicate
        its writes; the special channels (errors, interrupts) are replaced.
        """
        configurable = config["configurable"]
        where = (
            str(configurable["thread_id"]),
            str(configurable.get("checkpoint_ns") or ""),
            str(configurable["checkpoint_id"]),
        )
        new: dict[str, builtins.list[Any]] = {}
        for index, (channel, value) in enumerate(writes):
            idx = WRITES_IDX_MAP.get(channel, index)
            new[f"{task_id}/{idx}"] = [task_id, channel, self._dump(value), task_path, idx]

        def merge(current: dict[str, Any]) -> dict[str, Any]:
            merged = dict(current)
            for slot, write in new.items():
                if write[4] >= 0 and slot in merged:
                    continue  # the first write of a regular slot wins
                merged[slot] = write
            return merged

        if new:
            await self.store.update(self._writes_key(where), merge, default={}, ttl=self.ttl)

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint of *config*: the one its ``checkpoint_id`` names, else the newest."""
        configurable = config["configurable"]
        thread_id = str(configurable["thread_id"])
        ns = str(configurable.get("checkpoint_ns") or "")
        checkpoint_id = get_checkpoint_id(config)
        if checkpoint_id:
            named = await self._load_tuples(thread_id, ns, [checkpoint_id])
            return named[0] if named else None
        record = await self.store.get(self._thread_key(thread_id))
        entry = _entry(record, ns)
        # The newest first; under a TTL older ones may be gone before the index is.
        async with aclosing(self._newest_first(thread_id, ns, entry)) as ids:
            size = 1
            while batch := await _take(ids, size):
                for newest in await self._load_tuples(thread_id, ns, batch, limit=1):
                    return newest
                size = min(size * 8, _CHUNK)
        return None

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """Yield checkpoints newest first, per thread and namespace.

        *config* picks the thread (None: every thread), its ``checkpoint_ns``
        (absent: every namespace) and its ``checkpoint_id`` (that one only);
        *filter* keeps those whose metadata has every given key and value;
        *before* keeps ids older than its ``checkpoint_id``; *limit* stops after
        that many. Only the thread's index and the checkpoints yielded (and, with
        a *filter*, those examined) are read.
        """
        if limit is not None and limit <= 0:
            return
        remaining = limit
        before_id = get_checkpoint_id(before) if before else None
        only_id = get_checkpoint_id(config) if config else None
        wanted_ns = config["configurable"].get("checkpoint_ns") if config else None
        async with aclosing(self._threads(config)) as threads:
            async for thread_id, record in threads:
                for ns, entry in sorted(record.get("ns", {}).items()):
                    if wanted_ns is not None and ns != wanted_ns:
                        continue
                    if only_id is not None:
                        # A checkpoint is indexed once its record is stored: read it.
                        entry = {"ids": [only_id] if not before_id or only_id < before_id else []}
                    async with aclosing(self._newest_first(thread_id, ns, entry, before_id)) as ids:
                        # Read no more than the page needs: with a filter, batches grow
                        # from 16 as checkpoints fail to match.
                        grow = 16
                        while True:
                            if filter:
                                size, grow = grow, min(grow * 4, _CHUNK)
                            else:
                                size = _CHUNK if remaining is None else min(remaining, _CHUNK)
                            if not (batch := await _take(ids, size)):
                                break
                            for found in await self._load_tuples(
                                thread_id, ns, batch, filter=filter, limit=remaining
                            ):
                                yield found
                                if remaining is not None:
                                    remaining -= 1
                                    if remaining == 0:
                                        return

    async def adelete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint, write and channel value of *thread_id*."""
        thread_id = str(thread_id)
        record = await self.store.get(self._thread_key(thread_id))
        if not record:
            return
        for ns, entry in record.get("ns", {}).items():
            ids = await self._all_ids(thread_id, ns, entry)
            await self._drop(thread_id, ns, ids, everything=True)
            await self._delete([self._page_key(thread_id, ns, page[2]) for page in _pages(entry)])
        await self.store.delete(self._thread_key(thread_id))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints (and their writes) that the runs *run_ids* made.

        Channel values still needed by checkpoints of other runs stay.
        """
        for run_id in dict.fromkeys(str(run) for run in run_ids):
            key = self._run_key(run_id)
            by_place: dict[tuple[str, str], builtins.list[str]] = {}
            for thread_id, ns, checkpoint_id in await self.store.get(key, []):
                by_place.setdefault((thread_id, ns), []).append(checkpoint_id)
            for (thread_id, ns), ids in by_place.items():
                await self._drop(thread_id, ns, ids)
            await self.store.delete(key)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint, write and channel value of one thread to another.

        Ids, order, metadata and namespaces are kept; checkpoints the target
        already has with the same ids are replaced.
        """
        source, target = str(source_thread_id), str(target_thread_id)
        record = await self.store.get(self._thread_key(source))
        if not record:
            return
        for ns, entry in record.get("ns", {}).items():
            ids = await self._all_ids(source, ns, entry)
            for start in range(0, len(ids), _CHUNK):
                await self._copy(source, target, ns, ids[start : start + _CHUNK])

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Prune threads: ``"keep_latest"`` keeps the newest checkpoint of each
        namespace (with its writes and values), ``"delete"`` removes the threads.

        Raises:
            ValueError: an unknown *strategy*.
        """
        if strategy not in ("keep_latest", "delete"):
            raise ValueError(f"unknown prune strategy {strategy!r}; use 'keep_latest' or 'delete'")
        for thread_id in thread_ids:
            if strategy == "delete":
                await self.adelete_thread(thread_id)
                continue
            record = await self.store.get(self._thread_key(str(thread_id)))
            for ns, entry in (record or {}).get("ns", {}).items():
                ids = await self._all_ids(str(thread_id), ns, entry)
                if len(ids) > 1:
                    await self._drop(str(thread_id), ns, ids[:-1])

    def get_next_version(self, current: str | None, channel: None) -> str:
        """The next channel version: a counter plus a random tail (as ``InMemorySaver``).

        The tail keeps versions unique when a thread is forked from an old
        checkpoint, so two branches never share a channel value's key.
        """
        if current is None:
            number = 0
        elif isinstance(current, int):
            number = current
        else:
            number = int(str(current).split(".")[0])
        return f"{number + 1:032}.{random.random():016}"

    # -- sync API: the async methods on the saver's loop thread -------------------------

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """:meth:`aput`, from a thread without a running event loop."""
        return self._portal.call(self.aput, config, checkpoint, metadata, new_versions)

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """:meth:`aput_writes`, from a thread without a running event loop."""
        self._portal.call(self.aput_writes, config, writes, task_id, task_path)

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """:meth:`aget_tuple`, from a thread without a running event loop."""
        return self._portal.call(self.aget_tuple, config)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """:meth:`alist`, from a thread without a running event loop."""
        return self._portal.iterate(
            lambda: self.alist(config, filter=filter, before=before, limit=limit)
        )

    def delete_thread(self, thread_id: str) -> None:
        """:meth:`adelete_thread`, from a thread without a running event loop."""
        self._portal.call(self.adelete_thread, thread_id)

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """:meth:`adelete_for_runs`, from a thread without a running event loop."""
        self._portal.call(self.adelete_for_runs, run_ids)

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """:meth:`acopy_thread`, from a thread without a running event loop."""
        self._portal.call(self.acopy_thread, source_thread_id, target_thread_id)

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """:meth:`aprune`, from a thread without a running event loop."""

        async def prune() -> None:
            await self.aprune(thread_ids, strategy=strategy)

        self._portal.call(prune)

    # -- internals ------------------------------------------------------------------------

    async def _index(self, thread_id: str, ns: str, ids: Iterable[str]) -> None:
        """Add *ids* to the thread's index of namespace *ns*, atomically.

        The newest ids sit in the thread record (``ids``, sorted); when they
        pass twice the page size, the oldest move to page keys of their own
        (``pages``: ``[first id, last id, page]``), so a put rewrites a record
        of bounded size however long the thread grows.
        """
        new = builtins.list(ids)
        head: builtins.list[str] = []

        def insert(record: dict[str, Any]) -> dict[str, Any]:
            nonlocal head
            namespaces = dict(record.get("ns", {}))
            entry = dict(namespaces.get(ns, {}))
            head = builtins.list(entry.get("ids", []))
            if len(new) == 1 and (not head or new[0] > head[-1]):
                head.append(new[0])  # the usual put: ids grow with time
            else:
                head = sorted(set(head).union(new))
            namespaces[ns] = {**entry, "ids": head}
            return {**record, "ns": namespaces}

        await self.store.update(self._thread_key(thread_id), insert, default={}, ttl=self.ttl)
        size = self._page_size
        if len(head) > 2 * size:
            for start in range(0, len(head) - size, size):
                await self._spill(thread_id, ns, head[start : start + size])

    async def _spill(self, thread_id: str, ns: str, ids: builtins.list[str]) -> None:
        """Move *ids*, the oldest of the record's ids, to a page key of their own."""
        page = secrets.token_hex(8)
        key = self._page_key(thread_id, ns, page)
        await self.store.set(key, ids, ttl=self.ttl)

        def move(record: dict[str, Any] | None) -> dict[str, Any]:
            if record is None:
                raise _Unchanged  # the thread was deleted meanwhile
            namespaces = dict(record.get("ns", {}))
            entry = namespaces.get(ns, {})
            head = entry.get("ids", [])
            if not set(ids).issubset(head):
                raise _Unchanged  # another writer moved them first
            gone = set(ids)
            namespaces[ns] = {
                "ids": [i for i in head if i not in gone],
                "pages": [*_pages(entry), [ids[0], ids[-1], page]],
            }
            return {**record, "ns": namespaces}

        try:
            await self.store.update(self._thread_key(thread_id), move, keep_ttl=True)
        except _Unchanged:
            await self.store.delete(key)

    async def _all_ids(self, thread_id: str, ns: str, entry: dict[str, Any]) -> builtins.list[str]:
        """Every id of the index *entry* of namespace *ns*, sorted."""
        pages = await self._records([self._page_key(thread_id, ns, p[2]) for p in _pages(entry)])
        return sorted(set(entry.get("ids", [])).union(*pages.values()))

    async def _newest_first(
        self, thread_id: str, ns: str, entry: dict[str, Any], before: str | None = None
    ) -> AsyncGenerator[str, None]:
        """The ids of the index *entry* older than *before*, newest first.

        Pages are read only when the walk reaches them (a page whose last id is
        newer than every id in hand may hold the next one).
        """
        pool: builtins.list[str] = sorted(entry.get("ids", []))
        pending = sorted(_pages(entry), key=lambda page: str(page[1]), reverse=True)
        if before is not None:
            pool = pool[: bisect_left(pool, before)]
            pending = [page for page in pending if page[0] < before]
        last = None
        while pool or pending:
            while pending and (not pool or pending[0][1] >= pool[-1]):
                page = pending.pop(0)
                ids = sorted(await self.store.get(self._page_key(thread_id, ns, page[2]), []))
                if before is not None:
                    ids = ids[: bisect_left(ids, before)]
                pool = builtins.list(heapq.merge(pool, ids))
            if not pool:
                continue
            newest = pool.pop()
            if newest != last:  # an id put twice may sit in a page and in the record
                yield newest
            last = newest

    async def _unindex(self, thread_id: str, ns: str, ids: Iterable[str]) -> builtins.list[str]:
        """Remove *ids* from the index of namespace *ns*; return the ids left there."""
        gone = set(ids)
        key = self._thread_key(thread_id)
        entry = _entry(await self.store.get(key), ns)
        emptied: set[str] = set()
        for page in _pages(entry):
            page_key = self._page_key(thread_id, ns, page[2])
            kept = [i for i in await self.store.get(page_key, []) if i not in gone]
            if kept:
                await self.store.set(page_key, kept, ttl=self.ttl, keep_ttl=True)
            else:
                emptied.add(page[2])

        def remove(record: dict[str, Any] | None) -> dict[str, Any]:
            if record is None:
                raise _Unchanged  # the thread was deleted meanwhile
            namespaces = dict(record.get("ns", {}))
            current = namespaces.get(ns, {})
            head = [i for i in current.get("ids", []) if i not in gone]
            pages = [page for page in _pages(current) if page[2] not in emptied]
            if head or pages:
                namespaces[ns] = {"ids": head, "pages": pages}
            else:
                namespaces.pop(ns, None)
            return {**record, "ns": namespaces}

        if entry:
            try:
                record = await self.store.update(key, remove, keep_ttl=True)
            except _Unchanged:
                record = None
            await self._delete([self._page_key(thread_id, ns, page) for page in emptied])
            entry = _entry(record, ns)
        return await self._all_ids(thread_id, ns, entry) if entry else []

    async def _index_run(self, run_id: str, places: Iterable[_Location]) -> None:
        new = [list(place) for place in places]

        def append(current: builtins.list[builtins.list[str]]) -> builtins.list[builtins.list[str]]:
            return current + [place for place in new if place not in current]

        await self.store.update(self._run_key(run_id), append, default=[], ttl=self.ttl)

    async def _renew_key(self, key: str) -> None:
        if self.ttl is not None:
            await self.store.expire(key, self.ttl)

    async def _records(self, keys: Sequence[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for start in range(0, len(keys), _CHUNK):
            found.update(await self.store.get_many(keys[start : start + _CHUNK]))
        return found

    async def _delete(self, keys: Sequence[str]) -> None:
        for start in range(0, len(keys), _CHUNK):
            await self.store.delete_many(keys[start : start + _CHUNK])

    async def _load_tuples(
        self,
        thread_id: str,
        ns: str,
        ids: Sequence[str],
        *,
        filter: dict[str, Any] | None = None,
        limit: int | None = None,
    ) -> builtins.list[CheckpointTuple]:
        """The tuples of checkpoints *ids* (in that order) that exist and match *filter*."""
        places = [(thread_id, ns, checkpoint_id) for checkpoint_id in ids]
        keys = [self._checkpoint_key(where) for where in places]
        keys += [self._writes_key(where) for where in places]
        found = await self.store.get_many(keys)
        chosen: builtins.list[tuple[_Location, dict[str, Any], Any]] = []
        for where in places:
            record = found.get(self._checkpoint_key(where))
            if record is None:
                continue
            metadata = self._load(record["metadata"])
            if filter and not all(metadata.get(k) == v for k, v in filter.items()):
                continue
            chosen.append((where, record, metadata))
            if limit is not None and len(chosen) >= limit:
                break
        blob_keys = list(
            dict.fromkeys(
                self._blob_key(thread_id, ns, channel, version)
                for _, record, _ in chosen
                for channel, version in record["versions"].items()
            )
        )
        blobs = await self._records(blob_keys) if blob_keys else {}
        tuples = []
        for where, record, metadata in chosen:
            checkpoint = self._load(record["checkpoint"])
            values = {}
            for channel, version in record["versions"].items():
                blob = blobs.get(self._blob_key(thread_id, ns, channel, version))
                if blob is not None and blob[0] != _EMPTY:
                    values[channel] = self._load(blob)
            checkpoint["channel_values"] = values
            parent = record["parent"]
            tuples.append(
                CheckpointTuple(
                    config=_config(where),
                    checkpoint=checkpoint,
                    metadata=metadata,
                    parent_config=_config((thread_id, ns, parent)) if parent else None,
                    pending_writes=self._pending(found.get(self._writes_key(where))),
                )
            )
        return tuples

    def _pending(self, stored: dict[str, Any] | None) -> builtins.list[PendingWrite]:
        writes = sorted(
            (stored or {}).values(),
            key=lambda write: writes_sort_key(write[3], write[0], write[4]),
        )
        return [(task_id, channel, self._load(value)) for task_id, channel, value, _, _ in writes]

    async def _threads(
        self, config: RunnableConfig | None
    ) -> AsyncGenerator[tuple[str, dict[str, Any]], None]:
        """``(thread_id, thread record)`` of the thread of *config*, or of every thread."""
        if config is not None:
            thread_id = str(config["configurable"]["thread_id"])
            record = await self.store.get(self._thread_key(thread_id))
            if record:
                yield thread_id, record
            return
        prefix = f"{self._prefix}t/"
        async with aclosing(self.store.entries(prefix)) as rows:
            async for key, record in rows:
                yield unquote(key[len(prefix) :]), record

    async def _drop(
        self, thread_id: str, ns: str, ids: Sequence[str], *, everything: bool = False
    ) -> None:
        """Delete checkpoints *ids* of one namespace with their writes and the values
        they made that no checkpoint left there needs (all values with *everything*)."""
        left = [] if everything else await self._unindex(thread_id, ns, ids)
        places = [(thread_id, ns, checkpoint_id) for checkpoint_id in ids]
        dropped = await self._records([self._checkpoint_key(where) for where in places])
        needed: set[str] = set()
        for start in range(0, len(left), _CHUNK):
            batch = [self._checkpoint_key((thread_id, ns, i)) for i in left[start : start + _CHUNK]]
            for record in (await self._records(batch)).values():
                needed.update(
                    self._blob_key(thread_id, ns, channel, version)
                    for channel, version in record["versions"].items()
                )
        doomed = [self._checkpoint_key(where) for where in places]
        doomed += [self._writes_key(where) for where in places]
        runs: dict[str, builtins.list[builtins.list[str]]] = {}
        for record in dropped.values():
            doomed += [
                key
                for channel, version in record["blobs"]
                if (key := self._blob_key(thread_id, ns, channel, version)) not in needed
            ]
            if record.get("run"):
                runs.setdefault(record["run"], [])
        await self._delete(doomed)
        gone = {tuple(place) for place in places}
        for run_id in runs:
            await self._forget_run(run_id, gone)

    async def _forget_run(self, run_id: str, gone: set[tuple[str, ...]]) -> None:
        key = self._run_key(run_id)
        if await self.store.get(key) is None:
            return

        def remove(current: builtins.list[builtins.list[str]]) -> builtins.list[builtins.list[str]]:
            return [place for place in current if tuple(place) not in gone]

        if not await self.store.update(key, remove, default=[], keep_ttl=True):
            await self.store.delete(key)

    async def _copy(self, source: str, target: str, ns: str, ids: Sequence[str]) -> None:
        places = [(source, ns, checkpoint_id) for checkpoint_id in ids]
        found = await self._records(
            [self._checkpoint_key(where) for where in places]
            + [self._writes_key(where) for where in places]
        )
        items: dict[str, Any] = {}
        blob_keys: dict[str, str] = {}
        runs: dict[str, builtins.list[_Location]] = {}
        copied = []
        for _, _, checkpoint_id in places:
            record = found.get(self._checkpoint_key((source, ns, checkpoint_id)))
            if record is None:
                continue
            copied.append(checkpoint_id)
            items[self._checkpoint_key((target, ns, checkpoint_id))] = record
            writes = found.get(self._writes_key((source, ns, checkpoint_id)))
            if writes is not None:
                items[self._writes_key((target, ns, checkpoint_id))] = writes
            for channel, version in record["versions"].items():
                blob_keys[self._blob_key(source, ns, channel, version)] = self._blob_key(
                    target, ns, channel, version
                )
            if record.get("run"):
                runs.setdefault(record["run"], []).append((target, ns, checkpoint_id))
        blobs = await self._records(list(blob_keys))
        items.update({blob_keys[key]: blob for key, blob in blobs.items()})
        if not copied:
            return
        await self.store.set_many(items, ttl=self.ttl)
        await self._index(target, ns, copied)
        for run_id, new_places in runs.items():
            await self._index_run(run_id, new_places)


def _part(text: str) -> str:
    # quote() leaves these characters alone too: skip it for the usual ids.
    return text if _UNRESERVED.fullmatch(text) else quote(text, safe="")


def _parts(where: _Location) -> str:
    return "/".join(_part(part) for part in where)


def _backend(store: KVStore) -> str:
    """The backend label of *store*, through wrappers (``inner``) that have none."""
    while True:
        label = getattr(store, "backend", None)
        if isinstance(label, str) and label:
            return label
        inner = getattr(store, "inner", None)
        if inner is None:
            return ""
        store = inner


class _Unchanged(Exception):
    """Raised inside an update's function to store nothing (its premise no longer holds)."""


def _entry(record: dict[str, Any] | None, ns: str) -> dict[str, Any]:
    """The index entry (``{"ids": [...], "pages": [...]}``) of namespace *ns*; {} if none."""
    entry: dict[str, Any] = (record or {}).get("ns", {}).get(ns, {})
    return entry


def _pages(entry: dict[str, Any]) -> list[list[str]]:
    pages: list[list[str]] = entry.get("pages", [])
    return pages


async def _take(ids: AsyncIterator[str], count: int) -> list[str]:
    """The next *count* items of *ids* (fewer at its end)."""
    taken: list[str] = []
    async for item in ids:
        taken.append(item)
        if len(taken) >= count:
            break
    return taken


def _config(where: _Location) -> RunnableConfig:
    thread_id, ns, checkpoint_id = where
    return {
        "configurable": {
            "thread_id": thread_id,
            "checkpoint_ns": ns,
            "checkpoint_id": checkpoint_id,
        }
    }
