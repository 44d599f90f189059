"""AgentRuntime: registration, lifecycle, choice of the KV service, compose_state, replies."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from kvstore import (
    ConfigError,
    InvalidKeyError,
    MemoryStore,
    MetricsStore,
    SerializationError,
    StoreClosedError,
    StoreService,
    is_kv_store_service,
)
from runtime import (
    AgentRuntime,
    Message,
    Plugin,
    ProviderError,
    RuntimeStateError,
    Service,
    StateCache,
)
from runtime.agent import DEFAULT_STATE_CACHE_MAX_ENTRIES, echo_handler
from runtime.plugins import service_name

pytestmark = pytest.mark.anyio

NO_ENV: Mapping[str, str] = {}


def make_message(content: str = "hello", *, msg_id: str | None = None) -> Message:
    return Message(
        id=msg_id or f"msg-{uuid.uuid4()}",
        session_id="session-1",
        role="user",
        content=content,
        created_at=1_700_000_000.0,
    )


class CountingProvider:
    """A provider returning a fixed dict and counting its calls."""

    def __init__(self, result: Mapping[str, Any], name: str = "counting") -> None:
        self.result = dict(result)
        self.calls = 0
        self.__name__ = name

    async def __call__(self, runtime: AgentRuntime, message: Message) -> dict[str, Any]:
        self.calls += 1
        await anyio.lowlevel.checkpoint()
        return dict(self.result)


class RecordingService(Service):
    """Records start/stop calls into a shared journal."""

    def __init__(self, name: str, journal: list[str], *, fail_start: bool = False) -> None:
        self.name = name
        self.journal = journal
        self.fail_start = fail_start
        self.runtime: AgentRuntime | None = None

    async def start(self, runtime: AgentRuntime) -> None:
        if self.fail_start:
            raise RuntimeError(f"{self.name} cannot start")
        self.runtime = runtime
        self.journal.append(f"start {self.name}")

    async def stop(self) -> None:
        self.journal.append(f"stop {self.name}")


class ClosableService(Service):
    """A KVStoreService that is also a Service: wraps a StoreService, records aclose."""

    def __init__(self) -> None:
        self.inner = StoreService(MemoryStore())
        self.closed = 0

    def get_store(self, name: str) -> Any:
        return self.inner.get_store(name)

    async def aclose(self) -> None:
        self.closed += 1
        await self.inner.aclose()


# -- (a) no custom service: the in-memory fallback -------------------------------------------


async def test_default_is_in_memory_and_state_is_retrievable() -> None:
    provider = CountingProvider({"topic": "weather"})
    message = make_message()
    async with AgentRuntime(providers=[provider], environ=NO_ENV) as runtime:
        assert isinstance(runtime.kv_service, StoreService)
        assert isinstance(runtime.kv_service.backend, MemoryStore)
        assert isinstance(runtime.state_cache, StateCache)
        state = await runtime.compose_state(message)
        assert state == {"topic": "weather"}
        assert await runtime.state_cache.get(message.id) == {"topic": "weather"}
        assert [key async for key, _ in runtime.state_cache.entries()] == [message.id]
        fallback = runtime.kv_service
    # The runtime created the fallback, so it closed it.
    with pytest.raises(StoreClosedError):
        fallback.get_store("state_cache")


async def test_restart_starts_with_an_empty_cache() -> None:
    message = make_message()
    async with AgentRuntime(providers=[CountingProvider({"a": 1})], environ=NO_ENV) as first:
        await first.compose_state(message)
        assert await first.state_cache.get(message.id) == {"a": 1}
    async with AgentRuntime(providers=[CountingProvider({"a": 1})], environ=NO_ENV) as second:
        assert await second.state_cache.get(message.id) is None
        assert [kv async for kv in second.state_cache.entries()] == []


async def test_memory_fallback_bounds_state_cache_but_not_sessions() -> None:
    settings = {"STATE_CACHE_MAX_ENTRIES": 3}
    messages = [make_message(msg_id=f"m{i}") for i in range(5)]
    async with AgentRuntime(
        providers=[CountingProvider({"x": 1})], settings=settings, environ=NO_ENV
    ) as runtime:
        for message in messages:
            await runtime.compose_state(message)
        kept = {key async for key, _ in runtime.state_cache.entries()}
        # LRU: the two oldest were evicted.
        assert kept == {"m2", "m3", "m4"}
        assert await runtime.state_cache.get("m0") is None
        sessions = runtime.kv_service.get_store("sessions")
        await sessions.set_many({f"s{i}": i for i in range(10)})
        assert len([kv async for kv in sessions.entries()]) == 10


async def test_memory_fallback_default_bound() -> None:
    async with AgentRuntime(environ=NO_ENV) as runtime:
        service = runtime.kv_service
        assert isinstance(service, StoreService)
        store = service.get_store("state_cache")
        inner = store.inner if isinstance(store, MetricsStore) else store
        assert isinstance(inner, MemoryStore)
        assert inner._max_entries == DEFAULT_STATE_CACHE_MAX_ENTRIES


# -- (b) a custom service registered through a plugin ------------------------------------------


async def test_custom_service_via_plugin_holds_the_state() -> None:
    service = StoreService(MemoryStore())  # metrics=True: stores are MetricsStore
    provider = CountingProvider({"mood": "curious"})
    plugin = Plugin("storage", services=[service], providers=[provider])
    message = make_message()
    async with AgentRuntime(plugins=[plugin], environ=NO_ENV) as runtime:
        assert runtime.kv_service is service
        assert runtime.plugins == (plugin,)
        state = await runtime.compose_state(message)
        again = await runtime.compose_state(message)
        assert state == again == {"mood": "curious"}
        assert provider.calls == 1

    store = service.get_store("state_cache")  # still open: the user owns it
    assert await store.get(message.id) == {"mood": "curious"}
    assert isinstance(store, MetricsStore)
    metrics = store.get_metrics()
    # compose_state: a miss then a write, then a hit; plus the get above, a hit.
    assert (metrics.gets, metrics.hits, metrics.misses, metrics.sets) == (3, 2, 1, 1)
    assert metrics.hit_ratio == pytest.approx(2 / 3)
    assert [key async for key, _ in store.entries()] == [message.id]
    assert [key async for key, _ in StateCache(store).entries()] == [message.id]
    await service.aclose()


async def test_first_kv_service_wins_and_is_not_closed() -> None:
    journal: list[str] = []
    first, second = ClosableService(), ClosableService()
    runtime = AgentRuntime(
        plugins=[Plugin("a", services=[RecordingService("plain", journal), first])],
        environ={"KV_STORE_BACKEND": "memory"},
    )
    runtime.register_service(second)
    async with runtime:
        assert runtime.kv_service is first
        assert is_kv_store_service(runtime.kv_service)
    assert first.closed == 0 and second.closed == 0
    await first.aclose()
    await second.aclose()


async def test_registered_service_wins_over_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KV_STORE_BACKEND", "bogus")  # would fail if it were read
    service = StoreService(MemoryStore())
    async with AgentRuntime(plugins=[Plugin("p", services=[service])]) as runtime:
        assert runtime.kv_service is service
    await service.aclose()


# -- KV_STORE_BACKEND ----------------------------------------------------------------------------


async def test_environment_selects_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KV_STORE_BACKEND", "memory")
    monkeypatch.setenv("KV_STORE_TTL", "120")
    async with AgentRuntime(settings={"STATE_CACHE_MAX_ENTRIES": 2}) as runtime:
        service = runtime.kv_service
        assert isinstance(service, StoreService)
        store = service.get_store("sessions")
        await store.set("k", 1)
        remaining = await store.ttl("k")  # KV_STORE_TTL reached the service
        assert remaining is not None and 0 < remaining <= 120
        for i in range(3):
            await runtime.state_cache.set(f"m{i}", {"i": i})
        assert len([kv async for kv in runtime.state_cache.entries()]) == 2
    with pytest.raises(StoreClosedError):
        service.get_store("state_cache")


async def test_environment_sqlite(tmp_path: Any) -> None:
    path = tmp_path / "env.db"
    environ = {"KV_STORE_BACKEND": "sqlite", "KV_STORE_PATH": str(path)}
    message = make_message()
    async with AgentRuntime(providers=[CountingProvider({"a": 1})], environ=environ) as runtime:
        await runtime.compose_state(message)
    assert path.exists()
    async with AgentRuntime(environ=environ) as again:
        assert await again.state_cache.get(message.id) == {"a": 1}


async def test_bad_environment_fails_initialize_and_stops_services() -> None:
    journal: list[str] = []
    runtime = AgentRuntime(
        plugins=[Plugin("p", services=[RecordingService("svc", journal)])],
        environ={"KV_STORE_BACKEND": "floppy-disk"},
    )
    with pytest.raises(ConfigError, match="KV_STORE_BACKEND"):
        await runtime.initialize()
    assert journal == ["start svc", "stop svc"]
    assert not runtime.initialized
    with pytest.raises(RuntimeStateError):
        _ = runtime.kv_service


async def test_choice_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="runtime.agent")
    async with AgentRuntime(agent_id="logged", environ=NO_ENV):
        pass
    assert any("in memory" in r.getMessage() and "logged" in r.getMessage() for r in caplog.records)
    caplog.clear()
    service = StoreService(MemoryStore())
    plugin = Plugin("p", services=[service])
    async with AgentRuntime(plugins=[plugin], environ=NO_ENV):
        pass
    assert any("registered service 'StoreService'" in r.getMessage() for r in caplog.records)
    caplog.clear()
    async with AgentRuntime(environ={"KV_STORE_BACKEND": "memory"}):
        pass
    assert any("KV_STORE_BACKEND=memory" in r.getMessage() for r in caplog.records)
    await service.aclose()


# -- registration and lifecycle -------------------------------------------------------------------


async def test_registering_after_initialize_raises() -> None:
    runtime = AgentRuntime(environ=NO_ENV)
    await runtime.initialize()
    with pytest.raises(RuntimeStateError, match="before initialize"):
        runtime.register_service(StoreService())
    with pytest.raises(RuntimeStateError):
        runtime.register_plugin(Plugin("late"))
    assert runtime.services == ()
    await runtime.aclose()
    with pytest.raises(RuntimeStateError):
        runtime.register_service(object())
    with pytest.raises(RuntimeStateError):
        runtime.register_provider(CountingProvider({}))


async def test_registration_validates() -> None:
    runtime = AgentRuntime()
    service = object()
    runtime.register_service(service)
    with pytest.raises(ValueError, match="already registered"):
        runtime.register_service(service)
    with pytest.raises(TypeError):
        runtime.register_provider("not callable")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        runtime.register_plugin("not a plugin")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Plugin("")
    with pytest.raises(TypeError, match="provider"):
        Plugin("p", providers=[42])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        AgentRuntime(agent_id="")
    with pytest.raises(TypeError):
        AgentRuntime(handler="nope")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        AgentRuntime(settings={"X": [1]})  # type: ignore[dict-item]


async def test_agent_id_defaults_to_uuid4() -> None:
    first, second = AgentRuntime(), AgentRuntime()
    assert uuid.UUID(first.agent_id).version == 4
    assert first.agent_id != second.agent_id
    assert AgentRuntime(agent_id="eliza").agent_id == "eliza"


async def test_services_start_in_order_and_stop_in_reverse() -> None:
    journal: list[str] = []
    a, b, c = (RecordingService(n, journal) for n in "abc")
    runtime = AgentRuntime(plugins=[Plugin("p", services=[a, b])], environ=NO_ENV)
    runtime.register_service(c)
    runtime.register_service(object())  # plain objects have no hooks
    async with runtime:
        assert journal == ["start a", "start b", "start c"]
        assert a.runtime is runtime
        assert runtime.get_service("b") is b
        assert runtime.get_service("missing") is None
    assert journal == ["start a", "start b", "start c", "stop c", "stop b", "stop a"]
    await runtime.aclose()
    assert journal.count("stop a") == 1


async def test_failed_start_stops_the_started_ones_and_allows_retry() -> None:
    journal: list[str] = []
    good = RecordingService("good", journal)
    bad = RecordingService("bad", journal, fail_start=True)
    runtime = AgentRuntime(plugins=[Plugin("p", services=[good, bad])], environ=NO_ENV)
    with pytest.raises(RuntimeError, match="bad cannot start"):
        await runtime.initialize()
    assert journal == ["start good", "stop good"]
    bad.fail_start = False
    await runtime.initialize()
    assert runtime.initialized
    await runtime.aclose()
    assert journal[-2:] == ["stop bad", "stop good"]


async def test_stop_errors_do_not_skip_cleanup() -> None:
    journal: list[str] = []

    class Failing(RecordingService):
        async def stop(self) -> None:
            await super().stop()
            raise OSError("disk gone")

    runtime = AgentRuntime(
        plugins=[Plugin("p", services=[RecordingService("a", journal), Failing("b", journal)])],
        environ=NO_ENV,
    )
    await runtime.initialize()
    fallback = runtime.kv_service
    with pytest.raises(OSError, match="disk gone"):
        await runtime.aclose()
    assert journal[-2:] == ["stop b", "stop a"]
    with pytest.raises(StoreClosedError):
        fallback.get_store("x")


async def test_initialize_is_idempotent_even_when_concurrent() -> None:
    journal: list[str] = []
    runtime = AgentRuntime(
        plugins=[Plugin("p", services=[RecordingService("s", journal)])], environ=NO_ENV
    )
    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(runtime.initialize)
    service = runtime.kv_service
    await runtime.initialize()
    assert runtime.kv_service is service
    assert journal == ["start s"]
    await runtime.aclose()
    await runtime.aclose()
    assert journal == ["start s", "stop s"]
    with pytest.raises(RuntimeStateError, match="closed"):
        await runtime.initialize()


async def test_attributes_need_initialize() -> None:
    runtime = AgentRuntime()
    for attribute in ("kv_service", "state_cache", "sessions"):
        with pytest.raises(RuntimeStateError, match="initialize"):
            getattr(runtime, attribute)
    with pytest.raises(RuntimeStateError):
        await runtime.compose_state(make_message())
    await runtime.aclose()  # closing a never-initialised runtime is fine


async def test_sessions_manager_is_created() -> None:
    from runtime.sessions import SessionManager

    async with AgentRuntime(environ=NO_ENV) as runtime:
        assert isinstance(runtime.sessions, SessionManager)


async def test_service_name() -> None:
    class Unnamed(Service):
        pass

    class Named(Service):
        name = "custom"

    assert Unnamed.name == "Unnamed" and service_name(Unnamed()) == "Unnamed"
    assert service_name(Named()) == "custom"
    assert service_name(object()) == "object"
    assert repr(Named()) == "<Named 'custom'>"


# -- compose_state --------------------------------------------------------------------------------


async def test_second_compose_is_served_from_the_cache() -> None:
    provider = CountingProvider({"n": 1})
    message = make_message()
    async with AgentRuntime(providers=[provider], environ=NO_ENV) as runtime:
        first = await runtime.compose_state(message)
        second = await runtime.compose_state(message)
        assert first == second == {"n": 1}
        assert provider.calls == 1
        await runtime.compose_state(make_message())
        assert provider.calls == 2
        # Forgetting the cached state makes the providers run again.
        assert await runtime.state_cache.delete(message.id) is True
        await runtime.compose_state(message)
        assert provider.calls == 3


async def test_concurrent_compose_for_one_message_runs_providers_once() -> None:
    provider = CountingProvider({"n": 1})
    message = make_message()
    results: list[dict[str, Any]] = []
    async with AgentRuntime(providers=[provider], environ=NO_ENV) as runtime:

        async def compose() -> None:
            results.append(await runtime.compose_state(message))

        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(compose)
        assert results == [{"n": 1}] * 10
        assert provider.calls == 1
        assert runtime._inflight == {}


async def test_providers_merge_in_registration_order_later_wins() -> None:
    first = CountingProvider({"shared": "first", "a": 1})
    second = CountingProvider({"shared": "second", "b": 2})
    third = CountingProvider({"c": 3})
    runtime = AgentRuntime(
        plugins=[Plugin("p", providers=[first, second])], providers=[third], environ=NO_ENV
    )
    async with runtime:
        state = await runtime.compose_state(make_message())
    assert state == {"shared": "second", "a": 1, "b": 2, "c": 3}
    assert runtime.providers == (first, second, third)


async def test_no_providers_give_an_empty_state() -> None:
    message = make_message()
    async with AgentRuntime(environ=NO_ENV) as runtime:
        assert await runtime.compose_state(message) == {}
        assert await runtime.state_cache.get(message.id) == {}


async def test_providers_run_concurrently() -> None:
    # Each provider waits for the other's event: run one after the other, they
    # would deadlock, and fail_after turns that into a failure.
    first_ready, second_ready = anyio.Event(), anyio.Event()

    async def first(runtime: AgentRuntime, message: Message) -> dict[str, Any]:
        first_ready.set()
        await second_ready.wait()
        return {"first": True}

    async def second(runtime: AgentRuntime, message: Message) -> dict[str, Any]:
        second_ready.set()
        await first_ready.wait()
        return {"second": True}

    async with AgentRuntime(providers=[first, second], environ=NO_ENV) as runtime:
        with anyio.fail_after(5):
            state = await runtime.compose_state(make_message())
    assert state == {"first": True, "second": True}


async def test_provider_failure_cancels_the_others_and_caches_nothing() -> None:
    cancelled = anyio.Event()

    async def stuck(runtime: AgentRuntime, message: Message) -> dict[str, Any]:
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()
        return {}  # pragma: no cover

    async def broken(runtime: AgentRuntime, message: Message) -> dict[str, Any]:
        await anyio.lowlevel.checkpoint()
        raise LookupError("no such user")

    message = make_message()
    async with AgentRuntime(providers=[stuck, broken], environ=NO_ENV) as runtime:
        with anyio.fail_after(5), pytest.raises(ProviderError, match="broken") as info:
            await runtime.compose_state(message)
        assert isinstance(info.value.__cause__, LookupError)
        assert cancelled.is_set()
        assert await runtime.state_cache.get(message.id) is None


async def test_provider_returning_a_non_dict_is_an_error() -> None:
    async def listy(runtime: AgentRuntime, message: Message) -> Any:
        return ["not", "a", "dict"]

    async with AgentRuntime(providers=[listy], environ=NO_ENV) as runtime:
        with pytest.raises(ProviderError, match="listy") as info:
            await runtime.compose_state(make_message())
    assert isinstance(info.value.__cause__, TypeError)


async def test_unencodable_state_is_rejected() -> None:
    async def sets(runtime: AgentRuntime, message: Message) -> dict[str, Any]:
        return {"tags": {"a", "b"}}

    async with AgentRuntime(providers=[sets], environ=NO_ENV) as runtime:
        with pytest.raises(SerializationError):
            await runtime.compose_state(make_message())
        with pytest.raises(TypeError):
            await runtime.compose_state("msg-1")  # type: ignore[arg-type]
        with pytest.raises(InvalidKeyError):
            await runtime.compose_state(make_message(msg_id="bad\x00id"))


async def test_state_ttl_comes_from_settings() -> None:
    message = make_message()
    async with AgentRuntime(settings={"STATE_CACHE_TTL": "90"}, environ=NO_ENV) as runtime:
        assert runtime.state_cache.ttl == 90.0
        await runtime.compose_state(message)
        remaining = await runtime.state_cache.ttl_of(message.id)
        assert remaining is not None and 0 < remaining <= 90
    async with AgentRuntime(environ=NO_ENV) as runtime:
        assert runtime.state_cache.ttl == 3600.0


@pytest.mark.parametrize(
    "settings",
    [
        {"STATE_CACHE_TTL": "soon"},
        {"STATE_CACHE_TTL": 0},
        {"STATE_CACHE_TTL": "nan"},
        {"STATE_CACHE_MAX_ENTRIES": "many"},
        {"STATE_CACHE_MAX_ENTRIES": 0},
        {"STATE_CACHE_MAX_ENTRIES": 2.5},
        {"STATE_CACHE_MAX_ENTRIES": float("inf")},
    ],
)
async def test_bad_settings_fail_initialize(settings: dict[str, Any]) -> None:
    runtime = AgentRuntime(settings=settings, environ=NO_ENV)
    with pytest.raises(ConfigError, match=next(iter(settings))):
        await runtime.initialize()
    assert not runtime.initialized


# -- replies --------------------------------------------------------------------------------------


async def test_default_handler_echoes() -> None:
    message = make_message("ping")
    async with AgentRuntime(environ=NO_ENV) as runtime:
        assert runtime.handler is echo_handler
        assert await runtime.generate_reply(message, {}) == "Echo: ping"


async def test_custom_handler_sees_runtime_message_and_state() -> None:
    async def handler(runtime: AgentRuntime, message: Message, state: dict[str, Any]) -> str:
        return f"{runtime.agent_id}:{message.content}:{state['mood']}"

    message = make_message("hi")
    async with AgentRuntime(
        agent_id="bot",
        handler=handler,
        providers=[CountingProvider({"mood": "glad"})],
        environ=NO_ENV,
    ) as runtime:
        state = await runtime.compose_state(message)
        assert await runtime.generate_reply(message, state) == "bot:hi:glad"


async def test_handler_must_return_a_str() -> None:
    async def handler(runtime: AgentRuntime, message: Message, state: dict[str, Any]) -> Any:
        return {"text": "hi"}

    async with AgentRuntime(handler=handler, environ=NO_ENV) as runtime:
        with pytest.raises(TypeError, match="must be a str"):
            await runtime.generate_reply(make_message(), {})
