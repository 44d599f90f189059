"""Locks: exclusive across tasks and processes, released only by the holder."""

from __future__ import annotations

import os
import subprocess
import sys

import anyio
import anyio.lowlevel
import pytest

from ...errors import (
    InvalidKeyError,
    InvalidTTLError,
    KVStoreError,
    LockNotOwnedError,
    LockTimeoutError,
)
from ...protocol import KVStore
from .backend import ContractBackend, snapshot

# Run by the cross-process lock tests as ``python -c LOCK_CHILD url mode ttl rounds``
# on the contract's store: "count" adds 1 to "n" *rounds* times, with a pause
# between the read and the write that only the lock keeps safe; "hold" takes
# the lock, says so, and waits to be killed.
LOCK_CHILD = """
import sys, anyio, kvstore

async def main(url, mode, ttl, rounds):
    service = kvstore.open_service(url)
    store = service.get_store("contract")
    try:
        if mode == "hold":
            await store.lock("lock:held", ttl=ttl).acquire()
            print("held", flush=True)
            await anyio.sleep(3600)
        for _ in range(rounds):
            async with store.lock("lock:count", ttl=ttl, timeout=120):
                n = await store.get("n", 0)
                await anyio.sleep(0.002)
                await store.set("n", n + 1)
    finally:
        await service.aclose()

anyio.run(main, sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]))
"""


def lock_child(url: str, mode: str, ttl: float, rounds: int = 0) -> list[str]:
    return [sys.executable, "-c", LOCK_CHILD, url, mode, str(ttl), str(rounds)]


def child_env() -> dict[str, str]:
    # The children import the same kvstore as this process.
    root = os.path.dirname(
        os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    )
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root if not path else f"{root}{os.pathsep}{path}"}


async def run_child(command: list[str]) -> None:
    result = await anyio.run_process(command, env=child_env(), check=False)
    assert result.returncode == 0, result.stderr.decode(errors="replace")


class LockContract:
    """Locks: exclusive across tasks and processes, released only by the holder."""

    # -- locks -------------------------------------------------------------------

    async def test_lock_is_exclusive(self, store: KVStore, kv_backend: ContractBackend) -> None:
        ttl = kv_backend.ttl_unit * 10
        async with store.lock("lock:a", ttl=ttl):
            with pytest.raises(LockTimeoutError) as info:
                async with store.lock("lock:a", ttl=ttl, blocking=False):
                    pass  # pragma: no cover - never acquired
            assert isinstance(info.value, TimeoutError) and isinstance(info.value, KVStoreError)
            with pytest.raises(LockTimeoutError):
                async with store.lock("lock:a", ttl=ttl, timeout=0.05):
                    pass  # pragma: no cover - never acquired
            async with store.lock("lock:b", ttl=ttl, blocking=False):
                pass  # another name is another lock
        async with store.lock("lock:a", ttl=ttl, blocking=False):
            pass  # released: free again
        assert await store.get("lock:a") is None

    async def test_lock_waits_for_the_holder(
        self, store: KVStore, kv_backend: ContractBackend
    ) -> None:
        ttl = kv_backend.ttl_unit * 10
        events: list[str] = []
        holding = anyio.Event()

        async def waiter() -> None:
            await holding.wait()
            async with store.lock("lock:w", ttl=ttl, timeout=60):
                events.append("waiter")

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            async with store.lock("lock:w", ttl=ttl):
                holding.set()
                for _ in range(20):  # the waiter tries, and must keep waiting
                    await anyio.sleep(0.001)
                events.append("holder")
        assert events == ["holder", "waiter"]

    async def test_lock_serialises_tasks(self, store: KVStore, kv_backend: ContractBackend) -> None:
        ttl = kv_backend.ttl_unit * 10

        async def worker() -> None:
            for _ in range(3):
                async with store.lock("lock:n", ttl=ttl, timeout=60):
                    n = await store.get("n", 0)
                    await anyio.lowlevel.checkpoint()  # unsafe without the lock
                    await store.set("n", n + 1)

        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(worker)
        assert await store.get("n") == 24

    async def test_lock_expires_and_cannot_be_released_by_its_late_holder(
        self, store: KVStore, kv_backend: ContractBackend
    ) -> None:
        unit = kv_backend.ttl_unit
        first = store.lock("lock:e", ttl=unit)
        await first.__aenter__()
        await kv_backend.advance(unit * 2)
        second = store.lock("lock:e", ttl=unit * 10, blocking=False)
        await second.__aenter__()  # the first expired
        with pytest.raises(LockNotOwnedError):
            await first.__aexit__(None, None, None)
        with pytest.raises(LockTimeoutError):  # the second holds it still
            await store.lock("lock:e", ttl=unit, blocking=False).__aenter__()
        await second.__aexit__(None, None, None)

        class Boom(Exception):
            pass

        with pytest.raises(Boom) as info:  # the block's error wins, with a note
            async with store.lock("lock:e", ttl=unit):
                await kv_backend.advance(unit * 2)
                raise Boom
        assert any("expired" in note for note in getattr(info.value, "__notes__", []))
        with pytest.raises(LockNotOwnedError):
            async with store.lock("lock:e", ttl=unit):
                await kv_backend.advance(unit * 2)

    async def test_lock_bad_arguments(self, store: KVStore) -> None:
        with pytest.raises(InvalidKeyError):
            store.lock("", ttl=10)
        with pytest.raises(InvalidTTLError):
            store.lock("lock:x", ttl=0)
        with pytest.raises(ValueError):
            store.lock("lock:x", ttl=10, timeout=-1)
        with pytest.raises(ValueError):
            store.lock("lock:x", ttl=10, timeout=1, blocking=False)
        assert await snapshot(store) == {}

    async def test_lock_is_exclusive_across_processes(
        self, store: KVStore, kv_backend: ContractBackend
    ) -> None:
        if kv_backend.url is None:
            pytest.skip("the backend is not shared by processes (no ContractBackend.url)")
        url, processes, rounds = kv_backend.url, 2, 5
        with anyio.fail_after(240):
            async with anyio.create_task_group() as tg:
                for _ in range(processes):
                    command = lock_child(url, "count", 120.0, rounds)
                    tg.start_soon(run_child, command)
        assert await store.get("n") == processes * rounds

    async def test_lock_of_a_killed_holder_expires(
        self, store: KVStore, kv_backend: ContractBackend
    ) -> None:
        if kv_backend.url is None:
            pytest.skip("the backend is not shared by processes (no ContractBackend.url)")
        unit = kv_backend.ttl_unit
        with anyio.fail_after(120):
            async with await anyio.open_process(
                lock_child(kv_backend.url, "hold", unit),
                stdout=subprocess.PIPE,
                env=child_env(),
            ) as child:
                assert child.stdout is not None
                said = await child.stdout.receive()
                assert said.startswith(b"held"), said
                child.kill()
                await child.wait()
        with pytest.raises(LockTimeoutError):
            await store.lock("lock:held", ttl=unit, blocking=False).__aenter__()
        await kv_backend.advance(unit * 3)
        async with store.lock("lock:held", ttl=unit, blocking=False):
            pass
