"""Redis-specific behaviour the contract suite does not cover.

URL options, glob escaping, namespace/prefix isolation from foreign keys in the
same database, the shared connection pool, auto-pipelining, retries and
recovery with real server processes (stopped, restarted, frozen).
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis.asyncio
import redis.exceptions

from kvstore import (
    BackendUnavailableError,
    ConfigError,
    KVStoreError,
    MetricsStore,
    StoreClosedError,
    StoreService,
    open_service,
    open_store,
)
from kvstore.backends.redis import SCAN_COUNT, RedisStore
from kvstore.testing.redis_server import RedisServer, RedisServerNotFoundError

pytestmark = [pytest.mark.redis, pytest.mark.anyio]


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A plain redis-py client on the (flushed) session server."""
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def private_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A server of the test's own, free to be stopped, frozen or restarted."""
    with RedisServer(appendonly=True, appendfsync="always", dir=tmp_path / "redis") as server:
        yield server


def inner(store: Any) -> RedisStore:
    """The RedisStore behind a service's (metrics-wrapped) store."""
    backend = store.inner if isinstance(store, MetricsStore) else store
    assert isinstance(backend, RedisStore)
    return backend


# -- URLs and options ---------------------------------------------------------------


async def test_open_store_picks_redis_and_reads_query_options(redis_url: str) -> None:
    url = (
        f"{redis_url}?namespace=app.v2&prefix=svc&retries=5&retry_backoff=0.01"
        "&default_ttl=30&auto_pipeline=no&max_connections=7&socket_timeout=1.5"
    )
    store = open_store(url)
    try:
        assert isinstance(store, RedisStore)
        assert RedisStore.backend == "redis"
        assert (store.namespace, store.prefix, store.default_ttl) == ("app.v2", "svc", 30.0)
        pool = store.client.connection_pool
        assert pool.max_connections == 7
        assert pool.connection_kwargs["socket_timeout"] == 1.5
        assert pool.connection_kwargs["socket_connect_timeout"] == 2.0
        await store.set("k", 1)
        async with redis.asyncio.Redis.from_url(redis_url) as raw:
            assert await raw.get("svc:app.v2:k") == b"1"
            assert 20_000 < await raw.pttl("svc:app.v2:k") <= 30_000  # default_ttl=30 s
    finally:
        await store.aclose()


async def test_keyword_options_win_over_the_url(redis_url: str) -> None:
    store = RedisStore.from_url(
        f"{redis_url}?namespace=from_url&default_ttl=9", namespace="kw", default_ttl=None
    )
    try:
        # default_ttl=None (what open_service passes) does not hide the URL's value.
        assert (store.namespace, store.default_ttl) == ("kw", 9.0)
    finally:
        await store.aclose()


async def test_driver_options_pass_through(redis_url: str) -> None:
    store = open_store(redis_url.rsplit("/", 1)[0] + "/0?db=3&client_name=kvtest")
    try:
        await store.set("k", "in db 3")
        async with redis.asyncio.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/3") as raw:
            assert await raw.get("kv:default:k") == b'"in db 3"'
            names = [c["name"] for c in await raw.client_list()]
            assert "kvtest" in names
    finally:
        await store.aclose()


@pytest.mark.parametrize(
    ("suffix", "message"),
    [
        ("/0?colour=blue", "unknown option 'colour'"),
        ("/0?retries=many", "option retries='many' .* expected a whole number"),
        ("/0?retries=-1", "retries must be >= 0"),
        ("/0?auto_pipeline=maybe", "option auto_pipeline='maybe' .* expected true or false"),
        ("/0?namespace=a:b", "option namespace='a:b' .* invalid store name"),
        ("/0?prefix=a:b", "option prefix='a:b' .* invalid key prefix"),
        ("/0?default_ttl=-5", "default_ttl must be a number of seconds > 0"),
        ("/0?default_ttl=nan", "option default_ttl='nan' .* finite"),
        ("/0?socket_timeout=0", "socket_timeout must be a number of seconds > 0"),
        ("/0?max_connections=0", "max_connections must be >= 1"),
        ("/0?max_value_bytes=0", "max_value_bytes must be >= 1"),
        ("/0?retry_backoff=-1", "retry_backoff must be a number of seconds >= 0"),
        ("/0?prefix=a&prefix=b", "given twice"),
        ("/zero", "invalid database"),
    ],
)
def test_bad_url_options_raise_config_error(redis_url: str, suffix: str, message: str) -> None:
    url = redis_url.rsplit("/", 1)[0] + suffix
    with pytest.raises(ConfigError, match=message):
        open_store(url)


