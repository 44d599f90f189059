"""open_store / open_service / service_from_env and the service protocol."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from kvstore import (
    ConfigError,
    KVStore,
    KVStoreError,
    MemoryStore,
    MetricsStore,
    StoreService,
    UnsupportedBackendError,
    is_kv_store_service,
    open_service,
    open_store,
    service_from_env,
)
from kvstore.errors import StoreClosedError

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "url", ["ftp://x", "memory", "", "postgres://localhost/db", "mem://", "redis:/x"]
)
def test_unknown_scheme_names_the_supported_ones(url: str) -> None:
    with pytest.raises(UnsupportedBackendError) as info:
        open_store(url)
    message = str(info.value)
    for scheme in ("memory://", "sqlite://", "redis://", "rediss://", "unix://"):
        assert scheme in message
    assert isinstance(info.value, ValueError) and isinstance(info.value, KVStoreError)


def test_non_str_url() -> None:
    with pytest.raises(UnsupportedBackendError, match="str"):
        open_store(42)  # type: ignore[arg-type]


def test_memory_url_builds_a_memory_store() -> None:
    assert isinstance(open_store("memory://"), MemoryStore)
    assert isinstance(open_store("MEMORY://"), MemoryStore)


async def test_service_wraps_stores_in_metrics_and_caches_by_name() -> None:
    async with open_service("memory://", default_ttl=30) as service:
        store = service.get_store("a")
        assert isinstance(store, MetricsStore)
        assert service.get_store("a") is store
        assert service.get_store("b") is not store
        assert service.store_names() == ["a", "b"]
        await store.set("k", 1)
        assert await store.ttl("k") == pytest.approx(30, abs=1)
        assert set(service.get_metrics()) == {"a", "b"}


async def test_service_without_metrics() -> None:
    service = StoreService(metrics=False)
    store = service.get_store("plain")
    assert isinstance(store, MemoryStore)
    assert service.get_metrics() == {}
    await service.aclose()
    with pytest.raises(StoreClosedError):
        service.get_store("plain")


async def test_store_options_apply_per_name() -> None:
    service = StoreService(MemoryStore(), store_options={"small": {"max_entries": 2}})
    small, big = service.get_store("small"), service.get_store("big")
    await small.set_many({"a": 1, "b": 2, "c": 3})
    await big.set_many({"a": 1, "b": 2, "c": 3})
    assert len([k async for k, _ in small.entries()]) == 2
    assert len([k async for k, _ in big.entries()]) == 3
    await service.aclose()


def test_is_kv_store_service() -> None:
    class Custom:
        def get_store(self, name: str) -> KVStore:
            return MemoryStore()

        async def aclose(self) -> None:
            pass

    assert is_kv_store_service(StoreService())
    assert is_kv_store_service(Custom())
    assert not is_kv_store_service(Custom)  # the class itself is not a service
    assert not is_kv_store_service(object())
    assert not is_kv_store_service(MemoryStore())


def test_memory_store_satisfies_the_protocol() -> None:
    assert isinstance(MemoryStore(), KVStore)
    assert isinstance(MetricsStore(MemoryStore()), KVStore)


class TestServiceFromEnv:
    async def test_default_is_memory(self) -> None:
        service = service_from_env({})
        assert isinstance(service.backend, MemoryStore)
        assert service.backend.default_ttl is None
        await service.aclose()

    async def test_ttl(self) -> None:
        service = service_from_env({"KV_STORE_BACKEND": "memory", "KV_STORE_TTL": "90"})
        assert service.backend.default_ttl == 90.0
        await service.aclose()
        service = service_from_env({"KV_STORE_TTL": "  "})
        assert service.backend.default_ttl is None
        await service.aclose()

    @pytest.mark.parametrize(
        ("env", "variable"),
        [
            ({"KV_STORE_BACKEND": "mongo"}, "KV_STORE_BACKEND"),
            ({"KV_STORE_BACKEND": "redis", "REDIS_URL": "http://x"}, "REDIS_URL"),
            ({"KV_STORE_BACKEND": "redis", "REDIS_URL": "localhost:6379"}, "REDIS_URL"),
            ({"KV_STORE_TTL": "soon"}, "KV_STORE_TTL"),
            ({"KV_STORE_TTL": "0"}, "KV_STORE_TTL"),
            ({"KV_STORE_TTL": "-5"}, "KV_STORE_TTL"),
            ({"KV_STORE_TTL": "nan"}, "KV_STORE_TTL"),
            ({"KV_STORE_TTL": "inf"}, "KV_STORE_TTL"),
        ],
    )
    def test_bad_values_name_the_variable(self, env: dict[str, str], variable: str) -> None:
        with pytest.raises(ConfigError) as info:
            service_from_env(env)
        assert variable in str(info.value)
        assert isinstance(info.value, ValueError)


class _Recorder(MemoryStore):
    """A MemoryStore that records whether it was closed."""

    closed_calls = 0

    async def _aclose(self) -> None:
        type(self).closed_calls += 1
        await super()._aclose()


async def test_service_closes_root_once() -> None:
    service = StoreService(_Recorder())
    service.get_store("a")
    await service.aclose()
    await service.aclose()
    # the root plus the one named store
    assert _Recorder.closed_calls == 2


async def _collect(iterator: AsyncIterator[tuple[str, Any]]) -> list[tuple[str, Any]]:
    return [item async for item in iterator]


async def test_closed_store_raises_typed_error() -> None:
    store = MemoryStore()
    async with store:
        await store.set("k", 1)
    with pytest.raises(StoreClosedError, match="closed"):
        await store.get("k")
    with pytest.raises(StoreClosedError):
        await _collect(store.entries())
