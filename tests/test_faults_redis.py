"""Redis under faults: a server restarted mid-load, killed, or frozen.

Each test runs its OWN :class:`~kvstore.testing.redis_server.RedisServer` with the
append-only file fsynced at every write (``appendfsync="always"``), so a write
Redis acknowledged is on disk before the reply leaves the server. 64 tasks
write distinct keys through one :class:`~kvstore.RedisStore` while the server
goes away and comes back on the same port and directory. Every call either
succeeds (possibly after the store's retries) or raises
:class:`~kvstore.BackendUnavailableError`; anything else, a raw redis-py
exception included, fails the test, and every call runs under
``anyio.fail_after`` so a hang fails it too. Afterwards every acknowledged
write must be on the restarted server with its value.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final

import anyio
import pytest
import redis
import redis.exceptions

from kvstore import BackendUnavailableError, RedisStore
from kvstore.testing.redis_server import RedisServer

pytestmark = [pytest.mark.anyio, pytest.mark.redis, pytest.mark.slow]

WRITERS: Final = 64
RETRIES: Final = 8
RETRY_BACKOFF: Final = 0.05
SOCKET_TIMEOUT: Final = 2.0
CONNECT_TIMEOUT: Final = 1.0
MAX_BACKOFF: Final = 2.0  # RedisStore caps each pause at 2 s
CALL_DEADLINE: Final = (RETRIES + 1) * SOCKET_TIMEOUT + sum(
    min(RETRY_BACKOFF * 2**attempt, MAX_BACKOFF) for attempt in range(RETRIES)
)
"""The longest one call may take by the store's own settings; beyond it, it hangs."""
LOADED_MACHINE_SLACK: Final = 10.0
"""Seconds a busy 2-core CI machine may add to a call's own bound before we call it a hang."""


@pytest.fixture
def durable_server() -> Iterator[RedisServer]:
    """A private server whose AOF is fsynced before each reply."""
    server = RedisServer(appendonly=True, appendfsync="always")
    with server:
        yield server


def _store(server: RedisServer, **options: Any) -> RedisStore:
    settings: dict[str, Any] = {
        "retries": RETRIES,
        "retry_backoff": RETRY_BACKOFF,
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": CONNECT_TIMEOUT,
    }
    return RedisStore(server.url, namespace="faults", **(settings | options))


class Tally:
    """What the writers saw."""

    def __init__(self) -> None:
        self.acknowledged: dict[str, int] = {}
        self.unavailable = 0
        self.slowest = 0.0


async def _write_until(store: RedisStore, task: int, stop: anyio.Event, tally: Tally) -> None:
    i = 0
    while not stop.is_set():
        key = f"w{task:02d}:{i:07d}"
        started = time.monotonic()
        try:
            # A call longer than the store's own worst case is a hang.
            with anyio.fail_after(CALL_DEADLINE + LOADED_MACHINE_SLACK):
                await store.set(key, i)
        except BackendUnavailableError as err:
            assert isinstance(err.__cause__, redis.exceptions.RedisError | OSError), err
            tally.unavailable += 1
            await anyio.sleep(0.01)  # refused connections fail at once: don't spin
        else:
            tally.acknowledged[key] = i
        tally.slowest = max(tally.slowest, time.monotonic() - started)
        i += 1


async def _verify(server: RedisServer, tally: Tally) -> int:
    """Read every acknowledged key back with a fresh client; return how many were found."""
    keys = list(tally.acknowledged)
    found = 0
    async with RedisStore(server.url, namespace="faults", retries=0) as store:
        for start in range(0, len(keys), 2000):
            chunk = keys[start : start + 2000]
            values = await store.get_many(chunk)
            found += len(values)
            wrong = {k: v for k, v in values.items() if v != tally.acknowledged[k]}
            assert not wrong, f"acknowledged writes came back changed: {list(wrong.items())[:5]}"
    return found


@pytest.mark.parametrize(
    ("how", "retries"), [("stop", RETRIES), ("kill", RETRIES), ("kill", 0)], ids=str
)
async def test_restart_mid_load_keeps_every_acknowledged_write(
    durable_server: RedisServer, how: str, retries: int
) -> None:
    """``stop``: SIGTERM, Redis shuts down cleanly. ``kill``: SIGKILL, a crash.

    With retries the writers ride the outage out; without, calls made during
    it fail, each with BackendUnavailableError.
    """
    tally = Tally()
    stop = anyio.Event()
    with anyio.fail_after(120):
        async with _store(durable_server, retries=retries) as store:
            async with anyio.create_task_group() as tg:
                for task in range(WRITERS):
                    tg.start_soon(_write_until, store, task, stop, tally)
                await anyio.sleep(1.5)
                before = len(tally.acknowledged)
                outage = time.monotonic()
                if how == "stop":
                    await durable_server.astop()
                else:
                    await durable_server.akill()
                assert not durable_server.running
                await anyio.sleep(0.3)  # an outage the writers must ride out
                await durable_server.astart()
                outage = time.monotonic() - outage
                restarted = len(tally.acknowledged)
                await anyio.sleep(1.5)
                stop.set()
            after = len(tally.acknowledged) - restarted
        found = await _verify(durable_server, tally)
    print(
        f"\nRedis {how}+start mid-load, retries={retries}:"
        f" {len(tally.acknowledged)} writes acknowledged"
        f" ({before} before the outage, {after} after the restart), {found} found,"
        f" {tally.unavailable} BackendUnavailableError, outage {outage:.2f} s,"
        f" slowest call {tally.slowest:.2f} s"
    )
    assert found == len(tally.acknowledged)
    assert before > 0 and after > 0, "the load must run on both sides of the restart"
    if retries == 0:
        assert tally.unavailable > 0, "writes during the outage should have failed"


