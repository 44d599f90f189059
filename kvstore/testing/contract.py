"""The KVStore contract suite, shipped so custom backends and services can run it.

This module imports pytest; :mod:`kvstore.testing` imports it only when one of
its names is asked for.

Subclass :class:`KVStoreContract` in a pytest module and provide a
``kv_backend`` fixture returning a :class:`ContractBackend`::

    import pytest
    from kvstore.testing import ContractBackend, KVStoreContract

    class TestMyService(KVStoreContract):
        @pytest.fixture
        def kv_backend(self, tmp_path):
            return ContractBackend(lambda default_ttl=None: MyService(tmp_path, default_ttl))

Every test runs under anyio (``pytest.mark.anyio``), so anyio's pytest plugin
(installed with anyio) must be active; ``anyio_backend`` defaults to asyncio.
TTL tests call ``ContractBackend.advance``: pass a
:class:`~kvstore.testing.ManualClock`'s
``advance`` when your store takes a clock, or keep the default, which sleeps.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import math
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from ..errors import (
    InvalidKeyError,
    InvalidTTLError,
    KVStoreError,
    LockNotOwnedError,
    LockTimeoutError,
    SerializationError,
    ValueTooLargeError,
)
from ..protocol import KVStore, KVStoreService

__all__ = [
    "BAD_KEYS",
    "BAD_TTLS",
    "BAD_VALUES",
    "JSON_VALUES",
    "ContractBackend",
    "KVStoreContract",
]


async def _sleep(seconds: float) -> None:
    await anyio.sleep(seconds)


@dataclass
class ContractBackend:
    """What the contract needs to know about a backend.

    Attributes:
        open_service: ``open_service(default_ttl=None) -> KVStoreService``; the
            contract closes each service it opens.
        advance: makes *seconds* pass for the stores (default: sleep).
        ttl_unit: the TTL, in seconds, TTL tests use; raise it for backends
            whose clock cannot be moved so that sleeping stays reliable.
        max_value_bytes: the service's limit, used by the oversize test.
        url: a URL :func:`kvstore.open_service` opens the same backend with,
            for the lock tests that run other processes (None skips them).
            Those processes use the wall clock: a store clock the tests move
            must start near ``time.time()``, and *ttl_unit* must exceed the
            few seconds a process takes to start.
    """

    open_service: Callable[..., KVStoreService]
    advance: Callable[[float], Awaitable[None]] = _sleep
    ttl_unit: float = 0.25
    max_value_bytes: int = 16 * 1024 * 1024
    url: str | None = None


async def _snapshot(store: KVStore) -> dict[str, Any]:
    return {key: value async for key, value in store.entries()}


def _bump(value: int) -> int:
    return value + 1


# Run by the cross-process lock tests as ``python -c _LOCK_CHILD url mode ttl rounds``
# on the contract's store: "count" adds 1 to "n" *rounds* times, with a pause
# between the read and the write that only the lock keeps safe; "hold" takes
# the lock, says so, and waits to be killed.
_LOCK_CHILD = """
import sys, anyio, kvstore

async def main(url, mode, ttl, rounds):
    service = kvstore.open_service(url)
    store = service.get_store("contract")
    try:
        if mode == "hold":
            await store.lock("lock:held", ttl=ttl).acquire()
            print("held", flush=True)
            await anyio.sleep(3600)
        for _ in range(rounds):
            async with store.lock("lock:count", ttl=ttl, timeout=120):
                n = await store.get("n", 0)
                await anyio.sleep(0.002)
                await store.set("n", n + 1)
    finally:
        await service.aclose()

