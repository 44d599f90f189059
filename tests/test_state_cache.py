"""StateCache on its own, and the state cache shared by runtimes on SQLite and Redis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import kvstore
from kvstore import (
    InvalidKeyError,
    InvalidTTLError,
    MemoryStore,
    SerializationError,
    StoreService,
)
from kvstore.testing import ManualClock
from runtime import AgentRuntime, Message, Plugin, StateCache

pytestmark = pytest.mark.anyio


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store(clock: ManualClock) -> MemoryStore:
    return MemoryStore(clock=clock)


def make_message(msg_id: str) -> Message:
    return Message(id=msg_id, session_id="s", role="user", content="hi", created_at=1.0)


class CountingProvider:
    def __init__(self, result: dict[str, Any]) -> None:
        self.result = result
        self.calls = 0

    async def __call__(self, runtime: AgentRuntime, message: Message) -> dict[str, Any]:
        self.calls += 1
        return {**self.result, "composed_by": runtime.agent_id}


# -- StateCache unit tests ------------------------------------------------------------------


async def test_set_get_delete(store: MemoryStore) -> None:
    cache = StateCache(store)
    assert await cache.get("m1") is None
    await cache.set("m1", {"mood": "happy", "facts": [1, 2]})
    assert await cache.get("m1") == {"mood": "happy", "facts": [1, 2]}
    assert await cache.delete("m1") is True
    assert await cache.delete("m1") is False
    assert await cache.get("m1") is None


async def test_state_is_copied(store: MemoryStore) -> None:
    cache = StateCache(store)
    state = {"facts": [1]}
    await cache.set("m1", state)
    state["facts"].append(2)
    got = await cache.get("m1")
    assert got == {"facts": [1]}
    assert got is not None
    got["facts"].append(3)
    assert await cache.get("m1") == {"facts": [1]}


async def test_ttl_expires_states(store: MemoryStore, clock: ManualClock) -> None:
    cache = StateCache(store, ttl=60)
    assert cache.ttl == 60.0
    await cache.set("short", {"a": 1}, ttl=10)
    await cache.set("default", {"b": 2})
    assert await cache.ttl_of("short") == pytest.approx(10)
    assert await cache.ttl_of("default") == pytest.approx(60)
    clock.advance_by(30)
    assert await cache.get("short") is None
    assert await cache.get("default") == {"b": 2}
    clock.advance_by(31)
    assert await cache.get("default") is None
    assert [kv async for kv in cache.entries()] == []


async def test_ttl_none_defers_to_the_store(clock: ManualClock) -> None:
    persistent = StateCache(MemoryStore(clock=clock), ttl=None)
    await persistent.set("m", {})
    assert await persistent.ttl_of("m") is None
    with_default = StateCache(MemoryStore(clock=clock, default_ttl=5), ttl=None)
    await with_default.set("m", {})
    assert await with_default.ttl_of("m") == pytest.approx(5)


async def test_entries_and_clear(store: MemoryStore) -> None:
    cache = StateCache(store)
    for i in range(5):
        await cache.set(f"m{i}", {"i": i})
    assert {k: v async for k, v in cache.entries()} == {f"m{i}": {"i": i} for i in range(5)}
    iterator = cache.entries()
    first = await iterator.__anext__()
    assert first[0].startswith("m")
    await iterator.aclose()  # stopping early releases the store's iterator
    await cache.clear()
    assert [kv async for kv in cache.entries()] == []
    assert "StateCache" in repr(cache)


@pytest.mark.parametrize("message_id", ["", None, 7, "x" * 1025, "nul\x00"], ids=repr)
async def test_bad_message_ids(store: MemoryStore, message_id: Any) -> None:
    cache = StateCache(store)
    with pytest.raises(InvalidKeyError):
        await cache.get(message_id)
    with pytest.raises(InvalidKeyError):
        await cache.set(message_id, {})
    with pytest.raises(InvalidKeyError):
        await cache.delete(message_id)
    with pytest.raises(InvalidKeyError):
        await cache.ttl_of(message_id)


@pytest.mark.parametrize("ttl", [0, -1, float("nan"), float("inf"), True, "60"], ids=repr)
async def test_bad_ttls(store: MemoryStore, ttl: Any) -> None:
    with pytest.raises(InvalidTTLError):
        StateCache(store, ttl=ttl)
    cache = StateCache(store)
    with pytest.raises(InvalidTTLError):
        await cache.set("m", {}, ttl=ttl)
    assert await cache.get("m") is None


@pytest.mark.parametrize(
    "state", [["a", "list"], "text", None, {1: "int key"}, {"v": {1, 2}}, {"v": float("nan")}]
)
async def test_bad_states(store: MemoryStore, state: Any) -> None:
    cache = StateCache(store)
    with pytest.raises(SerializationError):
        await cache.set("m", state)
    assert await cache.get("m") is None


async def test_foreign_value_in_the_store_is_reported(store: MemoryStore) -> None:
    await store.set("m", ["not", "a", "state"])
    cache = StateCache(store)
    with pytest.raises(SerializationError, match="not a state dict"):
        await cache.get("m")
    with pytest.raises(SerializationError):
        _ = [kv async for kv in cache.entries()]


# -- (c) runtimes sharing one backend ---------------------------------------------------------


async def assert_runtimes_share_state(open_service: Any) -> None:
    """Two runtimes, each with its own service on one backend, share cached state."""
    message = make_message("shared-msg")
    provider_a, provider_b = CountingProvider({"x": 1}), CountingProvider({"x": 2})
    service_a, service_b = open_service(), open_service()
    try:
        runtime_a = AgentRuntime(
            agent_id="replica-a", plugins=[Plugin("store", services=[service_a])]
        )
        runtime_a.register_provider(provider_a)
        runtime_b = AgentRuntime(
            agent_id="replica-b",
            plugins=[Plugin("store", services=[service_b], providers=[provider_b])],
        )
        async with runtime_a, runtime_b:
            state = await runtime_a.compose_state(message)
            assert state == {"x": 1, "composed_by": "replica-a"}
            # Replica B sees A's state and does not run its own providers.
            assert await runtime_b.state_cache.get(message.id) == state
            assert await runtime_b.compose_state(message) == state
            assert provider_b.calls == 0
            # And the other way round.
            other = make_message("from-b")
            state_b = await runtime_b.compose_state(other)
            assert await runtime_a.state_cache.get(other.id) == state_b
            assert {k async for k, _ in runtime_a.state_cache.entries()} == {
                "shared-msg",
                "from-b",
            }
            remaining = await runtime_a.state_cache.ttl_of(message.id)
            assert remaining is not None and 0 < remaining <= 3600
            assert await runtime_b.state_cache.delete(message.id) is True
            assert await runtime_a.state_cache.get(message.id) is None
    finally:
        await service_a.aclose()
        await service_b.aclose()

    # A restart: a new service on the same backend still has the state.
    service_c = open_service()
    try:
        async with AgentRuntime(plugins=[Plugin("store", services=[service_c])]) as runtime_c:
            assert await runtime_c.state_cache.get("from-b") == state_b
    finally:
        await service_c.aclose()


async def test_memory_services_do_not_share() -> None:
    # The contrast: two in-memory services are two separate worlds.
    first, second = StoreService(MemoryStore()), StoreService(MemoryStore())
    async with (
        AgentRuntime(plugins=[Plugin("a", services=[first])]) as a,
        AgentRuntime(plugins=[Plugin("b", services=[second])]) as b,
    ):
        await a.state_cache.set("m", {"x": 1})
        assert await b.state_cache.get("m") is None
    await first.aclose()
    await second.aclose()


async def test_two_runtimes_share_state_over_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    await assert_runtimes_share_state(lambda: kvstore.open_service(url))


@pytest.mark.redis
async def test_two_runtimes_share_state_over_redis(redis_url: str) -> None:
    await assert_runtimes_share_state(lambda: kvstore.open_service(redis_url))


async def test_runtimes_share_state_through_the_environment(tmp_path: Path) -> None:
    # The deployment form of (c): no code change, only KV_STORE_* variables.
    environ = {"KV_STORE_BACKEND": "sqlite", "KV_STORE_PATH": str(tmp_path / "env.db")}
    message = make_message("env-msg")
    provider = CountingProvider({})
    async with (
        AgentRuntime(agent_id="a", providers=[provider], environ=environ) as a,
        AgentRuntime(agent_id="b", providers=[provider], environ=environ) as b,
    ):
        await a.compose_state(message)
        assert await b.compose_state(message) == {"composed_by": "a"}
        assert provider.calls == 1
