"""MetricsStore: counters, latency percentiles, errors, lifecycle and the service view."""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import aclosing
from typing import Any, Self

import anyio
import anyio.lowlevel
import pytest

from kvstore import (
    InvalidKeyError,
    KVStore,
    KVStoreService,
    MemoryStore,
    MetricsStore,
    OpMetrics,
    StoreLock,
    StoreMetrics,
    StoreService,
)
from kvstore.metrics import OPERATIONS
from kvstore.testing import ContractBackend, KVStoreContract, ManualClock

pytestmark = pytest.mark.anyio


class StepClock:
    """A clock that moves *step* seconds forward each time it is read."""

    def __init__(self, step: float) -> None:
        self.step = step
        self.now = 0.0
        self.reads = 0

    def __call__(self) -> float:
        now = self.now
        self.now += self.step
        self.reads += 1
        return now


class LaggyStore(MemoryStore):
    """A memory store whose ``get`` of ``"ms:<n>"`` takes n ms on *latency_clock*."""

    def __init__(self, latency_clock: ManualClock) -> None:
        super().__init__()
        self.latency_clock = latency_clock

    async def get(self, key: str, default: Any = None) -> Any:
        if key.startswith("ms:"):
            self.latency_clock.advance_by(float(key[3:]) / 1000)
        return await super().get(key, default)


