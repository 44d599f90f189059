"""A LangChain key-value store on any :class:`~kvstore.KVStore` (extra ``[langchain]``).

:class:`KVLangChainStore` is a ``langchain_core.stores.BaseStore[str, Any]``:
``mget``/``mset``/``mdelete``/``yield_keys`` and their async forms, with an
optional TTL, on memory, SQLite, Redis and Redis Cluster alike. Values are any
JSON value the store takes, or ``bytes`` (so it also serves as a byte store,
e.g. under ``CacheBackedEmbeddings``):

>>> from kvstore import open_store
>>> docs = KVLangChainStore(open_store("redis://localhost:6379/0"), ttl=3600)
>>> await docs.amset([("doc:1", {"text": "hello"}), ("raw:1", b"\\x00\\x01")])  # doctest: +SKIP
>>> await docs.amget(["doc:1", "missing"])                                   # doctest: +SKIP
[{'text': 'hello'}, None]
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import aclosing
from typing import Any, Final

from langchain_core.stores import BaseStore

from ..codec import check_ttl
from ..protocol import KVStore
from .portal import PortalLifecycle, StorePortal

__all__ = ["KVLangChainStore"]

DEFAULT_NAMESPACE: Final = "langchain"


class KVLangChainStore(PortalLifecycle, BaseStore[str, Any]):
    """LangChain's ``BaseStore[str, Any]`` on a kvstore.

    Args:
        store: any :class:`~kvstore.KVStore`; not closed unless *owns_store*.
        ttl: seconds each key set by ``mset`` lives (None: the store's default
            TTL, usually none).
        namespace: prefix of every key (``"{namespace}:{key}"``), so the store
            can hold other data too; ``""`` for none. ``yield_keys`` lists only
            this namespace and yields keys without the prefix.
        owns_store: close *store* in :meth:`aclose` / :meth:`close`.

    Each value is stored as ``{"json": value}`` or, for ``bytes``,
    ``{"bytes": base64}``; a value the store's codec refuses raises
    :class:`~kvstore.SerializationError` and nothing of that ``mset`` is stored.
    The sync methods run on a private loop thread the store starts on first
    use (:class:`~kvstore.integrations.portal.StorePortal`) and stops in
    :meth:`close`; use one instance either sync or async.
    """

    def __init__(
        self,
        store: KVStore,
        *,
        ttl: float | None = None,
        namespace: str = DEFAULT_NAMESPACE,
        owns_store: bool = False,
    ) -> None:
        if not isinstance(store, KVStore):
            raise TypeError(f"KVLangChainStore needs a KVStore, not {type(store).__name__}")
        if not isinstance(namespace, str):
            raise TypeError(f"namespace must be a str, not {type(namespace).__name__}")
        self.store = store
        self.ttl = None if ttl is None else check_ttl(ttl)
        self.namespace = namespace
        self._prefix = f"{namespace}:" if namespace else ""
        self._owns_store = bool(owns_store)
        self._portal = StorePortal()

    # -- async API --------------------------------------------------------------------

    async def amget(self, keys: Sequence[str]) -> list[Any | None]:
        """The values of *keys*, in order; None for a missing key."""
        found = await self.store.get_many([self._key(key) for key in keys])
        return [_unwrap(found.get(self._key(key))) for key in keys]

    async def amset(self, key_value_pairs: Sequence[tuple[str, Any]]) -> None:
        """Store every ``(key, value)`` at once (one transaction where the backend allows)."""
        items = {self._key(key): _wrap(value) for key, value in key_value_pairs}
        if items:
            await self.store.set_many(items, ttl=self.ttl)

    async def amdelete(self, keys: Sequence[str]) -> None:
        """Delete *keys*; missing ones are ignored."""
        if keys:
            await self.store.delete_many([self._key(key) for key in keys])

    async def ayield_keys(self, *, prefix: str | None = None) -> AsyncIterator[str]:
        """Yield the keys of this namespace that start with *prefix* (order unspecified)."""
        start = self._prefix + (prefix or "")
        async with aclosing(self.store.entries(start)) as rows:
            async for key, _ in rows:
                yield key[len(self._prefix) :]

    # -- sync API: the async methods on the store's loop thread ------------------------------

    def mget(self, keys: Sequence[str]) -> list[Any | None]:
        """:meth:`amget`, from a thread without a running event loop."""
        return self._portal.call(self.amget, keys)

    def mset(self, key_value_pairs: Sequence[tuple[str, Any]]) -> None:
        """:meth:`amset`, from a thread without a running event loop."""
        self._portal.call(self.amset, key_value_pairs)

    def mdelete(self, keys: Sequence[str]) -> None:
        """:meth:`amdelete`, from a thread without a running event loop."""
        self._portal.call(self.amdelete, keys)

    def yield_keys(self, *, prefix: str | None = None) -> Iterator[str]:
        """:meth:`ayield_keys`, from a thread without a running event loop."""
        yield from self._portal.iterate(lambda: self.ayield_keys(prefix=prefix))

    # -- lifecycle: aclose, close, async with and with come from PortalLifecycle -------

    # -- keys ---------------------------------------------------------------------------

    def _key(self, key: str) -> str:
        if not isinstance(key, str):
            raise TypeError(f"keys are str, not {type(key).__name__}")
        return self._prefix + key


def _wrap(value: Any) -> dict[str, Any]:
    if isinstance(value, bytes | bytearray):
        return {"bytes": base64.b64encode(value).decode("ascii")}
    return {"json": value}


def _unwrap(stored: dict[str, Any] | None) -> Any:
    if stored is None:
        return None
    if "bytes" in stored:
        return base64.b64decode(stored["bytes"])
    return stored["json"]
