"""KVLangChainStore beyond the standard suites: TTL, namespaces, bytes, bad input, sync use."""

from __future__ import annotations

import threading
from collections.abc import Generator

import pytest

from kvstore import InvalidTTLError, MemoryStore, SerializationError
from kvstore.integrations.langchain import KVLangChainStore
from kvstore.testing import ManualClock


async def test_ttl_applies_to_every_mset() -> None:
    clock = ManualClock()
    store = KVLangChainStore(MemoryStore(clock=clock), ttl=10)
    await store.amset([("a", 1), ("b", b"\x00")])
    clock.advance_by(9)
    assert await store.amget(["a", "b"]) == [1, b"\x00"]
    clock.advance_by(2)
    assert await store.amget(["a", "b"]) == [None, None]


async def test_namespace_prefixes_keys_and_yield_keys_strips_it() -> None:
    inner = MemoryStore()
    await inner.set("unrelated", 1)
    docs = KVLangChainStore(inner, namespace="docs")
    raw = KVLangChainStore(inner, namespace="")
    await docs.amset([("doc:1", {"t": "x"}), ("doc:2", None), ("img:1", b"png")])
    assert sorted([key async for key in docs.ayield_keys()]) == ["doc:1", "doc:2", "img:1"]
    assert sorted([key async for key in docs.ayield_keys(prefix="doc:")]) == ["doc:1", "doc:2"]
    assert await inner.get("docs:img:1") == {"bytes": "cG5n"}
    assert await docs.amget(["doc:2", "doc:3"]) == [None, None]  # a stored None reads as None
    assert "unrelated" in [key async for key in raw.ayield_keys()]
    await docs.amdelete([])
    await docs.amset([])


async def test_bad_input_is_refused_and_stores_nothing() -> None:
    store = KVLangChainStore(MemoryStore())
    with pytest.raises(SerializationError):
        await store.amset([("ok", 1), ("bad", {1, 2})])
    assert await store.amget(["ok"]) == [None]
    with pytest.raises(TypeError, match="keys are str"):
        await store.amget([1])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="needs a KVStore"):
        KVLangChainStore(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="namespace"):
        KVLangChainStore(MemoryStore(), namespace=None)  # type: ignore[arg-type]
    with pytest.raises(InvalidTTLError):
        KVLangChainStore(MemoryStore(), ttl=-1)


def test_sync_keys_cross_in_batches_and_an_early_stop_is_clean() -> None:
    inner = MemoryStore()
    with KVLangChainStore(inner, owns_store=True) as store:
        store.mset([(f"k{i:04}", i) for i in range(1000)])
        assert len(list(store.yield_keys())) == 1000
        keys = store.yield_keys(prefix="k00")
        assert isinstance(keys, Generator)
        first = next(keys)
        keys.close()  # leaves early: the store's scan is closed on the portal's loop
        assert first.startswith("k00")
        assert sorted(store.yield_keys(prefix="k000")) == [f"k000{i}" for i in range(10)]
        threads_before = threading.active_count()
    assert inner.closed
    assert threading.active_count() < threads_before


def test_close_without_use_starts_nothing() -> None:
    store = KVLangChainStore(MemoryStore(), owns_store=True)
    store.close()
    store.close()


def test_an_iterator_left_open_after_close_does_not_touch_the_stopped_loop() -> None:
    store = KVLangChainStore(MemoryStore())
    store.mset([(f"k{i}", i) for i in range(300)])
    keys = store.yield_keys()
    assert isinstance(keys, Generator)
    next(keys)
    store.close()
    keys.close()  # the portal is gone: nothing to close on it, and no error
