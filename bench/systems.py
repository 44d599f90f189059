"""The systems under test, each reduced to the same five async operations.

An adapter binds a library's own methods directly where its call already has
the benchmark's shape (``get(key)``, ``set(key, value)``, ...) and wraps only
where a translation is needed, so no system pays for an extra layer another
one does not. Every adapter stores the same JSON-compatible dict; the
``serializer`` text says how each one copies it (see bench/README.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import orjson

if TYPE_CHECKING:
    from kvstore import KVStore

__all__ = ["SYSTEMS", "Context", "Family", "Ops", "SkipSystem", "SystemSpec", "kvstore_ops"]

Family = Literal["memory", "redis", "sqlite"]


class SkipSystem(Exception):
    """A system cannot run here (driver missing, no server); the message says why."""


@dataclass(frozen=True, slots=True)
class Context:
    """What openers need from the run: the Redis URL and a scratch directory."""

    redis_url: str | None
    tmpdir: Path


@dataclass(frozen=True, slots=True)
class Ops:
    """One opened system: the benchmark's operations bound to it.

    ``count_all`` iterates every entry (decoding each value) and returns how
    many it saw; None when the library has no way to iterate all entries.
    """

    get: Callable[[str], Awaitable[object]]
    set: Callable[[str, Any], Awaitable[object]]
    set_many: Callable[[dict[str, Any]], Awaitable[object]]
    get_many: Callable[[list[str]], Awaitable[object]]
    count_all: Callable[[], Awaitable[int]] | None
    clear: Callable[[], Awaitable[object]]
    close: Callable[[], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class SystemSpec:
    """A named system: how to open it and how it serialises values.

    ``role`` is ``"ours"`` (this project), ``"peer"`` (a library compared in the
    ratios), ``"floor"`` (the least work possible) or ``"reference"`` (shown for
    context, e.g. a peer in its default configuration that shares objects).
    """

    name: str
    family: Family
    role: Literal["ours", "peer", "floor", "reference"]
    serializer: str
    open: Callable[[Context], Awaitable[Ops]]


async def _count(entries: AsyncIterator[Any]) -> int:
    count = 0
    async for _item in entries:
        count += 1
    return count


# -- this project -------------------------------------------------------------------------


def kvstore_ops(store: KVStore, *, metrics: bool = False) -> Ops:
    """Bind one of this project's stores, wrapped in ``MetricsStore`` if *metrics*."""
    if metrics:
        from kvstore import MetricsStore

        store = MetricsStore(store)

    async def count_all() -> int:
        return await _count(store.entries())

    return Ops(
        get=store.get,
        set=store.set,
        set_many=store.set_many,
        get_many=store.get_many,
        count_all=count_all,
        clear=store.clear,
        close=store.aclose,
    )


def _kvstore_memory(*, metrics: bool) -> Callable[[Context], Awaitable[Ops]]:
    async def open_(ctx: Context) -> Ops:
        from kvstore import MemoryStore

        return kvstore_ops(MemoryStore(), metrics=metrics)

    return open_


def _kvstore_sqlite(*, metrics: bool) -> Callable[[Context], Awaitable[Ops]]:
    async def open_(ctx: Context) -> Ops:
        from kvstore import SQLiteStore

        name = "kvstore-metrics.db" if metrics else "kvstore.db"
        return kvstore_ops(SQLiteStore(str(ctx.tmpdir / name)), metrics=metrics)

    return open_


def _kvstore_redis(*, metrics: bool) -> Callable[[Context], Awaitable[Ops]]:
    async def open_(ctx: Context) -> Ops:
        from kvstore import RedisStore

        return kvstore_ops(RedisStore(_redis_url(ctx)), metrics=metrics)

    return open_


# -- floors: an async def around a plain dict ---------------------------------------------


