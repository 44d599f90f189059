"""get/set/delete, TTLs, iteration and bulk calls."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from ...protocol import KVStore
from .backend import ContractBackend, bump, snapshot
from .values import JSON_VALUES


class CoreContract:
    """get/set/delete, TTLs, iteration and bulk calls."""

    # -- get / set / delete ---------------------------------------------------

    async def test_get_missing_returns_default(self, store: KVStore) -> None:
        assert await store.get("missing") is None
        assert await store.get("missing", "fallback") == "fallback"

    @pytest.mark.parametrize("value", JSON_VALUES, ids=repr)
    async def test_set_get_roundtrip(self, store: KVStore, value: Any) -> None:
        await store.set("k", value)
        assert await store.get("k", "absent") == value

    async def test_tuple_comes_back_as_list(self, store: KVStore) -> None:
        await store.set("k", (1, 2))
        assert await store.get("k") == [1, 2]

    async def test_stored_none_is_a_value(self, store: KVStore) -> None:
        await store.set("k", None)
        assert await store.get("k", "absent") is None
        assert await store.get_many(["k"]) == {"k": None}
        assert await store.delete("k") is True

    async def test_set_overwrites(self, store: KVStore) -> None:
        await store.set("k", 1)
        await store.set("k", {"v": 2})
        assert await store.get("k") == {"v": 2}

    async def test_no_shared_mutable_objects(self, store: KVStore) -> None:
        value = {"list": [1, 2]}
        await store.set("k", value)
        value["list"].append(3)
        fetched = await store.get("k")
        assert fetched == {"list": [1, 2]}
        fetched["list"].append(99)
        assert await store.get("k") == {"list": [1, 2]}
        async for _, item in store.entries():
            item["list"].clear()
        assert (await store.get_many(["k"]))["k"] == {"list": [1, 2]}

    async def test_delete(self, store: KVStore) -> None:
        await store.set("k", 1)
        assert await store.delete("k") is True
        assert await store.get("k") is None
        assert await store.delete("k") is False
        assert await store.delete("never") is False

    async def test_unicode_and_glob_keys_are_distinct(self, store: KVStore) -> None:
        keys = ["a*", "a?", "a[b]", "a[", "a]", "a\\", "ab", "ключ", "🔑", "k" * 1024, "a b"]
        for i, key in enumerate(keys):
            await store.set(key, i)
        for i, key in enumerate(keys):
            assert await store.get(key) == i
        assert {k async for k, _ in store.entries("a*")} == {"a*"}
        assert {k async for k, _ in store.entries("a[")} == {"a[", "a[b]"}
        assert {k async for k, _ in store.entries("a?")} == {"a?"}
        assert {k async for k, _ in store.entries("a\\")} == {"a\\"}

    # -- TTL ------------------------------------------------------------------------

    async def test_ttl_expiry(self, store: KVStore, kv_backend: ContractBackend) -> None:
        unit = kv_backend.ttl_unit
        await store.set("short", "s", ttl=unit)
        await store.set("long", "l", ttl=unit * 4)
        await store.set("forever", "f")
        await kv_backend.advance(unit * 2)
        assert await store.get("short") is None
        assert await store.get("long") == "l"
        assert await store.get("forever") == "f"
        assert await store.get_many(["short", "long"]) == {"long": "l"}
        assert {k async for k, _ in store.entries()} == {"long", "forever"}
        assert await store.delete("short") is False
        assert await store.ttl("short") is None
        assert await store.expire("short", unit) is False
        assert await store.delete_many(["short", "long"]) == 1

    async def test_sub_second_ttl_is_accepted(self, store: KVStore) -> None:
        await store.set("k", 1, ttl=0.5)
        remaining = await store.ttl("k")
        assert remaining is not None and 0 < remaining <= 0.5

    async def test_ttl_reports_remaining_seconds(
        self, store: KVStore, kv_backend: ContractBackend
    ) -> None:
        unit = kv_backend.ttl_unit
        assert await store.ttl("missing") is None
        await store.set("persistent", 1)
        assert await store.ttl("persistent") is None
        await store.set("k", 1, ttl=unit * 10)
        remaining = await store.ttl("k")
        assert remaining is not None and unit * 9 <= remaining <= unit * 10

    async def test_set_replaces_ttl(self, store: KVStore, kv_backend: ContractBackend) -> None:
        unit = kv_backend.ttl_unit
        await store.set("k", 1, ttl=unit)
        await store.set("k", 2)
        assert await store.ttl("k") is None
        await kv_backend.advance(unit * 2)
        assert await store.get("k") == 2

    async def test_expire(self, store: KVStore, kv_backend: ContractBackend) -> None:
        unit = kv_backend.ttl_unit
        await store.set("k", 1)
        assert await store.expire("k", unit) is True
        remaining = await store.ttl("k")
        assert remaining is not None and 0 < remaining <= unit
        assert await store.expire("missing", unit) is False
        await kv_backend.advance(unit * 2)
        assert await store.get("k") is None

    async def test_expire_extends(self, store: KVStore, kv_backend: ContractBackend) -> None:
        unit = kv_backend.ttl_unit
        await store.set("k", 1, ttl=unit)
        assert await store.expire("k", unit * 10) is True
        await kv_backend.advance(unit * 2)
        assert await store.get("k") == 1

    async def test_default_ttl(self, kv_backend: ContractBackend) -> None:
        unit = kv_backend.ttl_unit
        service = kv_backend.open_service(default_ttl=unit)
        try:
            store = service.get_store("contract_ttl")
            await store.clear()
            await store.set("set", 1)
            await store.set_many({"many": 2})
            assert await store.add("add", 3) is True
            await store.update("update", bump, default=3)
            await store.set("explicit", 5, ttl=unit * 10)
            for key in ("set", "many", "add", "update"):
                remaining = await store.ttl(key)
                assert remaining is not None and 0 < remaining <= unit, key
            await kv_backend.advance(unit * 2)
            assert await snapshot(store) == {"explicit": 5}
        finally:
            await service.aclose()

    # -- iteration ------------------------------------------------------------

    async def test_entries_all_and_prefix(self, store: KVStore) -> None:
        await store.set_many({"user:1": 1, "user:2": 2, "users": 3, "other": 4})
        assert await snapshot(store) == {"user:1": 1, "user:2": 2, "users": 3, "other": 4}
        assert {k: v async for k, v in store.entries("user:")} == {"user:1": 1, "user:2": 2}
        assert {k: v async for k, v in store.entries("user")} == {
            "user:1": 1,
            "user:2": 2,
            "users": 3,
        }
        assert [kv async for kv in store.entries("nomatch")] == []

    async def test_entries_of_empty_store(self, store: KVStore) -> None:
        assert [kv async for kv in store.entries()] == []

    async def test_entries_is_an_async_generator(self, store: KVStore) -> None:
        await store.set("k", 1)
        iterator = store.entries()
        assert isinstance(iterator, AsyncGenerator)
        assert await iterator.__anext__() == ("k", 1)
        await iterator.aclose()

    async def test_entries_yields_each_key_once(self, store: KVStore) -> None:
        await store.set_many({f"key{i:04d}": i for i in range(1200)})
        seen = [k async for k, _ in store.entries()]
        assert len(seen) == 1200
        assert set(seen) == {f"key{i:04d}" for i in range(1200)}

    async def test_entries_while_other_tasks_write(self, store: KVStore) -> None:
        stable = {f"stable{i:04d}": i for i in range(300)}
        await store.set_many(stable)
        await store.set_many({f"doomed{i:04d}": i for i in range(300)})
        seen: list[str] = []

        async def writer() -> None:
            for i in range(300):
                await store.set(f"new{i:04d}", i)
                await store.delete(f"doomed{i:04d}")
                await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            tg.start_soon(writer)
            async for key, _ in store.entries():
                seen.append(key)
                await anyio.lowlevel.checkpoint()
        stable_seen = [k for k in seen if k.startswith("stable")]
        assert sorted(stable_seen) == sorted(stable)  # each stable key exactly once
        assert len(seen) == len(set(seen))
        assert await store.get_many([f"doomed{i:04d}" for i in range(300)]) == {}

    async def test_break_out_of_entries(self, store: KVStore) -> None:
        await store.set_many({f"k{i}": i for i in range(50)})
        async for _ in store.entries():
            break
        await store.set("after", 1)
        assert await store.get("after") == 1

    # -- bulk -----------------------------------------------------------------

    async def test_get_many(self, store: KVStore) -> None:
        await store.set_many({"a": 1, "b": None, "c": [3]})
        assert await store.get_many(["a", "b", "missing", "c", "a"]) == {
            "a": 1,
            "b": None,
            "c": [3],
        }
        assert await store.get_many([]) == {}
        assert await store.get_many(iter(["a"])) == {"a": 1}

    async def test_set_many_with_ttl(self, store: KVStore, kv_backend: ContractBackend) -> None:
        unit = kv_backend.ttl_unit
        await store.set_many({"a": 1, "b": 2}, ttl=unit)
        await store.set_many({})
        assert await store.get_many(["a", "b"]) == {"a": 1, "b": 2}
        await kv_backend.advance(unit * 2)
        assert await store.get_many(["a", "b"]) == {}

    async def test_delete_many(self, store: KVStore) -> None:
        await store.set_many({"a": 1, "b": 2, "c": 3})
        assert await store.delete_many(["a", "b", "missing", "a"]) == 2
        assert await store.delete_many([]) == 0
        assert await snapshot(store) == {"c": 3}