@pytest.mark.parametrize(
    "url", ["redis://localhost:notaport/0", "http://localhost/0", "unix://", "rediss://:x/0?x"]
)
def test_malformed_urls_raise_config_error(url: str) -> None:
    with pytest.raises(ConfigError):
        RedisStore.from_url(url)


def test_passwords_stay_out_of_messages_and_repr() -> None:
    with pytest.raises(ConfigError) as info:
        RedisStore.from_url("redis://user:s3cret@localhost:6379/0?bogus=1")
    assert "s3cret" not in str(info.value) and "***" in str(info.value)
    store = RedisStore.from_url("redis://user:s3cret@localhost:6379/0")
    assert "s3cret" not in repr(store)
    store = RedisStore.from_url("unix:///tmp/r.sock?password=s3cret&db=2")
    assert "s3cret" not in repr(store)


def test_constructor_rejects_bad_arguments() -> None:
    with pytest.raises(TypeError, match="redis://"):
        RedisStore(6379)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="retries"):
        RedisStore("redis://localhost/0", retries=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="invalid store name"):
        RedisStore("redis://localhost/0", namespace="a b")
    with pytest.raises(ConfigError, match="decode_responses"):
        RedisStore(redis.asyncio.Redis(decode_responses=True))
    url = "redis://localhost/0"
    with pytest.raises(ValueError, match="socket_timeout must be a number of seconds > 0"):
        RedisStore(url, socket_timeout=0)
    with pytest.raises(TypeError, match="socket_connect_timeout must be a number"):
        RedisStore(url, socket_connect_timeout="2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_connections must be >= 1"):
        RedisStore(url, max_connections=0)
    with pytest.raises(ValueError, match="retry_backoff must be a number of seconds >= 0"):
        RedisStore(url, retry_backoff=-0.1)
    with pytest.raises(TypeError, match="auto_pipeline must be True or False"):
        RedisStore(url, auto_pipeline=1)  # type: ignore[arg-type]


async def test_unix_socket_url(redis_server: RedisServer, redis_url: str) -> None:
    socket_path = redis_server.dir / "redis.sock"
    store = open_store(f"unix://{socket_path}?db=0&namespace=viaunix")
    try:
        await store.set("k", [1, 2])
        over_tcp = open_store(redis_url, namespace="viaunix")
        try:
            assert await over_tcp.get("k") == [1, 2]
        finally:
            await over_tcp.aclose()
    finally:
        await store.aclose()


# -- keys, glob escaping, isolation ------------------------------------------------------


GLOB_KEYS = ["*", "?", "[", "]", "\\", "a*", "a?c", "a[bc]", "abc", "ab", "a\\*", "a]", "[a-z]"]


async def test_glob_characters_in_keys_and_prefixes(redis_url: str) -> None:
    async with RedisStore(redis_url) as store:
        await store.set_many({key: key for key in GLOB_KEYS})

        async def keys(prefix: str) -> set[str]:
            return {key async for key, _ in store.entries(prefix)}

        assert await keys("") == set(GLOB_KEYS)
        assert await keys("*") == {"*"}
        assert await keys("?") == {"?"}
        assert await keys("a*") == {"a*"}
        assert await keys("a?") == {"a?c"}
        assert await keys("a[") == {"a[bc]"}
        assert await keys("[") == {"[", "[a-z]"}
        assert await keys("\\") == {"\\"}
        assert await keys("a\\") == {"a\\*"}
        assert await keys("a") == {k for k in GLOB_KEYS if k.startswith("a")}
        assert await store.delete_many(["a*", "a?c"]) == 2
        assert await store.get_many(["abc", "a*"]) == {"abc": "abc"}


