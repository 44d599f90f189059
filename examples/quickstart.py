"""Quickstart: a store service, basic operations, TTLs, atomic updates and metrics.

Runs on the in-memory default; set KV_STORE_BACKEND=sqlite or
KV_STORE_BACKEND=redis (with REDIS_URL) to run the same code on another backend.
"""

from __future__ import annotations

import sys

import anyio

from kvstore import KVStoreError, service_from_env


async def main() -> None:
    async with service_from_env() as service:
        store = service.get_store("quickstart")
        await store.clear()

        await store.set("user:1", {"name": "Ada", "langs": ["python"]})
        await store.set("greeting", "hello", ttl=60)
        print("user:1   ->", await store.get("user:1"))
        remaining = await store.ttl("greeting")
        print("greeting ->", await store.get("greeting"), f"(expires in {remaining:.0f}s)")
        print("missing  ->", await store.get("missing", "<default>"))

        await store.set_many({"user:2": {"name": "Grace"}, "user:3": {"name": "Linus"}})
        print("get_many ->", await store.get_many(["user:1", "user:2", "nobody"]))

        hits = 0
        for _ in range(3):
            hits = await store.update("counter", lambda n: n + 1, default=0)
        print("counter  ->", hits)
        print("add      ->", await store.add("lock", "me"), await store.add("lock", "you"))

        users = sorted([key async for key, _ in store.entries("user:")])
        print("entries  ->", users)
        print("deleted  ->", await store.delete_many(["user:2", "user:3"]))

        metrics = service.get_metrics()["quickstart"]
        print(
            f"metrics  -> backend={metrics.backend} gets={metrics.gets} hits={metrics.hits}"
            f" misses={metrics.misses} hit_ratio={metrics.hit_ratio:.2f} sets={metrics.sets}"
            f" deletes={metrics.deletes} errors={metrics.errors}"
        )
        for op, figures in metrics.ops.items():
            if figures.count:
                print(
                    f"  {op:<12} count={figures.count:<3} p50={figures.p50_ms:.3f} ms"
                    f" p99={figures.p99_ms:.3f} ms max={figures.max_ms:.3f} ms"
                )


if __name__ == "__main__":
    try:
        anyio.run(main)
    except KVStoreError as err:  # bad KV_STORE_* settings or an unreachable backend
        sys.exit(f"quickstart: {err}")
