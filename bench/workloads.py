"""The workloads, their sizes, and how each is timed.

One *round* runs every workload once against an opened system, in an order
where each one finds the data it needs: sequential set, get (hits), get
(misses), iterate all, the 64-task mix; then, on an empty store, bulk
set_many / get_many; then 64 concurrent writers. Timings use
``time.perf_counter``; a round's figures are rates (operations or keys per
second), and the run keeps the best round of each workload.
"""

from __future__ import annotations

import asyncio
import gc
import random
from collections.abc import Awaitable
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Final

from .systems import Ops

__all__ = [
    "WORKLOADS",
    "Dataset",
    "Measurement",
    "Scale",
    "Workload",
    "best_of",
    "make_value",
    "mixed",
    "run_round",
    "sequential_get",
    "sequential_set",
    "warm_up",
]


@dataclass(frozen=True, slots=True)
class Workload:
    """A workload's name, what it counts, a column heading and a one-line description."""

    name: str
    unit: str
    heading: str
    title: str


WORKLOADS: Final = (
    Workload("set", "ops/s", "set", "sequential set, one await after the other"),
    Workload("get_hit", "ops/s", "get hit", "sequential get of present keys"),
    Workload("get_miss", "ops/s", "get miss", "sequential get of absent keys"),
    Workload("mixed_64", "ops/s", "mix 64", "64 tasks, 80 % get / 20 % set of present keys"),
    Workload("set_many", "keys/s", "set_many", "set_many of 100 keys a call"),
    Workload("get_many", "keys/s", "get_many", "get_many of 100 keys a call"),
    Workload("iterate", "keys/s", "iterate", "iterate every entry, values decoded"),
    Workload("writes_64", "ops/s", "writes 64", "64 tasks each setting its own new keys"),
)


@dataclass(frozen=True, slots=True)
class Scale:
    """How big the run is; ``--quick`` scales every count down."""

    keys: int
    mixed_ops: int
    writes: int
    rounds_memory: int
    rounds_io: int
    server_requests: int
    tasks: int = 64
    get_share: float = 0.8
    bulk_size: int = 100

    @classmethod
    def for_run(cls, *, quick: bool) -> Scale:
        """The full run, or the quick one (< 2 minutes on 2 cores)."""
        if quick:
            return cls(
                keys=2_000,
                mixed_ops=5_000,
                writes=2_000,
                rounds_memory=8,
                rounds_io=2,
                server_requests=20_000,
            )
        return cls(
            keys=20_000,
            mixed_ops=50_000,
            writes=10_000,
            rounds_memory=5,
            rounds_io=3,
            server_requests=100_000,
        )


@dataclass(frozen=True, slots=True)
class Measurement:
    """One workload's figures: a rate, and per-operation latency where measured."""

    rate: float
    seconds: float
    p50_us: float | None = None
    p99_us: float | None = None


def make_value(i: int) -> dict[str, Any]:
    """A state-cache entry, as an agent runtime caches per message (213-215 bytes as JSON)."""
    return {
        "agentId": "agent-7",
        "roomId": f"room-{i % 97:02d}",
        "text": "What is the weather like in Lisbon today?",
        "values": {"mood": "curious", "turn": i % 1000, "score": 0.75},
        "providers": ["time", "facts", "recentMessages"],
        "createdAt": 1_732_530_000_000 + i % 1000,
    }


