"""The runtime on a custom store that has only the first round's methods.

``keep_ttl``, ``persist`` and ``lock`` joined the :class:`~kvstore.KVStore`
protocol in the second round; a store written against the first one (no such
keyword, no such methods) must keep working as the runtime's KV service: its
sessions, its state cache, and a :class:`~kvstore.MetricsStore` around it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from typing import Any, cast

import pytest

from kvstore import KVStore, MemoryStore, MetricsStore, StoreClosedError
from kvstore.testing import ManualClock
from runtime import AgentRuntime, Message, Plugin, SessionManager, SessionsConfig

pytestmark = pytest.mark.anyio


class Round1Store:
    """The round-1 protocol exactly: no ``keep_ttl`` keyword, no ``persist`` or ``lock``."""

    def __init__(self, inner: MemoryStore) -> None:
        self._inner = inner
        self.calls: list[str] = []

    async def get(self, key: str, default: Any = None) -> Any:
        self.calls.append("get")
        return await self._inner.get(key, default)

    async def set(self, key: str, value: Any, *, ttl: float | None = None) -> None:
        self.calls.append("set")
        await self._inner.set(key, value, ttl=ttl)

    async def delete(self, key: str) -> bool:
        self.calls.append("delete")
        return await self._inner.delete(key)

    async def entries(self, prefix: str = "") -> AsyncGenerator[tuple[str, Any], None]:
        self.calls.append("entries")
        async for item in self._inner.entries(prefix):
            yield item

    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        self.calls.append("get_many")
        return await self._inner.get_many(keys)

    async def set_many(self, mapping: Mapping[str, Any], *, ttl: float | None = None) -> None:
        self.calls.append("set_many")
        await self._inner.set_many(mapping, ttl=ttl)

    async def delete_many(self, keys: Iterable[str]) -> int:
        self.calls.append("delete_many")
        return await self._inner.delete_many(keys)

    async def add(self, key: str, value: Any, *, ttl: float | None = None) -> bool:
        self.calls.append("add")
        return await self._inner.add(key, value, ttl=ttl)

    async def update(
        self, key: str, fn: Callable[[Any], Any], *, default: Any = None, ttl: float | None = None
    ) -> Any:
        self.calls.append("update")
        return await self._inner.update(key, fn, default=default, ttl=ttl)

    async def ttl(self, key: str) -> float | None:
        self.calls.append("ttl")
        return await self._inner.ttl(key)

    async def expire(self, key: str, ttl: float) -> bool:
        self.calls.append("expire")
        return await self._inner.expire(key, ttl)

    async def clear(self) -> None:
        await self._inner.clear()

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> Round1Store:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class Round1Service:
    """A KV service handing out :class:`Round1Store` s, optionally wrapped in metrics."""

    def __init__(self, clock: ManualClock, *, metrics: bool) -> None:
        self._clock = clock
        self._metrics = metrics
        self.stores: dict[str, Round1Store] = {}
        self._handles: dict[str, Any] = {}

    def get_store(self, name: str) -> Any:
        if name not in self._handles:
            store = Round1Store(MemoryStore(clock=self._clock))
            self.stores[name] = store
            # A round-1 store is no KVStore to mypy (it lacks the new methods);
            # at run time the wrapper must cope, which is what is tested here.
            wrapped = MetricsStore(cast(KVStore, store), name=name)
            self._handles[name] = wrapped if self._metrics else store
        return self._handles[name]

    async def aclose(self) -> None:
        for store in self.stores.values():
            await store.aclose()


def test_the_store_lacks_the_second_round() -> None:
    store = Round1Store(MemoryStore())
    assert not hasattr(store, "persist") and not hasattr(store, "lock")


@pytest.mark.parametrize("metrics", [False, True], ids=["bare", "metrics"])
async def test_runtime_runs_sessions_and_state_cache_on_a_round1_store(metrics: bool) -> None:
    clock = ManualClock(1_700_000_000.0)
    service = Round1Service(clock, metrics=metrics)
    config = SessionsConfig(default_timeout_minutes=1, max_duration_minutes=10)
    plugin = Plugin("round1", services=[service])
    async with AgentRuntime(plugins=[plugin], sessions_config=config, environ={}) as runtime:
        assert runtime.kv_service is service
        # The runtime's own manager runs on the wall clock; this one on the stores'.
        manager = SessionManager(runtime, config=config, clock=clock)
        session = await manager.create(agent_id="agent", user_id="user")
        reply = await manager.send_message(session.id, "hello")
        assert reply.role == "agent"
        assert [m.role for m in await manager.messages(session.id)] == ["agent", "user"]
        await manager.renew(session.id)
        await manager.heartbeat(session.id)
        assert [s.id for s in await manager.list()] == [session.id]

        message = Message(
            id="m1", session_id=session.id, role="user", content="hi", created_at=clock()
        )
        state = await runtime.compose_state(message)
        assert await runtime.state_cache.get("m1") == state

        await clock.advance(3600)  # past the session's timeout and max duration
        await manager.sweep()
        assert await manager.list() == []
        assert await manager.end(session.id) is False

    used = {call for store in service.stores.values() for call in store.calls}
    assert {"get", "set", "update"} & used  # the runtime did run on these stores
    await service.aclose()
    with pytest.raises(StoreClosedError):
        await service.stores["sessions"].get("x")


async def test_metrics_over_a_round1_store_forwards_round1_calls() -> None:
    # MetricsStore around a round-1 store: the round-1 calls pass, the new ones
    # fail as the store does (AttributeError), and a plain set never sends keep_ttl.
    store = MetricsStore(cast(KVStore, Round1Store(MemoryStore())))
    await store.set("k", 1, ttl=10)
    assert await store.update("k", lambda n: n + 1) == 2
    with pytest.raises(AttributeError):
        await store.persist("k")
    with pytest.raises(TypeError):
        await store.set("k", 3, keep_ttl=True)
    with pytest.raises(TypeError):
        await store.update("k", lambda n: n + 1, keep_ttl=True)
    assert await store.get("k") == 2
