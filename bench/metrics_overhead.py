"""How much slower MetricsStore(MemoryStore()) is than a bare MemoryStore.

Measures ``get`` and ``set``, sequentially (one task) and with 64 concurrent
tasks, for scalar values (an int: the memory backend's fastest path) and small
dict values (one JSON round trip per call), and reports the best of several
rounds. Four stores are compared: the bare MemoryStore; a
:class:`~kvstore.wrapper.StoreWrapper`, which only forwards calls (the floor of
any decorator); MetricsStore with its default sampling (every call counted,
one in 16 timed); MetricsStore timing every call (``sample_every=1``).

    python bench/metrics_overhead.py [--quick]

Rounds interleave the stores, so a burst of load from another process on the
machine hits all of them alike; the best round is the least disturbed one.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import anyio

from kvstore import KVStore, MemoryStore, MetricsStore
from kvstore.wrapper import StoreWrapper

__all__ = ["main", "measure"]

TASKS: Final = 64
KEYS: Final = 1000
VALUES: Final[dict[str, Any]] = {
    "scalar": 12345,
    "dict": {"user": "u-42", "count": 7, "tags": ["a", "b"]},
}


STORES: Final[dict[str, Callable[[], KVStore]]] = {
    "bare": MemoryStore,
    "forward": lambda: StoreWrapper(MemoryStore()),
    "metrics": lambda: MetricsStore(MemoryStore()),
    "metrics_time_all": lambda: MetricsStore(MemoryStore(), sample_every=1),
}


async def _sequential(store: KVStore, op: str, keys: Sequence[str], value: Any) -> float:
    """Seconds to run *op* once per key in one task."""
    start = time.perf_counter()
    if op == "get":
        get = store.get
        for key in keys:
            await get(key)
    else:
        put = store.set
        for key in keys:
            await put(key, value)
    return time.perf_counter() - start


async def _concurrent(store: KVStore, op: str, keys: Sequence[str], value: Any) -> float:
    """Seconds to run *op* once per key, the keys split among TASKS tasks."""
    share = len(keys) // TASKS
    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for i in range(TASKS):
            tg.start_soon(_sequential, store, op, keys[i * share : (i + 1) * share], value)
    return time.perf_counter() - start


async def measure(quick: bool = False) -> dict[str, float]:
    """Run the benchmark and return its figures.

    Keys are ``"{op}.{value}.{mode}.{store}.ops_per_s"`` and, for every
    store but the bare one, ``"{op}.{value}.{mode}.{store}.overhead_pct"``
    (extra time per call against the bare store in percent: 10.0 means each
    call takes 1.10 times as long). ``op`` is ``get`` or
    ``set``; ``value`` is ``scalar`` or ``dict``; ``mode`` is ``seq`` or
    ``c64``; ``store`` is ``bare``, ``forward``, ``metrics`` or ``metrics_time_all``.
    *quick* runs 20k operations per measurement and 3 rounds instead of
    200k and 7.
    """
    ops_per_run = 20_000 if quick else 200_000
    rounds = 3 if quick else 7
    keys = [f"key:{i % KEYS}" for i in range(ops_per_run - ops_per_run % TASKS)]
    modes = {"seq": _sequential, "c64": _concurrent}
    best: dict[str, float] = {}
    for _ in range(rounds):
        for op in ("get", "set"):
            for value_kind, value in VALUES.items():
                for mode, run in modes.items():
                    for store_kind, factory in STORES.items():
                        store = factory()
                        await store.set_many({f"key:{i}": value for i in range(KEYS)})
                        gc.collect()
                        seconds = await run(store, op, keys, value)
                        await store.aclose()
                        label = f"{op}.{value_kind}.{mode}.{store_kind}"
                        best[label] = min(best.get(label, float("inf")), seconds)
    figures: dict[str, float] = {}
    for label, seconds in best.items():
        figures[f"{label}.ops_per_s"] = len(keys) / seconds
        prefix, store_kind = label.rsplit(".", 1)
        if store_kind != "bare":
            bare = best[f"{prefix}.bare"]
            figures[f"{label}.overhead_pct"] = (seconds / bare - 1.0) * 100.0
    return figures


def _report(figures: dict[str, float]) -> str:
    header = f"{'op':<4} {'value':<7} {'mode':<5} {'bare ops/s':>11}"
    for store_kind in list(STORES)[1:]:
        header += f" {store_kind + ' ops/s':>23} {'overhead':>9}"
    lines = [header]
    for op in ("get", "set"):
        for value_kind in VALUES:
            for mode in ("seq", "c64"):
                base = f"{op}.{value_kind}.{mode}"
                line = (
                    f"{op:<4} {value_kind:<7} {mode:<5} {figures[f'{base}.bare.ops_per_s']:>11,.0f}"
                )
                for store_kind in list(STORES)[1:]:
                    line += (
                        f" {figures[f'{base}.{store_kind}.ops_per_s']:>23,.0f}"
                        f" {figures[f'{base}.{store_kind}.overhead_pct']:>+8.1f}%"
                    )
                lines.append(line)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line, run :func:`measure` and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer operations and rounds")
    args = parser.parse_args(argv)
    figures = anyio.run(measure, args.quick)
    print("MetricsStore overhead against a bare MemoryStore (best round; + is slower)")
    print(_report(figures))


if __name__ == "__main__":
    main()