async def _open_dict(ctx: Context) -> Ops:
    data: dict[str, Any] = {}

    async def get(key: str) -> Any:
        return data.get(key)

    async def set_(key: str, value: Any) -> None:
        data[key] = value

    async def set_many(items: dict[str, Any]) -> None:
        data.update(items)

    async def get_many(keys: list[str]) -> dict[str, Any]:
        return {key: data[key] for key in keys if key in data}

    async def entries() -> AsyncIterator[tuple[str, Any]]:
        for item in list(data.items()):
            yield item

    async def count_all() -> int:
        return await _count(entries())

    async def clear() -> None:
        data.clear()

    return Ops(get, set_, set_many, get_many, count_all, clear, clear)


async def _open_dict_orjson(ctx: Context) -> Ops:
    # The least a store can do and still never share a mutable value with the
    # caller (the KVStore contract): one orjson round trip per value.
    data: dict[str, bytes] = {}
    dumps, loads = orjson.dumps, orjson.loads

    async def get(key: str) -> Any:
        stored = data.get(key)
        return None if stored is None else loads(stored)

    async def set_(key: str, value: Any) -> None:
        data[key] = dumps(value)

    async def set_many(items: dict[str, Any]) -> None:
        data.update({key: dumps(value) for key, value in items.items()})

    async def get_many(keys: list[str]) -> dict[str, Any]:
        return {key: loads(data[key]) for key in keys if key in data}

    async def entries() -> AsyncIterator[tuple[str, Any]]:
        for key, stored in list(data.items()):
            yield key, loads(stored)

    async def count_all() -> int:
        return await _count(entries())

    async def clear() -> None:
        data.clear()

    return Ops(get, set_, set_many, get_many, count_all, clear, clear)


# -- py-key-value-aio -------------------------------------------------------------------------


def _key_value_ops(
    store: Any, clear: Callable[[], Awaitable[object]], close: Callable[[], Awaitable[object]]
) -> Ops:
    async def set_many(items: dict[str, Any]) -> None:
        await store.put_many(list(items), list(items.values()))

    # keys() returns at most 10 000 keys and has no cursor, so there is no way
    # to iterate every entry of a larger collection.
    return Ops(store.get, store.put, set_many, store.get_many, None, clear, close)


async def _open_key_value_memory(ctx: Context) -> Ops:
    from key_value.aio.stores.memory import MemoryStore

    store = MemoryStore()

    async def clear() -> None:
        # destroy() would drop the collection for good; delete page by page instead.
        while keys := await store.keys():
            await store.delete_many(keys)

    return _key_value_ops(store, clear, clear)


async def _open_key_value_redis(ctx: Context) -> Ops:
    from key_value.aio.stores.redis import RedisStore

    store = RedisStore(url=_redis_url(ctx))
    return _key_value_ops(store, store.destroy, store.close)


# -- aiocache ---------------------------------------------------------------------------------


def _aiocache_ops(cache: Any) -> Ops:
    async def set_many(items: dict[str, Any]) -> None:
        await cache.multi_set(list(items.items()))

    # aiocache has no API to iterate the entries of a cache.
    return Ops(cache.get, cache.set, set_many, cache.multi_get, None, cache.clear, cache.close)


async def _open_aiocache_memory(ctx: Context) -> Ops:
    from aiocache import SimpleMemoryCache
    from aiocache.serializers import JsonSerializer

    # timeout=None: the default (5 s) wraps every call in asyncio.wait_for.
    return _aiocache_ops(SimpleMemoryCache(serializer=JsonSerializer(), timeout=None))


async def _open_aiocache_memory_defaults(ctx: Context) -> Ops:
    from aiocache import SimpleMemoryCache

    return _aiocache_ops(SimpleMemoryCache())


async def _open_aiocache_redis(ctx: Context) -> Ops:
    from aiocache import RedisCache

    host, port = _host_port(_redis_url(ctx))
    return _aiocache_ops(RedisCache(endpoint=host, port=port, timeout=None))


# -- cashews ----------------------------------------------------------------------------------


