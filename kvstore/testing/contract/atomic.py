"""add, update, expire; keep_ttl and persist."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import pytest

from ...errors import (
    SerializationError,
)
from ...protocol import KVStore
from .backend import ContractBackend, bump, snapshot


class AtomicContract:
    """add, update, expire; keep_ttl and persist."""

    # -- atomic operations ----------------------------------------------------

    async def test_add(self, store: KVStore, kv_backend: ContractBackend) -> None:
        unit = kv_backend.ttl_unit
        assert await store.add("k", 1) is True
        assert await store.add("k", 2) is False
        assert await store.get("k") == 1
        await store.set("short", 1, ttl=unit)
        await kv_backend.advance(unit * 2)
        assert await store.add("short", "again") is True
        assert await store.get("short") == "again"

    async def test_add_is_atomic(self, store: KVStore) -> None:
        winners: list[int] = []

        async def contender(i: int) -> None:
            if await store.add("lock", i):
                winners.append(i)

        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(contender, i)
        assert len(winners) == 1
        assert await store.get("lock") == winners[0]

    async def test_update(self, store: KVStore) -> None:
        assert await store.update("n", bump, default=0) == 1
        assert await store.update("n", bump, default=0) == 2
        assert await store.get("n") == 2
        assert await store.update("list", lambda xs: [*xs, "x"], default=[]) == ["x"]
        assert await store.update("none", lambda v: v) is None
        assert await store.get("none", "absent") is None

    async def test_update_with_ttl(self, store: KVStore, kv_backend: ContractBackend) -> None:
        unit = kv_backend.ttl_unit
        await store.update("n", bump, default=0, ttl=unit)
        remaining = await store.ttl("n")
        assert remaining is not None and 0 < remaining <= unit
        await kv_backend.advance(unit * 2)
        assert await store.update("n", bump, default=10) == 11

    async def test_update_error_propagates_and_stores_nothing(self, store: KVStore) -> None:
        class Boom(Exception):
            pass

        def explode(value: Any) -> Any:
            raise Boom("from fn")

        await store.set("k", 1)
        with pytest.raises(Boom, match="from fn"):
            await store.update("k", explode)
        with pytest.raises(Boom):
            await store.update("fresh", explode, default=0)
        assert await snapshot(store) == {"k": 1}

    async def test_update_rejects_unencodable_result(self, store: KVStore) -> None:
        await store.set("k", 1)
        with pytest.raises(SerializationError):
            await store.update("k", lambda v: {v})
        assert await store.get("k") == 1

    async def test_concurrent_updates_lose_nothing(self, store: KVStore) -> None:
        async def incrementer() -> None:
            for _ in range(10):
                await store.update("counter", bump, default=0)

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(incrementer)
        assert await store.get("counter") == 200

    # -- keep_ttl and persist ---------------------------------------------------

    async def test_set_keep_ttl_keeps_the_remaining_ttl(
        self, store: KVStore, kv_backend: ContractBackend
    ) -> None:
        unit = kv_backend.ttl_unit
        await store.set("k", 1, ttl=unit * 4)
        await kv_backend.advance(unit * 2)
        await store.set("k", 2, ttl=unit * 100, keep_ttl=True)
        assert await store.get("k") == 2
        remaining = await store.ttl("k")
        assert remaining is not None and 0 < remaining <= unit * 2
        await kv_backend.advance(unit * 3)
        assert await store.get("k") is None

    async def test_set_keep_ttl_on_persistent_new_and_expired_keys(
        self, store: KVStore, kv_backend: ContractBackend
    ) -> None:
        unit = kv_backend.ttl_unit
        await store.set("persistent", 1)
        await store.set("persistent", 2, ttl=unit, keep_ttl=True)
        assert await store.ttl("persistent") is None
        await store.set("new", 1, ttl=unit, keep_ttl=True)
        remaining = await store.ttl("new")
        assert remaining is not None and 0 < remaining <= unit
        await store.set("new_forever", 1, keep_ttl=True)
        assert await store.ttl("new_forever") is None
        await store.set("expired", 1, ttl=unit)
        await kv_backend.advance(unit * 2)
        await store.set("expired", 2, ttl=unit * 10, keep_ttl=True)  # absent: a new key
        remaining = await store.ttl("expired")
        assert remaining is not None and unit * 9 <= remaining <= unit * 10
        assert await snapshot(store) == {"persistent": 2, "new_forever": 1, "expired": 2}

    async def test_update_keep_ttl(self, store: KVStore, kv_backend: ContractBackend) -> None:
        unit = kv_backend.ttl_unit
        await store.set("n", 1, ttl=unit * 4)
        await kv_backend.advance(unit * 2)
        assert await store.update("n", bump, ttl=unit * 100, keep_ttl=True) == 2
        remaining = await store.ttl("n")
        assert remaining is not None and 0 < remaining <= unit * 2
        assert await store.update("fresh", bump, default=0, ttl=unit, keep_ttl=True) == 1
        remaining = await store.ttl("fresh")
        assert remaining is not None and 0 < remaining <= unit
        await store.set("forever", 1)
        assert await store.update("forever", bump, ttl=unit, keep_ttl=True) == 2
        assert await store.ttl("forever") is None
        await kv_backend.advance(unit * 3)
        assert await store.get_many(["n", "fresh", "forever"]) == {"forever": 2}

    async def test_keep_ttl_with_a_default_ttl(self, kv_backend: ContractBackend) -> None:
        unit = kv_backend.ttl_unit
        service = kv_backend.open_service(default_ttl=unit)
        try:
            store = service.get_store("contract_keep")
            await store.clear()
            await store.set("k", 1, ttl=unit * 10)
            await store.set("k", 2, keep_ttl=True)  # not the default: the key's own TTL
            await store.update("u", bump, default=0, keep_ttl=True)  # new: the default
            kept, fresh = await store.ttl("k"), await store.ttl("u")
            assert kept is not None and unit * 9 <= kept <= unit * 10
            assert fresh is not None and 0 < fresh <= unit
        finally:
            await service.aclose()

    async def test_update_keep_ttl_error_stores_nothing(self, store: KVStore) -> None:
        await store.set("k", 1, ttl=100)
        with pytest.raises(ZeroDivisionError):
            await store.update("k", lambda v: v / 0, keep_ttl=True)
        with pytest.raises(SerializationError):
            await store.update("k", lambda v: {v}, keep_ttl=True)
        assert await snapshot(store) == {"k": 1}

    async def test_concurrent_keep_ttl_updates_lose_nothing(self, store: KVStore) -> None:
        async def incrementer() -> None:
            for _ in range(10):
                await store.update("counter", bump, default=0, ttl=1000, keep_ttl=True)

        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(incrementer)
        assert await store.get("counter") == 100

    async def test_persist(self, store: KVStore, kv_backend: ContractBackend) -> None:
        unit = kv_backend.ttl_unit
        await store.set("k", 1, ttl=unit)
        assert await store.persist("k") is True
        assert await store.ttl("k") is None
        await store.set("forever", 1)
        assert await store.persist("forever") is True
        assert await store.persist("missing") is False
        await store.set("gone", 1, ttl=unit)
        await kv_backend.advance(unit * 2)
        assert await store.persist("gone") is False
        assert await snapshot(store) == {"k": 1, "forever": 1}