class BrokenStore:
    """A KVStore whose every operation raises the same exception object."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.closed = False

    async def get(self, key: str, default: Any = None) -> Any:
        raise self.error

    async def set(
        self, key: str, value: Any, *, ttl: float | None = None, keep_ttl: bool = False
    ) -> None:
        raise self.error

    async def delete(self, key: str) -> bool:
        raise self.error

    async def entries(self, prefix: str = "") -> AsyncGenerator[tuple[str, Any], None]:
        raise self.error
        yield  # pragma: no cover - makes this an async generator

    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        raise self.error

    async def set_many(self, mapping: Mapping[str, Any], *, ttl: float | None = None) -> None:
        raise self.error

    async def delete_many(self, keys: Iterable[str]) -> int:
        raise self.error

    async def add(self, key: str, value: Any, *, ttl: float | None = None) -> bool:
        raise self.error

    async def update(
        self,
        key: str,
        fn: Callable[[Any], Any],
        *,
        default: Any = None,
        ttl: float | None = None,
        keep_ttl: bool = False,
    ) -> Any:
        raise self.error

    async def ttl(self, key: str) -> float | None:
        raise self.error

    async def expire(self, key: str, ttl: float) -> bool:
        raise self.error

    async def persist(self, key: str) -> bool:
        raise self.error

    def lock(
        self, name: str, *, ttl: float, timeout: float | None = None, blocking: bool = True
    ) -> StoreLock:
        raise self.error

    async def clear(self) -> None:
        raise self.error

    async def aclose(self) -> None:
        self.closed = True

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class TrackedStore(MemoryStore):
    """A memory store that remembers whether an entries() iteration was closed."""

    entries_closed = False

    async def entries(self, prefix: str = "") -> AsyncGenerator[tuple[str, Any], None]:
        try:
            async for row in super().entries(prefix):
                yield row
        finally:
            self.entries_closed = True


def _bump(value: int) -> int:
    return value + 1


# One call of every operation, keyed by the name MetricsStore reports it under.
CALLS: dict[str, Callable[[KVStore], Awaitable[Any]]] = {
    "get": lambda s: s.get("k"),
    "set": lambda s: s.set("k", 1),
    "delete": lambda s: s.delete("k"),
    "entries": lambda s: _drain(s.entries()),
    "get_many": lambda s: s.get_many(["k", "j"]),
    "set_many": lambda s: s.set_many({"k": 1, "j": 2}),
    "delete_many": lambda s: s.delete_many(["k", "j"]),
    "add": lambda s: s.add("k", 1),
    "update": lambda s: s.update("k", _bump, default=0),
    "ttl": lambda s: s.ttl("k"),
    "expire": lambda s: s.expire("k", 10),
    "persist": lambda s: s.persist("k"),
    "clear": lambda s: s.clear(),
}


async def _drain(rows: AsyncIterator[tuple[str, Any]]) -> list[tuple[str, Any]]:
    return [row async for row in rows]


# -- protocol and labels ----------------------------------------------------------


def test_reports_every_operation() -> None:
    assert set(CALLS) == set(OPERATIONS)


async def test_is_a_kvstore_with_labels() -> None:
    inner = MemoryStore()
    store = MetricsStore(inner, name="cache")
    assert isinstance(store, KVStore)
    assert store.inner is inner
    assert store.name == "cache"
    assert store.backend == "memory"
    assert MetricsStore(inner).name is None
    assert MetricsStore(inner, backend="custom").backend == "custom"
    assert (store.sample_every, store.window) == (16, 1024)
    tuned = MetricsStore(inner, sample_every=1, window=10)
    assert (tuned.sample_every, tuned.window) == (1, 10)
    assert "cache" in repr(store)


async def test_backend_label_comes_from_inner_backend_attribute() -> None:
    class LabelledStore(MemoryStore):
        backend = "redis-cluster"

    class OddlyLabelledStore(MemoryStore):
        backend = 42  # type: ignore[assignment]

    assert MetricsStore(LabelledStore()).backend == "redis-cluster"
    # A wrapped MetricsStore passes its label through; a non-str attribute is ignored.
    assert MetricsStore(MetricsStore(LabelledStore())).backend == "redis-cluster"
    assert MetricsStore(OddlyLabelledStore()).backend == "OddlyLabelledStore"


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"sample_every": 0}, ValueError),
        ({"sample_every": 1.5}, TypeError),
        ({"window": 0}, ValueError),
        ({"window": True}, TypeError),
        ({"clock": 3.0}, TypeError),
    ],
)
def test_rejects_bad_options(options: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        MetricsStore(MemoryStore(), **options)


# -- counters -----------------------------------------------------------------------


async def test_fresh_store_reports_zeros() -> None:
    metrics = MetricsStore(MemoryStore(), name="n").get_metrics()
    assert (metrics.gets, metrics.hits, metrics.misses, metrics.errors) == (0, 0, 0, 0)
    assert metrics.hit_ratio == 0.0
    assert metrics.name == "n" and metrics.backend == "memory"
    assert list(metrics.ops) == list(OPERATIONS)
    assert all(op == OpMetrics() for op in metrics.ops.values())


async def test_hits_misses_and_hit_ratio() -> None:
    store = MetricsStore(MemoryStore())
    await store.set("a", 1)
    await store.set("none", None)
    assert await store.get("a") == 1
    assert await store.get("none", "absent") is None  # a stored None is a hit
    assert await store.get("missing") is None
    assert await store.get("missing", "fallback") == "fallback"
    metrics = store.get_metrics()
    assert (metrics.gets, metrics.hits, metrics.misses) == (4, 2, 2)
    assert metrics.hit_ratio == 0.5
    # Each distinct key of get_many is a lookup: a, none hit; x misses.
    assert await store.get_many(["a", "none", "x", "a"]) == {"a": 1, "none": None}
    metrics = store.get_metrics()
    assert (metrics.gets, metrics.hits, metrics.misses) == (7, 4, 3)
    assert metrics.hit_ratio == pytest.approx(4 / 7)
    assert metrics.ops["get"].count == 4 and metrics.ops["get_many"].count == 1


async def test_get_many_accepts_a_one_shot_iterator() -> None:
    store = MetricsStore(MemoryStore())
    await store.set("a", 1)
    assert await store.get_many(iter(["a", "b"])) == {"a": 1}
    assert (store.get_metrics().hits, store.get_metrics().misses) == (1, 1)


async def test_sets_and_deletes() -> None:
    store = MetricsStore(MemoryStore())
    await store.set("a", 1)
    await store.set_many({"b": 2, "c": 3, "d": 4})
    assert await store.delete("a") is True
    assert await store.delete("a") is False
    assert await store.delete_many(iter(["b", "c", "b", "zz"])) == 2
    assert await store.add("e", 5) is True
    assert await store.update("e", _bump) == 6
    metrics = store.get_metrics()
    assert metrics.sets == 4  # add and update are counted in ops only
    assert metrics.deletes == 5  # 2 delete calls + 3 distinct keys of delete_many
    assert metrics.ops["add"].count == 1 and metrics.ops["update"].count == 1
    assert metrics.errors == 0


async def test_every_operation_is_counted_and_timed() -> None:
    store = MetricsStore(MemoryStore(), clock=StepClock(0.001), sample_every=1)
    for call in CALLS.values():
        await call(store)
    metrics = store.get_metrics()
    for name in OPERATIONS:
        op = metrics.ops[name]
        assert (op.count, op.errors, op.samples) == (1, 0, 1), name
        assert op.max_ms > 0, name


async def test_concurrent_tasks_lose_no_counts() -> None:
    store = MetricsStore(MemoryStore(), sample_every=3)
    await store.set("hit", 1)

    async def worker(i: int) -> None:
        for j in range(100):
            await store.get("hit" if j % 2 else f"miss{i}")
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        for i in range(64):
            tg.start_soon(worker, i)
    metrics = store.get_metrics()
    assert (metrics.gets, metrics.hits, metrics.misses) == (6400, 3200, 3200)
    assert metrics.ops["get"].count == 6400
    assert metrics.ops["get"].samples == 1024  # the window is full, not larger


# -- latency ------------------------------------------------------------------------


async def test_exact_latency_with_a_stepping_clock() -> None:
    store = MetricsStore(MemoryStore(), clock=StepClock(0.002), sample_every=1)
    for i in range(10):
        await store.set(f"k{i}", i)
        await store.get(f"k{i}")
    for name in ("get", "set"):
        op = store.get_metrics().ops[name]
        assert op.count == 10 and op.samples == 10
        assert op.p50_ms == pytest.approx(2.0)
        assert op.p99_ms == pytest.approx(2.0)
        assert op.max_ms == pytest.approx(2.0)
    assert store.get_metrics().ops["delete"] == OpMetrics()


@pytest.mark.parametrize(
    ("latencies_ms", "p50", "p99"),
    [
        (list(range(1, 101)), 50, 99),
        (list(range(1, 1001)), 500, 990),
        ([7], 7, 7),
        ([1, 2], 1, 2),
        ([1] * 98 + [50, 80], 1, 50),
    ],
    ids=["1..100", "1..1000", "one", "two", "tail"],
)
async def test_percentiles_of_a_known_distribution(
    latencies_ms: list[int], p50: int, p99: int
) -> None:
    clock = ManualClock()
    store = MetricsStore(LaggyStore(clock), clock=clock, sample_every=1, window=1000)
    shuffled = list(latencies_ms)
    random.Random(42).shuffle(shuffled)
    for ms in shuffled:
        await store.get(f"ms:{ms}")
    op = store.get_metrics().ops["get"]
    assert op.samples == len(latencies_ms)
    assert op.p50_ms == pytest.approx(p50)
    assert op.p99_ms == pytest.approx(p99)
    assert op.max_ms == pytest.approx(max(latencies_ms))


async def test_window_is_bounded_and_keeps_the_latest_samples() -> None:
    clock = ManualClock()
    store = MetricsStore(LaggyStore(clock), clock=clock, sample_every=1, window=256)
    for _ in range(50):
        await store.get("ms:9")
    for _ in range(100_000):
        await store.get("ms:1")
    op = store.get_metrics().ops["get"]
    assert op.count == 100_050
    assert op.samples == 256
    assert len(store._ops["get"].samples) == 256  # the ring itself stopped growing
    # Percentiles cover the latest 256 calls; max covers everything since reset.
    assert op.p50_ms == pytest.approx(1.0) and op.p99_ms == pytest.approx(1.0)
    assert op.max_ms == pytest.approx(9.0)


@pytest.mark.parametrize("every", [1, 2, 3, 16])
@pytest.mark.parametrize("calls", [0, 1, 2, 15, 16, 17, 33, 100])
async def test_sampling_counts_every_call_and_times_one_in_n(every: int, calls: int) -> None:
    clock = StepClock(0.001)
    store = MetricsStore(MemoryStore(), clock=clock, sample_every=every)
    for _ in range(calls):
        await store.get("k")
        await store.ttl("k")
    for name in ("get", "ttl"):
        op = store.get_metrics().ops[name]
        assert op.count == calls
        # The 1st call is timed, then every `every`-th after it.
        assert op.samples == -(-calls // every)
    assert clock.reads == 2 * 2 * -(-calls // every)  # untimed calls never read the clock
    assert store.get_metrics().misses == calls


# -- errors -------------------------------------------------------------------------


@pytest.mark.parametrize("every", [1, 1000])
@pytest.mark.parametrize("name", OPERATIONS)
async def test_inner_errors_are_counted_and_reraised_unchanged(name: str, every: int) -> None:
    error = ConnectionError("backend down")
    store = MetricsStore(BrokenStore(error), clock=StepClock(0.001), sample_every=every)
    for _ in range(2):
        with pytest.raises(ConnectionError) as info:
            await CALLS[name](store)
        assert info.value is error
    assert isinstance(store.inner, KVStore)
    metrics = store.get_metrics()
    assert metrics.errors == 2
    assert (metrics.ops[name].count, metrics.ops[name].errors) == (2, 2)
    assert metrics.ops[name].samples == (2 if every == 1 else 1)  # failed calls are timed too
    assert (metrics.gets, metrics.sets, metrics.deletes, metrics.entries_yielded) == (0, 0, 0, 0)
    others = [op for other, op in metrics.ops.items() if other != name]
    assert all(op.count == 0 for op in others)


async def test_rejected_input_counts_as_an_error() -> None:
    store = MetricsStore(MemoryStore())
    with pytest.raises(InvalidKeyError):
        await store.get("")
    with pytest.raises(InvalidKeyError):
        await store.set("bad\x00key", 1)
    with pytest.raises(TypeError):
        await store.get_many("abc")  # a lone str reaches the inner store, which rejects it
    metrics = store.get_metrics()
    assert metrics.errors == 3
    assert metrics.ops["get"].errors == 1 and metrics.ops["get_many"].errors == 1
    assert metrics.gets == 0


async def test_update_fn_error_is_counted_and_propagates() -> None:
    class Boom(Exception):
        pass

    boom = Boom("from fn")

    def explode(value: Any) -> Any:
        raise boom

    store = MetricsStore(MemoryStore())
    with pytest.raises(Boom) as info:
        await store.update("k", explode, default=0)
    assert info.value is boom
    assert store.get_metrics().ops["update"].errors == 1
    assert await store.get("k", "absent") == "absent"


async def test_base_exceptions_pass_uncounted() -> None:
    class Stop(BaseException):
        pass

    store = MetricsStore(BrokenStore(Stop()), sample_every=1)
    with pytest.raises(Stop):
        await store.get("k")
    op = store.get_metrics().ops["get"]
    assert (op.count, op.errors) == (1, 0)


# -- entries ------------------------------------------------------------------------


async def test_entries_counts_yielded_items() -> None:
    store = MetricsStore(MemoryStore())
    await store.set_many({"a:1": 1, "a:2": 2, "b:1": 3})
    assert dict(await _drain(store.entries("a:"))) == {"a:1": 1, "a:2": 2}
    assert len(await _drain(store.entries())) == 3
    metrics = store.get_metrics()
    assert metrics.entries_yielded == 5
    assert metrics.ops["entries"].count == 2


async def test_breaking_out_of_entries_closes_the_inner_iteration() -> None:
    inner = TrackedStore()
    store = MetricsStore(inner)
    await store.set_many({f"k{i}": i for i in range(10)})
    async with aclosing(store.entries()) as rows:
        async for _ in rows:
            break
    assert inner.entries_closed
    assert store.get_metrics().entries_yielded == 1

    inner.entries_closed = False
    rows = store.entries()
    assert hasattr(rows, "aclose")
    await anext(rows)
    await anext(rows)
    await rows.aclose()
    assert inner.entries_closed
    assert store.get_metrics().entries_yielded == 3


async def test_entries_times_the_store_not_the_caller() -> None:
    clock = ManualClock()
    store = MetricsStore(MemoryStore(), clock=clock, sample_every=1)
    await store.set_many({"a": 1, "b": 2})
    async for _ in store.entries():
        clock.advance_by(0.5)  # the caller's own work between items
    op = store.get_metrics().ops["entries"]
    assert (op.count, op.samples, op.max_ms) == (1, 1, 0.0)

    stepping = MetricsStore(MemoryStore(), clock=StepClock(0.002), sample_every=1)
    await stepping.set_many({"a": 1, "b": 2})
    await _drain(stepping.entries())
    # Three steps of the inner iteration (two items, then its end), 2 ms each.
    assert stepping.get_metrics().ops["entries"].max_ms == pytest.approx(6.0)


# -- snapshot, reset, lifecycle ---------------------------------------------------------


async def test_snapshot_is_frozen_and_json_serialisable() -> None:
    store = MetricsStore(MemoryStore(), name="cache", clock=StepClock(0.001))
    await store.set("k", {"v": 1})
    await store.get("k")
    metrics = store.get_metrics()
    assert isinstance(metrics, StoreMetrics)
    with pytest.raises(dataclasses.FrozenInstanceError):
        metrics.hits = 5  # type: ignore[misc]
    data = json.loads(json.dumps(dataclasses.asdict(metrics)))
    assert data["hits"] == 1 and data["hit_ratio"] == 1.0
    assert data["name"] == "cache" and data["backend"] == "memory"
    assert data["ops"]["get"] == {
        "count": 1,
        "errors": 0,
        "p50_ms": pytest.approx(1.0),
        "p99_ms": pytest.approx(1.0),
        "max_ms": pytest.approx(1.0),
        "samples": 1,
    }
    await store.get("k")
    assert metrics.gets == 1  # a snapshot does not change afterwards


async def test_reset_metrics() -> None:
    store = MetricsStore(BrokenStore(ConnectionError("down")), sample_every=1)
    healthy = MetricsStore(MemoryStore(), sample_every=1)
    with pytest.raises(ConnectionError):
        await store.get("k")
    await healthy.set("k", 1)
    await healthy.get("k")
    await _drain(healthy.entries())
    for wrapped in (store, healthy):
        wrapped.reset_metrics()
        metrics = wrapped.get_metrics()
        zeroed = StoreMetrics(
            ops={name: OpMetrics() for name in OPERATIONS},
            name=None,
            backend=wrapped.backend,
        )
        assert metrics == zeroed
    assert await healthy.get("k") == 1  # data is untouched
    assert healthy.get_metrics().hits == 1
    assert healthy.get_metrics().ops["get"].samples == 1


async def test_async_with_and_aclose_forward_to_inner() -> None:
    class OpenTracked(MemoryStore):
        opened = False

        async def __aenter__(self) -> Self:
            self.opened = True
            return await super().__aenter__()

    inner = OpenTracked()
    async with MetricsStore(inner) as store:
        assert isinstance(store, MetricsStore)
        assert inner.opened
        await store.set("k", 1)
    assert inner.closed
    await store.aclose()  # idempotent
    await store.aclose()


async def test_wrapping_a_metrics_store_is_not_special() -> None:
    inner = MetricsStore(MemoryStore(), name="inner")
    outer = MetricsStore(inner, name="outer")
    await outer.set("k", 1)
    await outer.get("k")
    await inner.get("k")
    assert outer.get_metrics().gets == 1
    assert inner.get_metrics().gets == 2
    assert outer.backend == "memory"


# -- the service view ---------------------------------------------------------------


async def test_service_reports_every_store() -> None:
    async with StoreService(MemoryStore()) as service:
        sessions = service.get_store("sessions")
        cache = service.get_store("state_cache")
        service.get_store("idle")
        await sessions.set("s1", {"user": "u"})
        await sessions.get("s1")
        await cache.get("missing")
        await cache.get_many(["x", "y"])
        metrics = service.get_metrics()
        assert set(metrics) == {"sessions", "state_cache", "idle"}
        assert (metrics["sessions"].sets, metrics["sessions"].hits) == (1, 1)
        assert (metrics["state_cache"].misses, metrics["state_cache"].hit_ratio) == (3, 0.0)
        assert metrics["idle"].gets == 0
        assert {m.backend for m in metrics.values()} == {"memory"}
        assert {name: m.name for name, m in metrics.items()} == {n: n for n in metrics}
        json.dumps({name: dataclasses.asdict(m) for name, m in metrics.items()})


async def test_service_without_metrics_reports_nothing() -> None:
    async with StoreService(MemoryStore(), metrics=False) as service:
        await service.get_store("plain").set("k", 1)
        assert service.get_metrics() == {}


# -- the whole contract, with every call timed ------------------------------------------


class _TimedService:
    """Named MetricsStores timing every call, over one MemoryStore."""

    def __init__(self, clock: ManualClock, default_ttl: float | None) -> None:
        self._root = MemoryStore(clock=clock, default_ttl=default_ttl)
        self._plain = StoreService(self._root, metrics=False)
        self._stores: dict[str, MetricsStore] = {}

    def get_store(self, name: str) -> KVStore:
        store = self._stores.get(name)
        if store is None:
            store = MetricsStore(self._plain.get_store(name), name=name, sample_every=1)
            self._stores[name] = store
        return store

    async def aclose(self) -> None:
        for store in self._stores.values():
            await store.aclose()
        await self._plain.aclose()


class TestTimedMetricsContract(KVStoreContract):
    """The KVStore contract through MetricsStore's timed path (tests/test_contract.py
    covers the default, sampled one via StoreService)."""

    @pytest.fixture
    def kv_backend(self) -> ContractBackend:
        clock = ManualClock()

        def open_service(default_ttl: float | None = None) -> KVStoreService:
            return _TimedService(clock, default_ttl)

        return ContractBackend(open_service, advance=clock.advance, ttl_unit=10.0)


class UpperCaseStore(MemoryStore):
    """A MemoryStore subclass with its own get and set: MetricsStore must call those."""

    async def get(self, key: str, default: Any = None) -> Any:
        value = await super().get(key, default)
        return value.upper() if isinstance(value, str) else value

    async def set(
        self, key: str, value: Any, *, ttl: float | None = None, keep_ttl: bool = False
    ) -> None:
        changed = value + "!" if isinstance(value, str) else value
        await super().set(key, changed, ttl=ttl, keep_ttl=keep_ttl)


async def test_memory_fast_path_counts_like_the_awaited_one() -> None:
    plain = MetricsStore(MemoryStore(), sample_every=1)
    await plain.set("a", {"n": 1})
    assert await plain.get("a") == {"n": 1}
    assert await plain.get("b", "dflt") == "dflt"
    with pytest.raises(InvalidKeyError):
        await plain.get("")
    metrics = plain.get_metrics()
    assert (metrics.hits, metrics.misses, metrics.sets) == (1, 1, 1)
    assert metrics.ops["get"].errors == 1 and metrics.ops["get"].samples == 3


async def test_a_subclass_overriding_get_and_set_is_called() -> None:
    store = MetricsStore(UpperCaseStore())
    await store.set("k", "value")
    assert await store.get("k") == "VALUE!"
    assert store.get_metrics().hits == 1