async def _cashews_ops(settings_url: str) -> Ops:
    from cashews import Cache

    cache = Cache()
    cache.setup(settings_url)
    await cache.init()

    async def get_many(keys: list[str]) -> Any:
        return await cache.get_many(*keys)

    async def count_all() -> int:
        return await _count(cache.get_match("*"))

    return Ops(cache.get, cache.set, cache.set_many, get_many, count_all, cache.clear, cache.close)


async def _open_cashews_memory(ctx: Context) -> Ops:
    # The default size (1000 entries, LRU) would evict most of the working set.
    return await _cashews_ops("mem://?size=10000000&pickle_type=json")


async def _open_cashews_memory_defaults(ctx: Context) -> Ops:
    return await _cashews_ops("mem://?size=10000000")


async def _open_cashews_redis(ctx: Context) -> Ops:
    # The redis:// default serializer is pickle; JSON keeps the comparison fair
    # (and nothing here unpickles data read from a server).
    return await _cashews_ops(f"{_redis_url(ctx)}?pickle_type=json")


# -- raw drivers --------------------------------------------------------------------------------


async def _open_redis_py(ctx: Context) -> Ops:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(_redis_url(ctx))
    dumps, loads = orjson.dumps, orjson.loads

    async def get(key: str) -> Any:
        stored = await client.get(key)
        return None if stored is None else loads(stored)

    async def set_(key: str, value: Any) -> None:
        await client.set(key, dumps(value))

    async def set_many(items: dict[str, Any]) -> None:
        async with client.pipeline(transaction=False) as pipe:
            for key, value in items.items():
                pipe.set(key, dumps(value))
            await pipe.execute()

    async def get_many(keys: list[str]) -> dict[str, Any]:
        async with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.get(key)
            found = await pipe.execute()
        return {key: loads(raw) for key, raw in zip(keys, found, strict=True) if raw is not None}

    async def count_all() -> int:
        count, cursor = 0, 0
        while True:
            cursor, keys = await client.scan(cursor, count=1000)
            for raw in await client.mget(keys) if keys else ():
                if raw is not None:
                    loads(raw)
                    count += 1
            if cursor == 0:
                return count

    async def clear() -> None:
        await client.flushdb()

    return Ops(get, set_, set_many, get_many, count_all, clear, client.aclose)


# Matched to SQLiteStore: WAL, and synchronous=FULL so a commit is durable on return.
AIOSQLITE_PRAGMAS: Final = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL")
_UPSERT: Final = "INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)"


async def _open_aiosqlite(ctx: Context) -> Ops:
    import aiosqlite

    db = await aiosqlite.connect(ctx.tmpdir / "aiosqlite.db")
    # Tasks sharing a connection share its transaction: without the lock one
    # task's commit would also commit the others' pending writes (a group
    # commit by accident, and a broken one: a failure would mix them up).
    write_lock = asyncio.Lock()
    for pragma in AIOSQLITE_PRAGMAS:
        await db.execute(pragma)
    await db.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL)")
    await db.commit()
    dumps, loads = orjson.dumps, orjson.loads

    async def get(key: str) -> Any:
        async with db.execute("SELECT value FROM kv WHERE key = ?", (key,)) as cursor:
            row = await cursor.fetchone()
        return None if row is None else loads(row[0])

    async def set_(key: str, value: Any) -> None:
        async with write_lock:
            await db.execute(_UPSERT, (key, dumps(value)))
            await db.commit()

    async def set_many(items: dict[str, Any]) -> None:
        rows = [(key, dumps(value)) for key, value in items.items()]
        async with write_lock:
            await db.executemany(_UPSERT, rows)
            await db.commit()

    async def get_many(keys: list[str]) -> dict[str, Any]:
        marks = ", ".join("?" * len(keys))
        sql = f"SELECT key, value FROM kv WHERE key IN ({marks})"
        async with db.execute(sql, keys) as cursor:
            return {key: loads(raw) async for key, raw in cursor}

    async def count_all() -> int:
        count = 0
        async with db.execute("SELECT key, value FROM kv") as cursor:
            async for _key, raw in cursor:
                loads(raw)
                count += 1
        return count

    async def clear() -> None:
        async with write_lock:
            await db.execute("DELETE FROM kv")
            await db.commit()

    return Ops(get, set_, set_many, get_many, count_all, clear, db.close)


