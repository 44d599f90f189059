"""Namespaces, bad input (typed errors, nothing changed) and lifecycle."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from ...errors import (
    InvalidKeyError,
    InvalidTTLError,
    KVStoreError,
    SerializationError,
    ValueTooLargeError,
)
from ...protocol import KVStore, KVStoreService
from .backend import ContractBackend, bump, snapshot
from .values import BAD_KEYS, BAD_TTLS, BAD_VALUES, Key, Name, value_id


class InputContract:
    """Namespaces, bad input (typed errors, nothing changed) and lifecycle."""

    # -- namespaces -----------------------------------------------------------

    async def test_clear_only_own_namespace(self, kv_service: KVStoreService) -> None:
        a, ab, a_b = (kv_service.get_store(n) for n in ("ns_a", "ns_ab", "ns_a.b"))
        for store in (a, ab, a_b):
            await store.clear()
        await a.set("k", "a")
        await ab.set("k", "ab")
        await a_b.set("b:k", "a.b")
        assert await snapshot(a) == {"k": "a"}
        assert await snapshot(ab) == {"k": "ab"}
        assert await snapshot(a_b) == {"b:k": "a.b"}
        assert [kv async for kv in a.entries("b")] == []
        await a.clear()
        assert await snapshot(a) == {}
        assert await ab.get("k") == "ab"
        assert await a_b.get("b:k") == "a.b"

    async def test_same_name_same_namespace(self, kv_service: KVStoreService) -> None:
        first = kv_service.get_store("ns_same")
        await first.clear()
        await first.set("k", 1)
        assert await kv_service.get_store("ns_same").get("k") == 1

    @pytest.mark.parametrize("name", ["", "a:b", "a*", "a b", "x" * 65, "ns/1", "é"])
    async def test_bad_store_names(self, kv_service: KVStoreService, name: str) -> None:
        with pytest.raises(InvalidKeyError):
            kv_service.get_store(name)

    # -- bad input: typed errors, nothing changed -----------------------------

    @pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
    async def test_bad_keys(self, store: KVStore, key: Any) -> None:
        await store.set("keep", 1)
        calls: list[Callable[[], Awaitable[Any]]] = [
            lambda: store.get(key),
            lambda: store.set(key, 1),
            lambda: store.delete(key),
            lambda: store.add(key, 1),
            lambda: store.update(key, bump, default=0),
            lambda: store.ttl(key),
            lambda: store.expire(key, 10),
            lambda: store.get_many(["keep", key]),
            lambda: store.set_many({"fresh": 1, key: 2}),
            lambda: store.delete_many(["keep", key]),
        ]
        for call in calls:
            with pytest.raises(InvalidKeyError) as info:
                await call()
            assert isinstance(info.value, ValueError) and isinstance(info.value, KVStoreError)
            assert str(info.value)
        assert await snapshot(store) == {"keep": 1}

    @pytest.mark.parametrize("prefix", [None, 1, "nul\x00"], ids=repr)
    async def test_bad_prefix(self, store: KVStore, prefix: Any) -> None:
        with pytest.raises(InvalidKeyError):
            async for _ in store.entries(prefix):
                pass

    @pytest.mark.parametrize("ttl", BAD_TTLS, ids=repr)
    async def test_bad_ttls(self, store: KVStore, ttl: Any) -> None:
        await store.set("keep", 1)
        calls: list[Callable[[], Awaitable[Any]]] = [
            lambda: store.set("k", 1, ttl=ttl),
            lambda: store.set_many({"k": 1}, ttl=ttl),
            lambda: store.add("k", 1, ttl=ttl),
            lambda: store.update("k", bump, default=0, ttl=ttl),
            lambda: store.expire("keep", ttl),
        ]
        for call in calls:
            with pytest.raises(InvalidTTLError) as info:
                await call()
            assert isinstance(info.value, ValueError)
        assert await snapshot(store) == {"keep": 1}
        assert await store.ttl("keep") is None

    @pytest.mark.parametrize("value", BAD_VALUES, ids=value_id)
    async def test_bad_values(self, store: KVStore, value: Any) -> None:
        await store.set("keep", 1)
        calls: list[Callable[[], Awaitable[Any]]] = [
            lambda: store.set("keep", value),
            lambda: store.set_many({"fresh": 1, "k": value}),
            lambda: store.add("k", value),
            lambda: store.update("keep", lambda _: value),
        ]
        for call in calls:
            with pytest.raises(SerializationError) as info:
                await call()
            assert isinstance(info.value, TypeError)
        assert await snapshot(store) == {"keep": 1}

    async def test_values_come_back_exactly(self, store: KVStore) -> None:
        value = {"a": [1, -(2**63), 2**64 - 1, 2.5, -0.0, True, None, "é"], "b": ("t", 1)}
        await store.set("k", value)
        assert await store.get("k") == {
            "a": [1, -(2**63), 2**64 - 1, 2.5, -0.0, True, None, "é"],
            "b": ["t", 1],
        }

    async def test_str_subclass_keys_act_as_plain_strings(self, store: KVStore) -> None:
        absent = Name.ALICE
        assert await store.get(absent, "none") == "none"
        assert await store.get_many([absent]) == {}
        assert await store.delete(absent) is False
        await store.set(Key.USER, 1)
        assert await store.get("user:1") == 1
        assert await store.get(Key.USER) == 1
        assert await store.get_many([Key.USER]) == {"user:1": 1}
        assert await store.add(Key.USER, 2) is False
        assert await store.update(Key.USER, bump) == 2
        assert await store.expire(Key.USER, 100) is True
        assert await store.ttl(Key.USER) is not None
        keys = [key async for key, _ in store.entries()]
        assert keys == ["user:1"] and type(keys[0]) is str
        assert await store.delete_many([Key.USER]) == 1

    async def test_value_too_large(self, store: KVStore, kv_backend: ContractBackend) -> None:
        await store.set("keep", 1)
        big = "x" * (kv_backend.max_value_bytes + 1)
        with pytest.raises(ValueTooLargeError):
            await store.set("keep", big)
        with pytest.raises(ValueTooLargeError):
            await store.set_many({"fresh": 1, "big": {"text": big}})
        assert await snapshot(store) == {"keep": 1}

    async def test_bulk_calls_reject_a_single_str(self, store: KVStore) -> None:
        with pytest.raises(TypeError):
            await store.get_many("abc")
        with pytest.raises(TypeError):
            await store.delete_many("abc")
        with pytest.raises(TypeError):
            await store.set_many([("a", 1)])  # type: ignore[arg-type]

    # -- lifecycle ------------------------------------------------------------

    async def test_aclose_is_idempotent(self, kv_backend: ContractBackend) -> None:
        service = kv_backend.open_service()
        store = service.get_store("contract_close")
        await store.set("k", 1)
        await service.aclose()
        await service.aclose()
        with pytest.raises(KVStoreError):
            await store.get("k")
