"""Sequential ``RedisStore`` calls against raw redis-py, and the cost of ``update()``.

Both clients talk to the same private server and store the same value
(``workloads.make_value``, orjson-encoded). Rounds alternate blocks of calls
between the two, so a burst of load elsewhere on the machine hits both alike;
the figure is the ratio of their total times (``ratio`` > 1: ours is faster).
``update`` is timed sequentially on one key and with 64 tasks on one key and
on 64 keys (counted increments; the result is checked).

    python bench/redis_overheads.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import orjson

__all__ = ["main", "measure"]

TASKS: Final = 64


async def _alternate(
    calls: dict[str, Callable[[str], Awaitable[object]]], keys: list[str], blocks: int
) -> dict[str, float]:
    spent = dict.fromkeys(calls, 0.0)
    order = list(calls)
    for block in range(blocks):
        for name in order if block % 2 == 0 else order[::-1]:
            call = calls[name]
            start = time.perf_counter()
            for key in keys:
                await call(key)
            spent[name] += time.perf_counter() - start
    return spent


async def _updates(store: Any, mode: str, count: int) -> float:
    keys = ["u"] if mode != "c64_many" else [f"u{i}" for i in range(TASKS)]
    tasks = 1 if mode == "seq" else TASKS
    per = count // tasks

    async def worker(key: str) -> None:
        for _ in range(per):
            await store.update(key, lambda n: n + 1, default=0)

    await store.clear()
    start = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for i in range(tasks):
            group.create_task(worker(keys[i % len(keys)]))
    elapsed = time.perf_counter() - start
    found = await store.get_many(keys)
    if sum(found.values()) != per * tasks:
        raise RuntimeError(f"update lost increments: {found}")
    return per * tasks / elapsed


async def measure(quick: bool = False, redis_url: str | None = None) -> dict[str, float]:
    """Figures: ``{get,set}.ratio`` (raw time / ours), ``{get,set}.{ours,raw}.ops_per_s``,
    ``update.{seq,c64_one,c64_many}.ops_per_s``. Starts its own server without *redis_url*."""
    if redis_url is None:
        from kvstore.testing.redis_server import RedisServer

        with RedisServer() as server:
            return await measure(quick, server.url)
    import redis.asyncio

    from kvstore import RedisStore

    from .workloads import make_value

    value = make_value(1)
    keys = [f"seq:{i:06d}" for i in range(200 if quick else 500)]
    blocks = 6 if quick else 30
    store = RedisStore(redis_url, namespace="overheads")
    raw = redis.asyncio.Redis.from_url(redis_url)
    dumps, loads = orjson.dumps, orjson.loads

    async def raw_get(key: str) -> Any:
        stored = await raw.get(key)
        return None if stored is None else loads(stored)

    async def raw_set(key: str) -> None:
        await raw.set(key, dumps(value))

    async def our_set(key: str) -> None:
        await store.set(key, value)

    figures: dict[str, float] = {}
    Calls = dict[str, Callable[[str], Awaitable[object]]]
    table: list[tuple[str, Calls]] = [
        ("set", {"ours": our_set, "raw": raw_set}),
        ("get", {"ours": store.get, "raw": raw_get}),
    ]
    try:
        for op, calls in table:
            spent = await _alternate(calls, keys, blocks)
            figures[f"{op}.ratio"] = spent["raw"] / spent["ours"]
            for name, seconds in spent.items():
                figures[f"{op}.{name}.ops_per_s"] = len(keys) * blocks / seconds
        count = 640 if quick else 3200
        for mode in ("seq", "c64_one", "c64_many"):
            figures[f"update.{mode}.ops_per_s"] = await _updates(store, mode, count)
    finally:
        await store.aclose()
        await raw.aclose()
    return figures


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line, run :func:`measure`, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer calls and rounds")
    args = parser.parse_args(argv)
    for name, figure in asyncio.run(measure(args.quick)).items():
        print(f"{name:<28} {figure:,.3f}")


if __name__ == "__main__":
    main()
