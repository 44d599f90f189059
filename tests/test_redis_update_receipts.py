"""A compare-and-set resent after its reply was lost applies ``fn`` once (update receipts).

``RedisStore.update`` reads the key, applies *fn*, then swaps the value with a
script that compares it with what was read. When the swap ran but its reply was
lost to a connection error, the retry sends the same script again: it then finds
its own write, not the value it read, and without a receipt it would report a
conflict and apply *fn* to its own result. The script's receipt (a token written
with the swap) makes the resend answer "done". The fault here is staged: the
real command runs on the real server, then its reply is replaced by a
``ConnectionError``, as when a connection breaks with the reply in flight.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.exceptions

from kvstore import RedisStore

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


def _lose_first_swap_reply(store: RedisStore) -> list[tuple[Any, ...]]:
    """Make the first EVAL run on the server but fail at the client; return the sends seen."""
    real_send: Callable[[tuple[Any, ...]], Awaitable[Any]] = store._send
    sent: list[tuple[Any, ...]] = []

    async def send(args: tuple[Any, ...]) -> Any:
        sent.append(args)
        reply = await real_send(args)
        if args[0] == "EVAL" and sum(1 for each in sent if each[0] == "EVAL") == 1:
            raise redis.exceptions.ConnectionError("connection lost with the reply in flight")
        return reply

    store._send = send  # type: ignore[method-assign]
    return sent


@pytest.mark.parametrize("keep_ttl", [False, True])
async def test_a_resent_swap_does_not_apply_fn_twice(redis_url: str, keep_ttl: bool) -> None:
    calls: list[int] = []

    def bump(value: int) -> int:
        calls.append(value)
        return value + 1

    async with RedisStore(redis_url, retries=3) as store:
        await store.set("n", 10, ttl=100)
        sent = _lose_first_swap_reply(store)
        assert await store.update("n", bump, ttl=50, keep_ttl=keep_ttl) == 11
        assert calls == [10]
        assert [args[0] for args in sent] == ["GET", "EVAL", "EVAL"]  # the swap was resent
        assert await store.get("n") == 11
        remaining = await store.ttl("n")
        assert remaining is not None
        assert (remaining > 50) is keep_ttl


async def test_without_a_receipt_the_resend_applies_fn_again(redis_url: str) -> None:
    """The control: the same fault on a store that lends no receipt double-counts."""
    async with RedisStore(redis_url, retries=3) as store:
        setattr(store, "_update_receipt", lambda: None)  # noqa: B010 (a method, replaced)
        await store.set("n", 10)
        _lose_first_swap_reply(store)
        assert await store.update("n", lambda value: value + 1) == 12
        assert await store.get("n") == 12


async def test_receipts_stay_out_of_the_namespace(redis_url: str) -> None:
    async with RedisStore(redis_url, namespace="app") as store:
        for _ in range(3):
            await store.update("n", lambda value: value + 1, default=0)
        assert [key async for key, _ in store.entries()] == ["n"]
        await store.clear()
        assert [key async for key, _ in store.entries()] == []