async def test_unusual_keys_round_trip(redis_url: str) -> None:
    keys = ["ключ", "🔑", "sp ace", "new\nline", "x" * 1024, "a:b:c"]
    async with RedisStore(redis_url) as store:
        for i, key in enumerate(keys):
            await store.set(key, i)
        assert {key: value async for key, value in store.entries()} == {
            key: i for i, key in enumerate(keys)
        }
        assert await store.get_many(keys) == {key: i for i, key in enumerate(keys)}


FOREIGN_KEYS = [
    b"kv:other:k",
    b"kv:defaultx:k",
    b"kv:default",
    b"kv:defaul:k",
    b"kvx:default:k",
    b"other:default:k",
    b"k",
    b"kv:*:k",
    b"KV:default:k",
]


async def test_clear_and_entries_never_touch_foreign_keys(
    redis_url: str, raw: redis.asyncio.Redis
) -> None:
    for key in FOREIGN_KEYS:
        await raw.set(key, b"foreign")
    await raw.rpush(b"kv:default2:list", b"x")
    async with RedisStore(redis_url) as store:
        await store.set_many({f"k{i}": i for i in range(SCAN_COUNT * 2 + 17)})
        seen = {key async for key, _ in store.entries()}
        assert seen == {f"k{i}" for i in range(SCAN_COUNT * 2 + 17)}
        await store.clear()
        assert [kv async for kv in store.entries()] == []
    assert sorted(await raw.keys("*")) == sorted([*FOREIGN_KEYS, b"kv:default2:list"])


async def test_prefix_and_namespace_isolation(redis_url: str) -> None:
    async with RedisStore(redis_url) as plain, RedisStore(redis_url, prefix="app") as other:
        ns = plain.namespaced("ns")
        other_ns = other.namespaced("ns")
        await plain.set("k", "kv/default")
        await ns.set("k", "kv/ns")
        await other_ns.set("k", "app/ns")
        assert [await s.get("k") for s in (plain, ns, other_ns, other)] == [
            "kv/default",
            "kv/ns",
            "app/ns",
            None,
        ]
        await other_ns.clear()
        assert (await plain.get("k"), await ns.get("k"), await other_ns.get("k")) == (
            "kv/default",
            "kv/ns",
            None,
        )
        overridden = plain.namespaced("ns", prefix="app", default_ttl=5, auto_pipeline=False)
        await overridden.set("k", 1)
        assert await other_ns.get("k") == 1
        remaining = await other_ns.ttl("k")
        assert remaining is not None and 3 < remaining <= 5  # default_ttl=5