def _redis_url(ctx: Context) -> str:
    if ctx.redis_url is None:
        raise SkipSystem("no redis-server for this run")
    return ctx.redis_url


def _host_port(url: str) -> tuple[str, int]:
    host, _, port = url.split("://", 1)[1].split("/", 1)[0].rpartition(":")
    return host, int(port)


_KV_MEMORY: Final = "orjson for containers (scalars kept as they are)"
_KV_REDIS: Final = "orjson; auto-pipelining on"
_KV_SQLITE: Final = "orjson; WAL, synchronous=FULL, group commit"
_METRICS: Final = "; wrapped in MetricsStore (default settings)"

SYSTEMS: Final[tuple[SystemSpec, ...]] = (
    # memory
    SystemSpec("kvstore-memory", "memory", "ours", _KV_MEMORY, _kvstore_memory(metrics=False)),
    SystemSpec(
        "kvstore-memory+metrics",
        "memory",
        "ours",
        _KV_MEMORY + _METRICS,
        _kvstore_memory(metrics=True),
    ),
    SystemSpec("dict", "memory", "floor", "none: stores the caller's object", _open_dict),
    SystemSpec("dict+orjson", "memory", "floor", "orjson round trip", _open_dict_orjson),
    SystemSpec(
        "key-value-memory",
        "memory",
        "peer",
        "stdlib json of a ManagedEntry (value + timestamps)",
        _open_key_value_memory,
    ),
    SystemSpec(
        "aiocache-memory", "memory", "peer", "JsonSerializer (stdlib json)", _open_aiocache_memory
    ),
    SystemSpec("cashews-memory", "memory", "peer", "pickle_type=json", _open_cashews_memory),
    SystemSpec(
        "aiocache-memory-defaults",
        "memory",
        "reference",
        "defaults: no serializer (shares objects), 5 s timeout per call",
        _open_aiocache_memory_defaults,
    ),
    SystemSpec(
        "cashews-memory-defaults",
        "memory",
        "reference",
        "defaults: no serializer (shallow copy on set)",
        _open_cashews_memory_defaults,
    ),
    # redis
    SystemSpec("kvstore-redis", "redis", "ours", _KV_REDIS, _kvstore_redis(metrics=False)),
    SystemSpec(
        "kvstore-redis+metrics", "redis", "ours", _KV_REDIS + _METRICS, _kvstore_redis(metrics=True)
    ),
    SystemSpec(
        "redis-py",
        "redis",
        "floor",
        "orjson; single awaited commands, pipeline for bulk, SCAN+MGET to iterate",
        _open_redis_py,
    ),
    SystemSpec(
        "key-value-redis",
        "redis",
        "peer",
        "stdlib json of a ManagedEntry (value + timestamps)",
        _open_key_value_redis,
    ),
    SystemSpec("aiocache-redis", "redis", "peer", "JsonSerializer (default)", _open_aiocache_redis),
    SystemSpec("cashews-redis", "redis", "peer", "pickle_type=json", _open_cashews_redis),
    # sqlite
    SystemSpec("kvstore-sqlite", "sqlite", "ours", _KV_SQLITE, _kvstore_sqlite(metrics=False)),
    SystemSpec(
        "kvstore-sqlite+metrics",
        "sqlite",
        "ours",
        _KV_SQLITE + _METRICS,
        _kvstore_sqlite(metrics=True),
    ),
    SystemSpec(
        "aiosqlite",
        "sqlite",
        "floor",
        "orjson; WAL, synchronous=FULL, one connection, a transaction per write",
        _open_aiosqlite,
    ),
)
