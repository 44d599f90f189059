"""StoreLock itself: misuse of one lock object, and a cancelled acquire giving back its key."""

from __future__ import annotations

import anyio
import pytest

from kvstore import LockTimeoutError, MemoryStore, StoreLock

pytestmark = pytest.mark.anyio


async def test_one_holder_per_lock_object() -> None:
    store = MemoryStore()
    lock = store.lock("lock:x", ttl=10)
    assert not lock.held and lock.name == "lock:x" and lock.ttl == 10.0
    with pytest.raises(RuntimeError, match="not held"):
        await lock.release()
    async with lock:
        assert lock.held and "held" in repr(lock)
        with pytest.raises(RuntimeError, match="already held"):
            await lock.acquire()
    assert not lock.held
    async with lock:  # reusable once released, with a new token
        pass


async def test_blocking_false_fails_at_once_and_timeout_zero_tries_once() -> None:
    store = MemoryStore()
    async with store.lock("lock:x", ttl=10):
        with pytest.raises(LockTimeoutError, match=r"held by another holder$"):
            await store.lock("lock:x", ttl=10, blocking=False).acquire()
        with pytest.raises(LockTimeoutError, match="within 0 s"):
            await store.lock("lock:x", ttl=10, timeout=0).acquire()


async def test_a_cancelled_acquire_gives_back_what_it_may_have_taken() -> None:
    stored: dict[str, str] = {}
    entered = anyio.Event()

    async def acquire(token: str) -> bool:
        stored["lock"] = token  # applied, but the caller is cancelled before the reply
        entered.set()
        await anyio.sleep_forever()
        return True  # pragma: no cover - never reached

    async def release(token: str) -> bool:
        return stored.pop("lock", None) == token

    lock = StoreLock("lock", ttl=10, acquire=acquire, release=release)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lock.acquire)
        await entered.wait()
        tg.cancel_scope.cancel()
    assert stored == {} and not lock.held


async def test_a_lock_block_can_be_left_for_a_waiter_after_a_failure() -> None:
    store = MemoryStore()
    with pytest.raises(ZeroDivisionError):
        async with store.lock("lock:x", ttl=10):
            _ = 1 / 0
    async with store.lock("lock:x", ttl=10, blocking=False):
        pass  # released on the way out of the failed block
