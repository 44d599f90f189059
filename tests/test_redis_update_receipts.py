"""A compare-and-set resent after its reply was lost applies ``fn`` once (update receipts).

``RedisStore.update`` reads the key, applies *fn*, then swaps the value with a
script that compares it with what was read. When the swap ran but its reply was
lost to a connection error, the retry sends the same script again: it then finds
its own write, not the value it read, and without a receipt it would report a
conflict and apply *fn* to its own result. The script's receipt (a token written
with the swap) makes the resend answer "done". The fault here is staged: the
real command runs on the real server, then its reply is replaced by a
``ConnectionError``, as when a connection breaks with the reply in flight. On a
cluster the receipt lives in the key's slot (named with its hash tag).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.exceptions

from kvstore import RedisClusterStore, RedisStore
from kvstore.backends.redis.base import RedisStoreBase
from kvstore.backends.redis.cluster import slot_tag

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


@pytest.fixture(params=["server", "cluster"])
def make_store(request: pytest.FixtureRequest) -> Callable[..., RedisStoreBase[Any, Any]]:
    """Builds a RedisStore on the session's server or a RedisClusterStore on its cluster."""
    if request.param == "server":
        url: str = request.getfixturevalue("redis_url")
        return lambda **options: RedisStore(url, **options)
    cluster: str = request.getfixturevalue("cluster_url")
    return lambda **options: RedisClusterStore(cluster, **options)


def _lose_first_swap_reply(store: RedisStoreBase[Any, Any]) -> list[tuple[Any, ...]]:
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
@pytest.mark.parametrize("key", ["n", "{tagged}n"])
async def test_a_resent_swap_does_not_apply_fn_twice(
    make_store: Callable[..., RedisStoreBase[Any, Any]], keep_ttl: bool, key: str
) -> None:
    calls: list[int] = []

    def bump(value: int) -> int:
        calls.append(value)
        return value + 1

    async with make_store(retries=3) as store:
        await store.set(key, 10, ttl=100)
        sent = _lose_first_swap_reply(store)
        assert await store.update(key, bump, ttl=50, keep_ttl=keep_ttl) == 11
        assert calls == [10]
        assert [args[0] for args in sent] == ["GET", "EVAL", "EVAL"]  # the swap was resent
        assert await store.get(key) == 11
        remaining = await store.ttl(key)
        assert remaining is not None
        assert (remaining > 50) is keep_ttl


async def test_without_a_receipt_the_resend_applies_fn_again(
    make_store: Callable[..., RedisStoreBase[Any, Any]],
) -> None:
    """The control: the same fault on a store that lends no receipt double-counts."""
    async with make_store(retries=3) as store:
        setattr(store, "_update_receipt", lambda rkey: None)  # noqa: B010 (a method, replaced)
        await store.set("n", 10)
        _lose_first_swap_reply(store)
        assert await store.update("n", lambda value: value + 1) == 12
        assert await store.get("n") == 12


async def test_receipts_stay_out_of_the_namespace(
    make_store: Callable[..., RedisStoreBase[Any, Any]],
) -> None:
    async with make_store(namespace="app") as store:
        for _ in range(3):
            await store.update("n", lambda value: value + 1, default=0)
        assert [key async for key, _ in store.entries()] == ["n"]
        await store.clear()
        assert [key async for key, _ in store.entries()] == []


def test_a_slot_tag_names_the_slot_of_the_key() -> None:
    from redis.crc import key_slot

    for rkey in [b"kv:app:n", b"kv:{user}:n", b"a{b{c}d", b"a{b", b"{x}"]:
        tag = slot_tag(rkey)
        assert tag is not None
        assert key_slot(b"{" + tag + b"}\x00update-receipt:1") == key_slot(rkey)
    assert slot_tag(b"a{}b") is None  # hashed whole, and no tag can name it
    assert slot_tag(b"a}b") is None


async def test_a_cluster_key_keeps_one_receipt_however_often_it_is_updated(
    cluster_url: str,
) -> None:
    async with RedisClusterStore(cluster_url, namespace="app") as store:
        for _ in range(20):
            await store.update("n", lambda value: value + 1, default=0)
        assert await store.get("n") == 20
        client = store.cluster_client
        # redis-py merges the primaries' answers into one list.
        receipts = await client.execute_command(
            "KEYS", "*update-receipt*", target_nodes=client.get_primaries()
        )
        assert len(receipts) == 1, receipts