anyio.run(main, sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]))
"""


def _lock_child(url: str, mode: str, ttl: float, rounds: int = 0) -> list[str]:
    return [sys.executable, "-c", _LOCK_CHILD, url, mode, str(ttl), str(rounds)]


def _child_env() -> dict[str, str]:
    # The children import the same kvstore as this process.
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root if not path else f"{root}{os.pathsep}{path}"}


JSON_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -17,
    2**63 - 1,
    3.25,
    "",
    'héllo ✓ \n\t"quoted"',
    [],
    {},
    [1, "two", None, [3.5]],
    {"nested": {"list": [1, 2, {"deep": True}]}, "n": None},
]

BAD_KEYS: list[Any] = [None, 1, b"bytes", "", "x" * 1025, "nul\x00key", ("t",)]
BAD_TTLS: list[Any] = [0, -1, -0.5, math.nan, math.inf, -math.inf, True, False, "10", [1]]


class _Colour(enum.Enum):
    RED = 1


class _Level(enum.IntEnum):
    LOW = 1


class _Name(enum.StrEnum):
    ALICE = "alice"


class _Key(enum.StrEnum):
    USER = "user:1"


@dataclasses.dataclass
class _Point:
    x: int


class _Dict(dict[str, Any]):
    pass


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def _value_id(value: Any) -> str:
    """A short test id; repr of a deeply nested value would itself recurse too deep."""
    if type(value) is list and value and type(value[0]) is list:
        return "deeply-nested-list"
    if type(value) is object:
        # Its repr holds an address: pytest-xdist workers would disagree.
        return "object()"
    return repr(value)


BAD_VALUES: list[Any] = [
    _nested(100_000),  # deeper than any encoder (or Python's recursion) goes
    {1, 2},
    frozenset({1}),
    b"bytes",
    bytearray(b"x"),
    object(),
    math.nan,
    [math.inf],
    {1: "int key"},
    2**64,
    -(2**63) - 1,
    datetime.datetime(2026, 1, 1, 12, 0),
    datetime.date(2026, 1, 1),
    datetime.time(12, 0),
    uuid.UUID(int=1),
    decimal.Decimal("1.5"),
    _Colour.RED,
    _Level.LOW,
    _Name.ALICE,
    _Point(1),
    _Dict(a=1),
    {"nested": [{"deep": uuid.UUID(int=2)}]},
    [datetime.datetime(2026, 1, 1)],
    {"level": _Level.LOW},
]


class KVStoreContract:
    """The behaviour every :class:`~kvstore.KVStore` must have (see API.md).

    Requires a ``kv_backend`` fixture returning :class:`ContractBackend`.
    """

    pytestmark = pytest.mark.anyio

    @pytest.fixture
    async def kv_service(self, kv_backend: ContractBackend) -> AsyncIterator[KVStoreService]:
        service = kv_backend.open_service()
        try:
            yield service
        finally:
            await service.aclose()

    @pytest.fixture
    async def store(self, kv_service: KVStoreService) -> KVStore:
        store = kv_service.get_store("contract")
        await store.clear()
        return store

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
            await store.update("update", _bump, default=3)
            await store.set("explicit", 5, ttl=unit * 10)
            for key in ("set", "many", "add", "update"):
                remaining = await store.ttl(key)
                assert remaining is not None and 0 < remaining <= unit, key
            await kv_backend.advance(unit * 2)
            assert await _snapshot(store) == {"explicit": 5}
        finally:
            await service.aclose()

    # -- iteration ------------------------------------------------------------

    async def test_entries_all_and_prefix(self, store: KVStore) -> None:
        await store.set_many({"user:1": 1, "user:2": 2, "users": 3, "other": 4})
        assert await _snapshot(store) == {"user:1": 1, "user:2": 2, "users": 3, "other": 4}
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
        assert await _snapshot(store) == {"c": 3}

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
        assert await store.update("n", _bump, default=0) == 1
        assert await store.update("n", _bump, default=0) == 2
        assert await store.get("n") == 2
        assert await store.update("list", lambda xs: [*xs, "x"], default=[]) == ["x"]
        assert await store.update("none", lambda v: v) is None
        assert await store.get("none", "absent") is None

    async def test_update_with_ttl(self, store: KVStore, kv_backend: ContractBackend) -> None:
        unit = kv_backend.ttl_unit
        await store.update("n", _bump, default=0, ttl=unit)
        remaining = await store.ttl("n")
        assert remaining is not None and 0 < remaining <= unit
        await kv_backend.advance(unit * 2)
        assert await store.update("n", _bump, default=10) == 11

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
        assert await _snapshot(store) == {"k": 1}

    async def test_update_rejects_unencodable_result(self, store: KVStore) -> None:
        await store.set("k", 1)
        with pytest.raises(SerializationError):
            await store.update("k", lambda v: {v})
        assert await store.get("k") == 1

    async def test_concurrent_updates_lose_nothing(self, store: KVStore) -> None:
        async def incrementer() -> None:
            for _ in range(10):
                await store.update("counter", _bump, default=0)

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
        assert await _snapshot(store) == {"persistent": 2, "new_forever": 1, "expired": 2}

    async def test_update_keep_ttl(self, store: KVStore, kv_backend: ContractBackend) -> None:
        unit = kv_backend.ttl_unit
        await store.set("n", 1, ttl=unit * 4)
        await kv_backend.advance(unit * 2)
        assert await store.update("n", _bump, ttl=unit * 100, keep_ttl=True) == 2
        remaining = await store.ttl("n")
        assert remaining is not None and 0 < remaining <= unit * 2
        assert await store.update("fresh", _bump, default=0, ttl=unit, keep_ttl=True) == 1
        remaining = await store.ttl("fresh")
        assert remaining is not None and 0 < remaining <= unit
        await store.set("forever", 1)
        assert await store.update("forever", _bump, ttl=unit, keep_ttl=True) == 2
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
            await store.update("u", _bump, default=0, keep_ttl=True)  # new: the default
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
        assert await _snapshot(store) == {"k": 1}

    async def test_concurrent_keep_ttl_updates_lose_nothing(self, store: KVStore) -> None:
        async def incrementer() -> None:
            for _ in range(10):
                await store.update("counter", _bump, default=0, ttl=1000, keep_ttl=True)

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
        assert await _snapshot(store) == {"k": 1, "forever": 1}

    # -- locks -------------------------------------------------------------------

    async def test_lock_is_exclusive(self, store: KVStore, kv_backend: ContractBackend) -> None:
        ttl = kv_backend.ttl_unit * 10
        async with store.lock("lock:a", ttl=ttl):
            with pytest.raises(LockTimeoutError) as info:
                async with store.lock("lock:a", ttl=ttl, blocking=False):
                    pass  # pragma: no cover - never acquired
            assert isinstance(info.value, TimeoutError) and isinstance(info.value, KVStoreError)
            with pytest.raises(LockTimeoutError):
                async with store.lock("lock:a", ttl=ttl, timeout=0.05):
                    pass  # pragma: no cover - never acquired
            async with store.lock("lock:b", ttl=ttl, blocking=False):
                pass  # another name is another lock
        async with store.lock("lock:a", ttl=ttl, blocking=False):
            pass  # released: free again
        assert await store.get("lock:a") is None

    async def test_lock_waits_for_the_holder(
        self, store: KVStore, kv_backend: ContractBackend
    ) -> None:
        ttl = kv_backend.ttl_unit * 10
        events: list[str] = []
        holding = anyio.Event()

        async def waiter() -> None:
            await holding.wait()
            async with store.lock("lock:w", ttl=ttl, timeout=60):
                events.append("waiter")

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            async with store.lock("lock:w", ttl=ttl):
                holding.set()
                for _ in range(20):  # the waiter tries, and must keep waiting
                    await anyio.sleep(0.001)
                events.append("holder")
        assert events == ["holder", "waiter"]

    async def test_lock_serialises_tasks(self, store: KVStore, kv_backend: ContractBackend) -> None:
        ttl = kv_backend.ttl_unit * 10

        async def worker() -> None:
            for _ in range(3):
                async with store.lock("lock:n", ttl=ttl, timeout=60):
                    n = await store.get("n", 0)
                    await anyio.lowlevel.checkpoint()  # unsafe without the lock
                    await store.set("n", n + 1)

        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(worker)
        assert await store.get("n") == 24

    async def test_lock_expires_and_cannot_be_released_by_its_late_holder(
        self, store: KVStore, kv_backend: ContractBackend
    ) -> None:
        unit = kv_backend.ttl_unit
        first = store.lock("lock:e", ttl=unit)
        await first.__aenter__()
        await kv_backend.advance(unit * 2)
        second = store.lock("lock:e", ttl=unit * 10, blocking=False)
        await second.__aenter__()  # the first expired
        with pytest.raises(LockNotOwnedError):
            await first.__aexit__(None, None, None)
        with pytest.raises(LockTimeoutError):  # the second holds it still
            await store.lock("lock:e", ttl=unit, blocking=False).__aenter__()
        await second.__aexit__(None, None, None)

        class Boom(Exception):
            pass

        with pytest.raises(Boom) as info:  # the block's error wins, with a note
            async with store.lock("lock:e", ttl=unit):
                await kv_backend.advance(unit * 2)
                raise Boom
        assert any("expired" in note for note in getattr(info.value, "__notes__", []))
        with pytest.raises(LockNotOwnedError):
            async with store.lock("lock:e", ttl=unit):
                await kv_backend.advance(unit * 2)

    async def test_lock_bad_arguments(self, store: KVStore) -> None:
        with pytest.raises(InvalidKeyError):
            store.lock("", ttl=10)
        with pytest.raises(InvalidTTLError):
            store.lock("lock:x", ttl=0)
        with pytest.raises(ValueError):
            store.lock("lock:x", ttl=10, timeout=-1)
        with pytest.raises(ValueError):
            store.lock("lock:x", ttl=10, timeout=1, blocking=False)
        assert await _snapshot(store) == {}

    async def test_lock_is_exclusive_across_processes(
        self, store: KVStore, kv_backend: ContractBackend
    ) -> None:
        if kv_backend.url is None:
            pytest.skip("the backend is not shared by processes (no ContractBackend.url)")
        url, processes, rounds = kv_backend.url, 2, 5
        with anyio.fail_after(240):
            async with anyio.create_task_group() as tg:
                for _ in range(processes):
                    command = _lock_child(url, "count", 120.0, rounds)
                    tg.start_soon(_run_child, command)
        assert await store.get("n") == processes * rounds

    async def test_lock_of_a_killed_holder_expires(
        self, store: KVStore, kv_backend: ContractBackend
    ) -> None:
        if kv_backend.url is None:
            pytest.skip("the backend is not shared by processes (no ContractBackend.url)")
        unit = kv_backend.ttl_unit
        with anyio.fail_after(120):
            async with await anyio.open_process(
                _lock_child(kv_backend.url, "hold", unit),
                stdout=subprocess.PIPE,
                env=_child_env(),
            ) as child:
                assert child.stdout is not None
                said = await child.stdout.receive()
                assert said.startswith(b"held"), said
                child.kill()
                await child.wait()
        with pytest.raises(LockTimeoutError):
            await store.lock("lock:held", ttl=unit, blocking=False).__aenter__()
        await kv_backend.advance(unit * 3)
        async with store.lock("lock:held", ttl=unit, blocking=False):
            pass

    # -- namespaces -----------------------------------------------------------

    async def test_clear_only_own_namespace(self, kv_service: KVStoreService) -> None:
        a, ab, a_b = (kv_service.get_store(n) for n in ("ns_a", "ns_ab", "ns_a.b"))
        for store in (a, ab, a_b):
            await store.clear()
        await a.set("k", "a")
        await ab.set("k", "ab")
        await a_b.set("b:k", "a.b")
        assert await _snapshot(a) == {"k": "a"}
        assert await _snapshot(ab) == {"k": "ab"}
        assert await _snapshot(a_b) == {"b:k": "a.b"}
        assert [kv async for kv in a.entries("b")] == []
        await a.clear()
        assert await _snapshot(a) == {}
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
            lambda: store.update(key, _bump, default=0),
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
        assert await _snapshot(store) == {"keep": 1}

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
            lambda: store.update("k", _bump, default=0, ttl=ttl),
            lambda: store.expire("keep", ttl),
        ]
        for call in calls:
            with pytest.raises(InvalidTTLError) as info:
                await call()
            assert isinstance(info.value, ValueError)
        assert await _snapshot(store) == {"keep": 1}
        assert await store.ttl("keep") is None

    @pytest.mark.parametrize("value", BAD_VALUES, ids=_value_id)
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
        assert await _snapshot(store) == {"keep": 1}

    async def test_values_come_back_exactly(self, store: KVStore) -> None:
        value = {"a": [1, -(2**63), 2**64 - 1, 2.5, -0.0, True, None, "é"], "b": ("t", 1)}
        await store.set("k", value)
        assert await store.get("k") == {
            "a": [1, -(2**63), 2**64 - 1, 2.5, -0.0, True, None, "é"],
            "b": ["t", 1],
        }

    async def test_str_subclass_keys_act_as_plain_strings(self, store: KVStore) -> None:
        absent = _Name.ALICE
        assert await store.get(absent, "none") == "none"
        assert await store.get_many([absent]) == {}
        assert await store.delete(absent) is False
        await store.set(_Key.USER, 1)
        assert await store.get("user:1") == 1
        assert await store.get(_Key.USER) == 1
        assert await store.get_many([_Key.USER]) == {"user:1": 1}
        assert await store.add(_Key.USER, 2) is False
        assert await store.update(_Key.USER, _bump) == 2
        assert await store.expire(_Key.USER, 100) is True
        assert await store.ttl(_Key.USER) is not None
        keys = [key async for key, _ in store.entries()]
        assert keys == ["user:1"] and type(keys[0]) is str
        assert await store.delete_many([_Key.USER]) == 1

    async def test_value_too_large(self, store: KVStore, kv_backend: ContractBackend) -> None:
        await store.set("keep", 1)
        big = "x" * (kv_backend.max_value_bytes + 1)
        with pytest.raises(ValueTooLargeError):
            await store.set("keep", big)
        with pytest.raises(ValueTooLargeError):
            await store.set_many({"fresh": 1, "big": {"text": big}})
        assert await _snapshot(store) == {"keep": 1}

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


async def _run_child(command: list[str]) -> None:
    result = await anyio.run_process(command, env=_child_env(), check=False)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