async def test_entries_scans_in_bounded_batches(redis_url: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    batches: list[int] = []
    original = client.execute_command

    async def spy(*args: Any, **options: Any) -> Any:
        if args[0] == "MGET":
            batches.append(len(args) - 1)
        return await original(*args, **options)  # type: ignore[no-untyped-call]

    client.execute_command = spy  # type: ignore[method-assign]
    try:
        store = RedisStore(client, auto_pipeline=False)
        await store.set_many({f"k{i}": i for i in range(3 * SCAN_COUNT)})
        assert len([kv async for kv in store.entries()]) == 3 * SCAN_COUNT
        assert len(batches) >= 3 and max(batches) < 2 * SCAN_COUNT
        await store.aclose()
    finally:
        await client.aclose()


async def test_ttl_is_server_side_in_milliseconds(redis_url: str, raw: redis.asyncio.Redis) -> None:
    # PEXPIRETIME is the absolute deadline the server set, in ms since the epoch.
    # Bracketed by the wall clock read just before and after the call that set
    # it (server and test share the machine's clock), it pins the TTL to the
    # millisecond, however long a loaded machine made the call take.
    async def deadline_of(call: Awaitable[Any], key: str) -> tuple[int, int, int]:
        before = math.floor(time.time() * 1000)
        await call
        after = math.ceil(time.time() * 1000)
        return before, await raw.pexpiretime(f"kv:default:{key}"), after

    async with RedisStore(redis_url) as store:
        before, deadline, after = await deadline_of(store.set("a", 1, ttl=0.3), "a")
        assert before + 300 <= deadline <= after + 300
        before, deadline, after = await deadline_of(store.expire("a", 2.5), "a")
        assert before + 2500 <= deadline <= after + 2500
        asked = time.time() * 1000
        remaining = await store.ttl("a")
        answered = time.time() * 1000
        assert remaining is not None
        assert (
            (deadline - answered) / 1000 - 0.001 <= remaining <= (deadline - asked) / 1000 + 0.001
        )
        before, deadline, after = await deadline_of(store.add("b", 1, ttl=7), "b")
        assert before + 7000 <= deadline <= after + 7000
        await store.set("tiny", 1, ttl=0.0001)
        await anyio.sleep(0.01)
        assert await store.get("tiny") is None  # at least 1 ms, never "no expiry"


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("auto_pipeline", [True, False])
async def test_server_errors_are_wrapped(
    redis_url: str, raw: redis.asyncio.Redis, auto_pipeline: bool
) -> None:
    await raw.rpush(b"kv:default:list", b"x")
    await raw.set(b"kv:default:garbage", b"\xff not json")
    async with RedisStore(redis_url, auto_pipeline=auto_pipeline) as store:
        with pytest.raises(KVStoreError, match="WRONGTYPE") as info:
            await store.get("list")
        assert isinstance(info.value.__cause__, redis.exceptions.ResponseError)
        with pytest.raises(KVStoreError, match="WRONGTYPE"):
            await store.update("list", lambda v: v)
        with pytest.raises(KVStoreError, match="not valid JSON"):
            await store.get("garbage")
        assert await store.get_many(["list", "nothing"]) == {}  # MGET reads other types as nil
        await store.set("ok", 1)
        assert await store.get("ok") == 1


# -- shared pool, ownership -----------------------------------------------------------------------


async def test_every_named_store_shares_the_root_client(redis_url: str) -> None:
    service = open_service(redis_url)
    root = service.backend
    assert isinstance(root, RedisStore)
    stores = [inner(service.get_store(name)) for name in ("a", "b", "sessions")]
    assert all(store.client is root.client for store in stores)
    await stores[0].set("k", 1)
    await stores[1].aclose()  # a named store does not own the pool
    assert await stores[2].get("k") is None
    assert await stores[0].get("k") == 1
    await service.aclose()
    with pytest.raises(StoreClosedError):
        _ = root.client
    with pytest.raises(KVStoreError):
        await root.namespaced("late").get("k")


async def test_connection_options_cannot_differ_between_named_stores(redis_url: str) -> None:
    async with RedisStore(redis_url) as store:
        with pytest.raises(ConfigError, match="share its connection pool"):
            store.namespaced("a", max_connections=3)
        with pytest.raises(ConfigError, match="namespaced\\(\\) cannot set bogus"):
            store.namespaced("a", bogus=1)
    # As on SQLite: a service's per-store option the backend lacks is a ConfigError.
    service = StoreService(RedisStore(redis_url), store_options={"cache": {"max_entries": 10}})
    with pytest.raises(ConfigError, match="cannot set max_entries"):
        service.get_store("cache")
    await service.aclose()


async def test_a_client_passed_in_is_not_closed(redis_url: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    closed: list[str] = []
    original_aclose = client.aclose

    async def spy_aclose(*args: Any, **kwargs: Any) -> None:
        closed.append("aclose")
        await original_aclose(*args, **kwargs)

    client.aclose = spy_aclose  # type: ignore[method-assign]
    try:
        store = RedisStore(client)
        async with store:
            await store.set("k", 1)
            named = store.namespaced("other")
            await named.set("k", 2)
        assert closed == []
        assert await client.get("kv:default:k") == b"1"
        assert await client.get("kv:other:k") == b"2"
        with pytest.raises(StoreClosedError):
            await named.get("k")
    finally:
        await original_aclose()


def test_use_from_a_second_event_loop_is_a_clear_error(redis_url: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    store = RedisStore(client)

    async def first_loop() -> None:
        await store.set("k", 1)
        await client.connection_pool.disconnect()  # so that nothing leaks past this loop

    async def second_loop() -> None:
        try:
            with pytest.raises(KVStoreError, match="another event loop"):
                await store.get("k")
        finally:
            await store.aclose()
            await client.aclose()

    asyncio.run(first_loop())
    asyncio.run(second_loop())


# -- auto-pipelining ------------------------------------------------------------------------------


@pytest.mark.parametrize("auto_pipeline", [True, False])
async def test_concurrent_mixed_ops_get_their_own_replies(
    redis_url: str, raw: redis.asyncio.Redis, auto_pipeline: bool
) -> None:
    # Without auto-pipelining each of the 200 tasks may hold a connection at once
    # (the slower the replies, the more): more than redis-py's default pool of 100.
    client = redis.asyncio.Redis.from_url(redis_url, max_connections=256)
    pipelines = 0
    original_pipeline = client.pipeline

    def counting_pipeline(*args: Any, **kwargs: Any) -> Any:
        nonlocal pipelines
        pipelines += 1
        return original_pipeline(*args, **kwargs)

    client.pipeline = counting_pipeline  # type: ignore[method-assign]
    await raw.rpush(b"kv:default:list", b"x")
    store = RedisStore(client, auto_pipeline=auto_pipeline)
    await store.set_many({f"pre{i}": {"i": i} for i in range(200)})
    pipelines = 0
    outcomes: dict[int, Any] = {}

    async def op(i: int) -> None:
        kind = i % 5
        try:
            if kind == 0:
                await store.set(f"new{i}", [i])
                outcomes[i] = await store.get(f"new{i}")
            elif kind == 1:
                outcomes[i] = await store.get(f"pre{i}")
            elif kind == 2:
                outcomes[i] = (await store.add(f"pre{i}", 0), await store.add(f"add{i}", i))
            elif kind == 3:
                outcomes[i] = await store.get("list")
            else:
                outcomes[i] = (await store.delete(f"pre{i}"), await store.ttl(f"pre{i}"))
        except KVStoreError as err:
            outcomes[i] = err

    async with anyio.create_task_group() as tg:
        for i in range(200):
            tg.start_soon(op, i)

    for i in range(200):
        kind, got = i % 5, outcomes[i]
        if kind == 0:
            assert got == [i]
        elif kind == 1:
            assert got == {"i": i}
        elif kind == 2:
            assert got == (False, True)
        elif kind == 3:
            assert isinstance(got, KVStoreError) and "WRONGTYPE" in str(got)
            assert isinstance(got.__cause__, redis.exceptions.ResponseError)
        else:
            assert got == (True, None)
    assert await store.get_many([f"add{i}" for i in range(2, 200, 5)]) == {
        f"add{i}": i for i in range(2, 200, 5)
    }
    if auto_pipeline:
        # 200 tasks, up to 2 commands each: a handful of batches, not one per command.
        assert 1 <= pipelines <= 20
    else:
        assert pipelines == 0
    await store.aclose()
    await client.aclose()


async def test_a_cancelled_caller_does_not_disturb_its_batch(redis_url: str) -> None:
    async with RedisStore(redis_url) as store:
        await store.set_many({f"k{i}": i for i in range(20)})
        tasks = [asyncio.ensure_future(store.get(f"k{i}")) for i in range(20)]
        await asyncio.sleep(0)  # every task has queued its GET
        tasks[3].cancel()
        tasks[11].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for i, result in enumerate(results):
            if i in (3, 11):
                assert isinstance(result, asyncio.CancelledError)
            else:
                assert result == i
        assert await store.get("k3") == 3


# -- retries, unavailability, recovery ------------------------------------------------------------


@pytest.mark.parametrize("auto_pipeline", [True, False])
async def test_stopped_server_gives_backend_unavailable_quickly(
    private_server: RedisServer, auto_pipeline: bool
) -> None:
    store = RedisStore(
        private_server.url, retries=2, retry_backoff=0.05, auto_pipeline=auto_pipeline
    )
    async with store:
        await store.set("k", 1)
        await private_server.astop()
        calls: list[Callable[[], Any]] = [
            lambda: store.get("k"),
            lambda: store.set_many({"a": 1}, ttl=5),
            lambda: store.update("k", lambda v: v + 1),
            lambda: store.clear(),
        ]
        for call in calls:
            started = time.monotonic()
            # A refused connection fails at once: seconds at most, never a hang.
            with (
                anyio.fail_after(30),
                pytest.raises(BackendUnavailableError, match="3 time") as info,
            ):
                await call()
            elapsed = time.monotonic() - started
            assert elapsed >= 0.05 + 0.1  # it slept both backoffs before giving up
            assert isinstance(info.value, ConnectionError)
            assert isinstance(info.value.__cause__, redis.exceptions.ConnectionError)

        async def drain() -> None:
            async for _ in store.entries():
                pass

        with pytest.raises(BackendUnavailableError):
            await drain()


async def test_frozen_server_times_out_instead_of_hanging(private_server: RedisServer) -> None:
    store = RedisStore(private_server.url, retries=1, retry_backoff=0.01, socket_timeout=0.3)
    async with store:
        await store.set("k", 1)
        pid = private_server.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            # Two attempts of 0.3 s each: seconds at most on any machine, where
            # without the socket timeout the call would wait forever.
            with anyio.fail_after(30), pytest.raises(BackendUnavailableError) as info:
                await store.get("k")
            assert isinstance(info.value.__cause__, redis.exceptions.TimeoutError)
        finally:
            os.kill(pid, signal.SIGCONT)
        assert await store.get("k") == 1


async def test_wrong_credentials_fail_at_once(tmp_path: Path) -> None:
    with RedisServer(extra_args=("--requirepass", "s3cret"), dir=tmp_path) as server:
        anonymous = RedisStore(server.url, retries=5, retry_backoff=1.0)
        with redis.Redis(host=server.host, port=server.port, password="s3cret") as admin:
            connections = int(admin.info("stats")["total_connections_received"])
            with pytest.raises(BackendUnavailableError, match="credentials") as info:
                await anonymous.get("k")
            # One connection, refused: no retries, they could not help (the admin
            # client's own connection is not counted again: it is still open).
            after = int(admin.info("stats")["total_connections_received"])
            assert after - connections == 1
        assert isinstance(info.value.__cause__, redis.exceptions.AuthenticationError)
        await anonymous.aclose()
        url = f"redis://:s3cret@127.0.0.1:{server.port}/0"
        async with open_store(url) as store:
            await store.set("k", 1)
            assert await store.get("k") == 1
            assert "s3cret" not in repr(store)


async def test_recovers_after_restart_and_keeps_aof_data(private_server: RedisServer) -> None:
    async with RedisStore(private_server.url) as store:
        await store.set_many({f"k{i}": i for i in range(50)})
        await private_server.arestart()  # pooled connections are now dead
        assert await store.get_many([f"k{i}" for i in range(50)]) == {f"k{i}": i for i in range(50)}
        await store.set("after", True)
        await private_server.akill()
        await private_server.astart()
        assert await store.get("after") is True  # appendfsync=always survives SIGKILL


async def test_load_survives_a_restart_mid_flight(private_server: RedisServer) -> None:
    store = RedisStore(private_server.url, retries=10, retry_backoff=0.02)
    done = 0

    async def worker(w: int) -> None:
        nonlocal done
        for i in range(60):
            await store.set(f"w{w}:{i}", i)
            assert await store.get(f"w{w}:{i}") == i
            done += 1
            await anyio.sleep(0.002)

    async with store:
        async with anyio.create_task_group() as tg:
            for w in range(16):
                tg.start_soon(worker, w)
            await anyio.sleep(0.05)
            await private_server.arestart()
        assert done == 16 * 60
        assert len([kv async for kv in store.entries()]) == 16 * 60


# -- the launcher -------------------------------------------------------------------------------


def test_launcher_reports_a_missing_binary() -> None:
    server = RedisServer(binary="no-such-redis-server-binary")
    with pytest.raises(RedisServerNotFoundError, match="not found"):
        server.start()
    assert isinstance(RedisServerNotFoundError("x"), FileNotFoundError)


def test_launcher_restart_keeps_port_and_dir(private_server: RedisServer) -> None:
    port, directory, pid = private_server.port, private_server.dir, private_server.pid
    private_server.restart()
    assert (private_server.port, private_server.dir) == (port, directory)
    assert private_server.pid != pid and private_server.running
    assert private_server.url == f"redis://127.0.0.1:{port}/0"
    private_server.kill()
    assert not private_server.running and private_server.pid is None
    assert (directory / "appendonlydir").exists() or any(directory.glob("*.aof"))