async def test_killed_server_gives_backend_unavailable_within_bound() -> None:
    retries, backoff, connect_timeout = 2, 0.05, 0.5
    with RedisServer() as server:
        async with RedisStore(
            server.url,
            retries=retries,
            retry_backoff=backoff,
            socket_connect_timeout=connect_timeout,
            socket_timeout=1.0,
        ) as store:
            await store.set("k", 1)
            await server.akill()
            bound = (retries + 1) * connect_timeout + sum(backoff * 2**a for a in range(retries))
            calls: list[Callable[[], Awaitable[Any]]] = [
                lambda: store.get("k"),
                lambda: store.set("k", 2),
                lambda: _first(store),
            ]
            for call in calls:
                started = time.monotonic()
                # Within seconds, not forever: beyond the store's own bound plus
                # what a loaded machine adds, the call hangs.
                with (
                    anyio.fail_after(bound + LOADED_MACHINE_SLACK),
                    pytest.raises(BackendUnavailableError) as info,
                ):
                    await call()
                elapsed = time.monotonic() - started
                print(f"\nkilled server: BackendUnavailableError after {elapsed:.3f} s")
                assert isinstance(info.value, ConnectionError)
                assert isinstance(info.value.__cause__, redis.exceptions.RedisError | OSError)
                assert f"127.0.0.1:{server.port}" in str(info.value)


async def test_frozen_server_gives_backend_unavailable_not_a_hang() -> None:
    """SIGSTOP: connections stay open but nothing answers; only timeouts can save us."""
    retries, backoff, socket_timeout = 1, 0.05, 0.5
    with RedisServer() as server:
        pid = server.pid
        assert pid is not None
        async with RedisStore(
            server.url,
            retries=retries,
            retry_backoff=backoff,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
        ) as store:
            await store.set("k", 1)
            os.kill(pid, signal.SIGSTOP)
            try:
                bound = (retries + 1) * socket_timeout + backoff * 2
                started = time.monotonic()
                # Without socket timeouts this would wait forever.
                with (
                    anyio.fail_after(bound + LOADED_MACHINE_SLACK),
                    pytest.raises(BackendUnavailableError),
                ):
                    await store.get("k")
                elapsed = time.monotonic() - started
                print(f"\nfrozen server: BackendUnavailableError after {elapsed:.3f} s")
            finally:
                os.kill(pid, signal.SIGCONT)
            # Thawed, the same store works again.
            with anyio.fail_after(10):
                assert await store.get("k") == 1


async def test_update_and_add_during_outage_are_typed(durable_server: RedisServer) -> None:
    """Transactions, compare-and-set updates and SCAN loops fail typed too, and work after."""
    async with _store(durable_server, retries=1, retry_backoff=0.01) as store:
        await store.set_many({f"k{i}": i for i in range(50)})
        await durable_server.akill()
        calls: list[Callable[[], Awaitable[Any]]] = [
            lambda: store.update("k1", lambda v: v + 1),
            lambda: store.add("new", 1),
            lambda: store.set_many({"a": 1, "b": 2}, ttl=60),
            store.clear,
            lambda: _first(store),
        ]
        for call in calls:
            with anyio.fail_after(30), pytest.raises(BackendUnavailableError):
                await call()
        await durable_server.astart()
        with anyio.fail_after(30):
            assert await store.update("k1", lambda v: v + 1) == 2
            assert len([k async for k, _ in store.entries()]) == 50


async def _first(store: RedisStore) -> Any:
    async for item in store.entries():
        return item
    return None


def test_client_for_the_server_is_ours(durable_server: RedisServer) -> None:
    # Guards the premise of this module: these servers are private and persistent.
    assert durable_server.port != 6379
    with redis.Redis(host=durable_server.host, port=durable_server.port) as client:
        config = client.config_get("append*")
    assert config["appendonly"] == "yes"
    assert config["appendfsync"] == "always"