@dataclass(frozen=True, slots=True)
class Dataset:
    """Keys, values and the 64-task schedule, built once so rounds time only the store."""

    keys: list[str]
    values: list[dict[str, Any]]
    missing: list[str]
    schedules: list[list[tuple[bool, int]]]
    writer_keys: list[list[str]]

    @classmethod
    def build(cls, scale: Scale, seed: int = 20_251_025) -> Dataset:
        """Deterministic data: the same keys and schedule for every system."""
        rng = random.Random(seed)
        per_task = scale.mixed_ops // scale.tasks
        schedules = [
            [(rng.random() < scale.get_share, rng.randrange(scale.keys)) for _ in range(per_task)]
            for _ in range(scale.tasks)
        ]
        return cls(
            keys=[f"msg:{i:08d}" for i in range(scale.keys)],
            values=[make_value(i) for i in range(scale.keys)],
            missing=[f"nokey:{i:08d}" for i in range(scale.keys)],
            schedules=schedules,
            writer_keys=[
                [f"w:{task:02d}:{i:06d}" for i in range(scale.writes // scale.tasks)]
                for task in range(scale.tasks)
            ],
        )


async def warm_up(ops: Ops, data: Dataset, count: int = 200) -> None:
    """Exercise every operation on a few keys: connections open, code paths warm."""
    keys, values = data.keys[:count], data.values[:count]
    for key, value in zip(keys, values, strict=True):
        await ops.set(key, value)
        await ops.get(key)
    await ops.set_many(dict(zip(keys, values, strict=True)))
    await ops.get_many(keys)
    if ops.count_all is not None:
        await ops.count_all()
    await ops.clear()


async def run_round(ops: Ops, data: Dataset, scale: Scale) -> dict[str, Measurement]:
    """Run every workload once on *ops*; the store is left empty."""
    results: dict[str, Measurement] = {}
    await ops.clear()
    results["set"] = await _timed(sequential_set(ops, data.keys, data.values), len(data.keys))
    results["get_hit"] = await _timed(sequential_get(ops, data.keys), len(data.keys))
    results["get_miss"] = await _timed(sequential_get(ops, data.missing), len(data.missing))
    if ops.count_all is not None:
        gc.collect()
        start = perf_counter()
        seen = await ops.count_all()
        results["iterate"] = _rate(seen, perf_counter() - start)
        if seen != len(data.keys):
            raise RuntimeError(f"iterate saw {seen} entries, expected {len(data.keys)}")
    results["mixed_64"] = await mixed(ops, data)
    await ops.clear()
    results["set_many"], results["get_many"] = await _bulk(ops, data, scale.bulk_size)
    await ops.clear()
    results["writes_64"] = await _writers(ops, data)
    await ops.clear()
    return results


def best_of(rounds: list[dict[str, Measurement]]) -> dict[str, Measurement]:
    """The fastest round of each workload (the least disturbed by the rest of the machine)."""
    best: dict[str, Measurement] = {}
    for results in rounds:
        for name, measured in results.items():
            if name not in best or measured.rate > best[name].rate:
                best[name] = measured
    return best


def _rate(count: int, seconds: float) -> Measurement:
    return Measurement(rate=count / seconds, seconds=seconds)


async def _timed(work: Awaitable[object], count: int) -> Measurement:
    gc.collect()
    start = perf_counter()
    await work
    return _rate(count, perf_counter() - start)


async def sequential_set(ops: Ops, keys: list[str], values: list[dict[str, Any]]) -> None:
    """Set each key to its value, one await after the other."""
    set_ = ops.set
    for key, value in zip(keys, values, strict=True):
        await set_(key, value)


async def sequential_get(ops: Ops, keys: list[str]) -> None:
    """Get each key, one await after the other."""
    get = ops.get
    for key in keys:
        await get(key)


async def mixed(ops: Ops, data: Dataset) -> Measurement:
    """64 tasks over the loaded keys; per-operation latency from each await."""
    get, set_ = ops.get, ops.set
    keys, values = data.keys, data.values
    latencies: list[float] = []
    record = latencies.append

    async def worker(schedule: list[tuple[bool, int]]) -> None:
        for is_get, i in schedule:
            start = perf_counter()
            if is_get:
                await get(keys[i])
            else:
                await set_(keys[i], values[i])
            record(perf_counter() - start)

    gc.collect()
    start = perf_counter()
    async with asyncio.TaskGroup() as group:
        for schedule in data.schedules:
            group.create_task(worker(schedule))
    elapsed = perf_counter() - start
    latencies.sort()
    return Measurement(
        rate=len(latencies) / elapsed,
        seconds=elapsed,
        p50_us=latencies[len(latencies) // 2] * 1e6,
        p99_us=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e6,
    )


async def _bulk(ops: Ops, data: Dataset, size: int) -> tuple[Measurement, Measurement]:
    chunks: list[tuple[list[str], dict[str, Any]]] = []
    for i in range(0, len(data.keys), size):
        keys = data.keys[i : i + size]
        chunks.append((keys, dict(zip(keys, data.values[i : i + size], strict=True))))
    gc.collect()
    start = perf_counter()
    for _keys, mapping in chunks:
        await ops.set_many(mapping)
    wrote = _rate(len(data.keys), perf_counter() - start)
    gc.collect()
    start = perf_counter()
    for keys, _mapping in chunks:
        await ops.get_many(keys)
    return wrote, _rate(len(data.keys), perf_counter() - start)


async def _writers(ops: Ops, data: Dataset) -> Measurement:
    """One task per key list, each writing its new keys, all at once."""
    set_ = ops.set
    value = data.values[0]

    async def writer(keys: list[str]) -> None:
        for key in keys:
            await set_(key, value)

    gc.collect()
    start = perf_counter()
    async with asyncio.TaskGroup() as group:
        for keys in data.writer_keys:
            group.create_task(writer(keys))
    return _rate(sum(map(len, data.writer_keys)), perf_counter() - start)
