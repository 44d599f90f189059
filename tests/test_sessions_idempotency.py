"""Idempotency keys on send-message, and the open/close hooks of streaming transports.

Managers on one store stand for replicas; clocks are injected (no sleeping).
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from kvstore import MemoryStore, StoreService
from kvstore.testing import ManualClock
from runtime.messages import Message
from runtime.sessions import (
    IdempotencyInFlightError,
    IdempotencyKeyReusedError,
    SessionManager,
    SessionsConfig,
)

pytestmark = pytest.mark.anyio

START = 1_700_000_000.0


class Host:
    """A runtime stand-in whose replies can be held or made to fail."""

    agent_id = "agent-1"

    def __init__(self, service: StoreService) -> None:
        self.kv_service = service
        self.hold: anyio.Event | None = None
        self.started = anyio.Event()
        self.fail = False

    async def compose_state(self, message: Message) -> dict[str, Any]:
        return {}

    async def generate_reply(self, message: Message, state: dict[str, Any]) -> str:
        self.started.set()
        if self.hold is not None:
            await self.hold.wait()
        if self.fail:
            raise RuntimeError("model unavailable")
        return f"re: {message.content}"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def service(clock: ManualClock) -> StoreService:
    return StoreService(MemoryStore(clock=clock))


def replica(service: StoreService, clock: ManualClock, **config: Any) -> SessionManager:
    return SessionManager(Host(service), clock=clock, config=SessionsConfig(**config))


async def counts(manager: SessionManager, session_id: str) -> tuple[int, int]:
    history = await manager.messages(session_id, limit=100)
    return (await manager.get(session_id)).message_count, len(history)


async def test_a_retry_on_another_replica_returns_the_first_reply_and_stores_nothing(
    service: StoreService, clock: ManualClock
) -> None:
    one, two = replica(service, clock), replica(service, clock)
    session = await one.create(user_id="u")
    first = await one.send_message(session.id, "hi", idempotency_key="k1")
    clock.advance_by(5)
    again = await two.send_message(session.id, "hi", idempotency_key="k1")
    assert again == first
    assert await counts(two, session.id) == (2, 2)
    other = await two.send_message(session.id, "hi", idempotency_key="k2")
    assert other.id != first.id
    assert await counts(one, session.id) == (4, 4)


async def test_the_same_key_with_another_body_is_refused(
    service: StoreService, clock: ManualClock
) -> None:
    manager = replica(service, clock)
    session = await manager.create(user_id="u")
    await manager.send_message(session.id, "hi", idempotency_key="k")
    with pytest.raises(IdempotencyKeyReusedError):
        await manager.send_message(session.id, "hello", idempotency_key="k")
    with pytest.raises(IdempotencyKeyReusedError):
        await manager.send_message(session.id, "hi", metadata={"x": 1}, idempotency_key="k")
    assert await counts(manager, session.id) == (2, 2)
    # Scoped to the session: another session may use the same key.
    elsewhere = await manager.create(user_id="v")
    await manager.send_message(elsewhere.id, "hello", idempotency_key="k")


async def test_a_retry_while_the_first_is_in_flight_is_refused(
    service: StoreService, clock: ManualClock
) -> None:
    slow = replica(service, clock)
    host = slow._runtime
    assert isinstance(host, Host)
    host.hold = anyio.Event()
    other = replica(service, clock)
    session = await other.create(user_id="u")
    async with anyio.create_task_group() as group:
        group.start_soon(lambda: slow.send_message(session.id, "hi", idempotency_key="k"))
        await host.started.wait()
        with pytest.raises(IdempotencyInFlightError):
            await other.send_message(session.id, "hi", idempotency_key="k")
        host.hold.set()
    assert await counts(other, session.id) == (2, 2)


async def test_a_failed_reply_stores_nothing_and_its_retry_stores_once(
    service: StoreService, clock: ManualClock
) -> None:
    manager = replica(service, clock)
    host = manager._runtime
    assert isinstance(host, Host)
    session = await manager.create(user_id="u")
    host.fail = True
    with pytest.raises(RuntimeError):
        await manager.send_message(session.id, "hi", idempotency_key="k")
    assert await counts(manager, session.id) == (0, 0)
    host.fail = False
    reply = await manager.send_message(session.id, "hi", idempotency_key="k")
    assert reply.content == "re: hi"
    assert await counts(manager, session.id) == (2, 2)


async def test_keys_are_forgotten_after_the_window(
    service: StoreService, clock: ManualClock
) -> None:
    manager = replica(service, clock, idempotency_window=60)
    session = await manager.create(user_id="u")
    first = await manager.send_message(session.id, "hi", idempotency_key="k")
    clock.advance_by(30)
    assert await manager.send_message(session.id, "hi", idempotency_key="k") == first
    clock.advance_by(31)
    assert await manager.send_message(session.id, "hi", idempotency_key="k") != first
    assert await counts(manager, session.id) == (4, 4)


async def test_a_marker_left_by_a_dead_process_lapses(
    service: StoreService, clock: ManualClock
) -> None:
    manager = replica(service, clock, idempotency_pending_seconds=10)
    session = await manager.create(user_id="u")
    # What a process killed while making the reply leaves behind.
    from runtime.sessions import idempotency

    marker = idempotency.marker_key(session.id, "k")
    print_ = idempotency.fingerprint("hi", {})
    await manager.store.add(
        marker, idempotency.pending(idempotency.Lease(marker, print_), START), ttl=10
    )
    with pytest.raises(IdempotencyInFlightError):
        await manager.send_message(session.id, "hi", idempotency_key="k")
    clock.advance_by(11)
    await manager.send_message(session.id, "hi", idempotency_key="k")
    assert await counts(manager, session.id) == (2, 2)


async def test_streaming_transports_store_a_reply_or_an_error_marker(
    service: StoreService, clock: ManualClock
) -> None:
    manager = replica(service, clock)
    session = await manager.create(user_id="u")
    user = await manager.open_exchange(session.id, "stream me")
    assert await counts(manager, session.id) == (1, 1)
    await manager.close_exchange(user, "streamed")
    failed = await manager.open_exchange(session.id, "and me")
    marker = await manager.close_exchange(failed, error="model unavailable")
    assert marker.metadata == {"in_reply_to": failed.id, "error": True}
    history = await manager.messages(session.id)
    assert [m.content for m in reversed(history)] == [
        "stream me",
        "streamed",
        "and me",
        "model unavailable",
    ]
    assert await counts(manager, session.id) == (4, 4)
