"""MemoryStore specifics beyond the shared contract: LRU bound, reclaiming, copies."""

from __future__ import annotations

import itertools

import pytest

from kvstore import MemoryStore, SerializationError, ValueTooLargeError, open_service, open_store
from kvstore.backends.memory import RECLAIM_BATCH
from kvstore.errors import ConfigError
from kvstore.testing import ManualClock

pytestmark = pytest.mark.anyio


async def test_lru_bound_evicts_least_recently_used() -> None:
    store = MemoryStore(max_entries=3)
    await store.set_many({"a": 1, "b": 2, "c": 3})
    assert await store.get("a") == 1  # "a" is now the most recently used
    await store.set("d", 4)
    assert len(store) == 3
    assert await store.get_many(["a", "b", "c", "d"]) == {"a": 1, "c": 3, "d": 4}


async def test_lru_prefers_reclaiming_expired_entries() -> None:
    clock = ManualClock()
    store = MemoryStore(max_entries=2, clock=clock)
    await store.set("short", 1, ttl=1)
    await store.set("keep", 2)
    clock.advance_by(2)
    await store.set("new", 3)
    assert await store.get_many(["keep", "new"]) == {"keep": 2, "new": 3}


async def test_expired_entries_are_reclaimed_without_reads() -> None:
    clock = ManualClock()
    store = MemoryStore(clock=clock)
    await store.set_many({f"k{i}": i for i in range(100)}, ttl=5)
    await store.set("persistent", 1)
    assert len(store) == 101
    clock.advance_by(10)
    await store.set("trigger", 1)  # writes reclaim what has expired
    assert len(store) == 2


async def test_a_mass_expiry_is_reclaimed_in_bounded_batches() -> None:
    clock = ManualClock()
    store = MemoryStore(clock=clock)
    count = 5 * RECLAIM_BATCH + 7
    await store.set_many({f"k{i}": i for i in range(count)}, ttl=5)
    clock.advance_by(10)
    # Every expired key is invisible at once (a read drops what it touches)...
    assert await store.get("k0") is None
    assert await store.ttl(f"k{count - 1}") is None
    # ...and each write reclaims at most one batch, until none is left.
    sizes = [len(store)]
    assert sizes[0] == count - 2
    while len(store) > 1:
        await store.set("trigger", 1)
        sizes.append(len(store))
    drops = [before - after for before, after in itertools.pairwise(sizes)]
    assert max(drops) <= RECLAIM_BATCH
    assert len(drops) >= count // RECLAIM_BATCH


def _indexed(store: MemoryStore) -> int:
    return sum(len(bucket) for bucket in store._buckets.values())


async def test_rewrites_move_a_key_between_expiry_buckets() -> None:
    clock = ManualClock()
    store = MemoryStore(clock=clock)
    for i in range(10_000):
        await store.set("same", i, ttl=3600)
        clock.advance_by(0.5)  # a new bucket every other rewrite
    assert _indexed(store) == 1
    await store.expire("same", 10)
    await store.persist("same")
    await store.set("other", 1, ttl=60)
    await store.delete("other")
    assert _indexed(store) == 0


async def test_keys_rewritten_before_their_bucket_is_due_are_kept() -> None:
    clock = ManualClock()
    store = MemoryStore(clock=clock)
    await store.set_many({f"k{i}": i for i in range(50)}, ttl=5)
    clock.advance_by(10)
    assert await store.get("k0") is None  # expired, dropped by the read, still indexed
    await store.set("k0", "again", ttl=100)  # same key, a later bucket
    await store.set("trigger", 1)
    assert await store.get("k0") == "again"
    assert len(store) == 2
    clock.advance_by(200)
    await store.set("trigger", 2)
    assert len(store) == 1


async def test_scalars_and_containers_are_independent_copies() -> None:
    store = MemoryStore()
    nested = {"a": [1]}
    await store.set("k", nested)
    nested["a"].append(2)
    assert await store.get("k") == {"a": [1]}
    await store.set("s", "text")
    assert await store.get("s") == "text"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 2**64, -(2**63) - 1])
async def test_scalar_fast_path_still_validates(value: object) -> None:
    store = MemoryStore()
    with pytest.raises(SerializationError):
        await store.set("k", value)
    assert len(store) == 0


async def test_long_strings_are_size_checked() -> None:
    store = MemoryStore(max_value_bytes=100)
    await store.set("ok", "x" * 16)
    await store.set("escaped", "\x01" * 16)  # 16 chars that encode to 96 bytes + quotes
    with pytest.raises(ValueTooLargeError):
        await store.set("big", "x" * 99)
    with pytest.raises(ValueTooLargeError):
        await store.set("big", "\x01" * 17)


def test_constructor_rejects_bad_options() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        MemoryStore(max_entries=0)
    with pytest.raises(ValueError, match="max_value_bytes"):
        MemoryStore(max_value_bytes=0)
    with pytest.raises(ValueError, match="ttl"):
        MemoryStore(default_ttl=-1)
    # A wrong type is a TypeError, for every int option alike.
    with pytest.raises(TypeError, match="max_entries"):
        MemoryStore(max_entries="10")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="max_value_bytes"):
        MemoryStore(max_value_bytes=True)


async def test_url_options() -> None:
    store = open_store("memory://?max_entries=2&default_ttl=60")
    assert isinstance(store, MemoryStore)
    assert store.default_ttl == 60.0
    await store.set_many({"a": 1, "b": 2, "c": 3})
    assert len(store) == 2
    via_service = open_service("memory://?default_ttl=5")
    assert via_service.backend.default_ttl == 5.0
    assert open_store("memory://?default_ttl=5", default_ttl=7).default_ttl == 7.0
    with pytest.raises(ConfigError, match="max_entries"):
        open_store("memory://?max_entries=lots")
    with pytest.raises(ConfigError, match="unknown option"):
        open_store("memory://?colour=blue")
    # Values the constructor would refuse are refused as URL options, as ConfigError.
    with pytest.raises(ConfigError, match="max_entries"):
        open_store("memory://?max_entries=0")
    with pytest.raises(ConfigError, match="default_ttl"):
        open_store("memory://?default_ttl=0")


async def test_namespaced_overrides() -> None:
    root = MemoryStore(default_ttl=10)
    child = root.namespaced("cache", max_entries=5)
    assert child.default_ttl == 10
    await child.set_many({str(i): i for i in range(10)})
    assert len(child) == 5
    assert len(root) == 0
