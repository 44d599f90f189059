"""StoreWrapper: a forwarding store that decorators subclass, overriding only what they change."""

from __future__ import annotations

from contextlib import aclosing
from typing import Any

import pytest

from kvstore import KVStore, KVStoreService, MemoryStore, MetricsStore, StoreService
from kvstore.testing import ContractBackend, KVStoreContract, ManualClock
from kvstore.wrapper import StoreWrapper

pytestmark = pytest.mark.anyio


class _WrappingService:
    """Every store of a memory StoreService, wrapped in a bare StoreWrapper."""

    def __init__(self, clock: ManualClock, default_ttl: float | None) -> None:
        self._inner = StoreService(MemoryStore(clock=clock, default_ttl=default_ttl))

    def get_store(self, name: str) -> KVStore:
        return StoreWrapper(self._inner.get_store(name))

    async def aclose(self) -> None:
        await self._inner.aclose()


class TestWrapperContract(KVStoreContract):
    """The whole contract through StoreWrapper: forwarding changes nothing."""

    @pytest.fixture
    def kv_backend(self) -> ContractBackend:
        clock = ManualClock()

        def open_service(default_ttl: float | None = None) -> KVStoreService:
            return _WrappingService(clock, default_ttl)

        return ContractBackend(open_service, advance=clock.advance, ttl_unit=10.0)


class Prefixing(StoreWrapper):
    """Overrides set alone: every value written gets a marker; the rest is forwarded."""

    async def set(
        self, key: str, value: Any, *, ttl: float | None = None, keep_ttl: bool = False
    ) -> None:
        await self.inner.set(key, ["marked", value], ttl=ttl, keep_ttl=keep_ttl)


async def test_a_subclass_overrides_only_what_it_changes() -> None:
    inner = MemoryStore()
    store = Prefixing(inner)
    assert isinstance(store, KVStore)
    await store.set("k", 1, ttl=30)
    assert await inner.get("k") == ["marked", 1]
    assert await store.get("k") == ["marked", 1]
    await store.set_many({"m": 2})  # forwarded as is: not marked
    assert await inner.get_many(["k", "m"]) == {"k": ["marked", 1], "m": 2}
    remaining = await store.ttl("k")
    assert remaining is not None and 29 < remaining <= 30
    assert store.inner is inner
    assert repr(store) == f"Prefixing({inner!r})"


class _Tracked(MemoryStore):
    closed_iterations = 0

    async def entries(self, prefix: str = "") -> Any:
        try:
            async for row in super().entries(prefix):
                yield row
        finally:
            self.closed_iterations += 1


async def test_closing_entries_early_closes_the_inner_generator() -> None:
    inner = _Tracked()
    await inner.set_many({f"k{i}": i for i in range(10)})
    async with aclosing(StoreWrapper(inner).entries()) as rows:
        async for _ in rows:
            break
    assert inner.closed_iterations == 1


async def test_get_metrics_is_there_exactly_when_the_inner_store_has_it() -> None:
    plain = StoreWrapper(MemoryStore())
    assert not hasattr(plain, "get_metrics")
    with pytest.raises(AttributeError):
        plain.get_metrics()
    metered = MetricsStore(MemoryStore())
    wrapper = StoreWrapper(metered)
    await wrapper.get("missing")
    assert wrapper.get_metrics() == metered.get_metrics()
    assert wrapper.get_metrics().misses == 1


async def test_async_with_and_aclose_reach_the_inner_store() -> None:
    inner = MemoryStore()
    async with StoreWrapper(inner) as store:
        assert isinstance(store, StoreWrapper)
        await store.set("k", 1)
    assert inner.closed
    other = MemoryStore()
    await StoreWrapper(other).aclose()
    assert other.closed
