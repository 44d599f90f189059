"""Prometheus export: the collector's samples, scrape-time evaluation, lazy import."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest
from prometheus_client import CollectorRegistry

from kvstore import MemoryStore, MetricsStore, StoreService
from kvstore.prometheus import (
    CONTENT_TYPE,
    StoreMetricsCollector,
    exposition,
    register_prometheus,
)

pytestmark = pytest.mark.anyio


class StepClock:
    """A clock that moves *step* seconds forward each time it is read."""

    def __init__(self, step: float) -> None:
        self.step = step
        self.now = 0.0

    def __call__(self) -> float:
        now = self.now
        self.now += self.step
        return now


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


async def test_service_samples_are_labelled_by_store_and_backend() -> None:
    registry = CollectorRegistry()
    async with StoreService(MemoryStore()) as service:
        sessions = service.get_store("sessions")
        cache = service.get_store("state_cache")
        register_prometheus(service, registry)
        await sessions.set("s1", {"user": "u"})
        await sessions.get("s1")
        await sessions.get("s2")
        await cache.set_many({"a": 1, "b": 2})
        await cache.delete("a")
        with pytest.raises(ValueError):
            await cache.get("")

        s = {"store": "sessions", "backend": "memory"}
        c = {"store": "state_cache", "backend": "memory"}
        assert _value(registry, "kvstore_operations_total", **s, op="get") == 2
        assert _value(registry, "kvstore_operations_total", **s, op="set") == 1
        assert _value(registry, "kvstore_operations_total", **s, op="clear") == 0
        assert _value(registry, "kvstore_errors_total", **c, op="get") == 1
        assert _value(registry, "kvstore_errors_total", **s, op="get") == 0
        assert _value(registry, "kvstore_hits_total", **s) == 1
        assert _value(registry, "kvstore_misses_total", **s) == 1
        assert _value(registry, "kvstore_gets_total", **s) == 2
        assert _value(registry, "kvstore_hit_ratio", **s) == 0.5
        assert _value(registry, "kvstore_sets_total", **c) == 2
        assert _value(registry, "kvstore_deletes_total", **c) == 1
        assert _value(registry, "kvstore_entries_yielded_total", **c) == 0
        # The first call of an operation is always timed; untimed operations have no gauge.
        p99 = _value(registry, "kvstore_latency_p99_seconds", **s, op="get")
        assert p99 is not None and 0 <= p99 < 1
        assert _value(registry, "kvstore_latency_p50_seconds", **s, op="ttl") is None

        text = exposition(registry).decode()
        assert 'kvstore_operations_total{backend="memory",op="get",store="sessions"} 2.0' in text
        assert 'kvstore_hits_total{backend="memory",store="sessions"} 1.0' in text
        assert "# TYPE kvstore_latency_max_seconds gauge" in text
        assert "# TYPE kvstore_operations_total counter" in text


async def test_values_are_read_at_scrape_time() -> None:
    registry = CollectorRegistry()
    service = StoreService()
    register_prometheus(service, registry)
    assert _value(registry, "kvstore_hits_total", store="late", backend="memory") is None
    store = service.get_store("late")
    await store.set("k", 1)
    for expected in (1, 2, 3):
        await store.get("k")
        assert _value(registry, "kvstore_hits_total", store="late", backend="memory") == (expected)
    assert isinstance(store, MetricsStore)
    store.reset_metrics()
    assert _value(registry, "kvstore_hits_total", store="late", backend="memory") == 0
    await service.aclose()


async def test_exact_latency_gauges_in_seconds() -> None:
    registry = CollectorRegistry()
    store = MetricsStore(MemoryStore(), name="timed", clock=StepClock(0.002), sample_every=1)
    register_prometheus(store, registry, namespace="app")
    await store.set("k", 1)
    await store.get("k")
    labels = {"store": "timed", "backend": "memory", "op": "get"}
    for gauge in ("p50", "p99", "max"):
        assert _value(registry, f"app_latency_{gauge}_seconds", **labels) == pytest.approx(0.002)
    assert _value(registry, "app_operations_total", **labels) == 1
    assert _value(registry, "kvstore_operations_total", **labels) is None


def test_unnamed_store_gets_an_empty_store_label() -> None:
    registry = CollectorRegistry()
    register_prometheus(MetricsStore(MemoryStore()), registry)
    labels = {"store": "", "backend": "memory"}
    assert _value(registry, "kvstore_hit_ratio", **labels) == 0.0


def test_duplicate_registration_is_rejected_and_unregister_works() -> None:
    registry = CollectorRegistry()
    service = StoreService()
    service.get_store("a")
    collector = register_prometheus(service, registry)
    assert isinstance(collector, StoreMetricsCollector)
    with pytest.raises(ValueError, match="Duplicated"):
        register_prometheus(service, registry)
    register_prometheus(service, registry, namespace="other")  # no clash
    registry.unregister(collector)
    assert _value(registry, "kvstore_hit_ratio", store="a", backend="memory") is None
    assert _value(registry, "other_hit_ratio", store="a", backend="memory") == 0.0


@pytest.mark.parametrize("namespace", ["", "1abc", "has-dash", "sp ace"])
def test_bad_namespace(namespace: str) -> None:
    with pytest.raises(ValueError, match="namespace"):
        register_prometheus(StoreService(), CollectorRegistry(), namespace=namespace)


def test_content_type_names_the_text_format() -> None:
    assert CONTENT_TYPE.startswith("text/plain")


def test_import_kvstore_does_not_import_prometheus_client() -> None:
    code = (
        "import sys, kvstore, kvstore.metrics, kvstore.service;"
        "kvstore.open_service('memory://').get_store('x');"
        "assert 'prometheus_client' not in sys.modules, 'imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_missing_prometheus_client_gives_an_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.delitem(sys.modules, "kvstore.prometheus")
    with pytest.raises(ImportError, match=r"kvstore-runtime\[prometheus\]"):
        importlib.import_module("kvstore.prometheus")
