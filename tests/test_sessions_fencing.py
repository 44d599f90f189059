"""A stale idempotency owner never stores: the claim compares the owner token atomically.

The in-flight marker of an idempotency key is a lease its request keeps alive.
Under load a request can stall past its lease while a retry on another replica
takes the key over; before the fence both then stored the exchange (the kill -9
soak of ``test_sessions_faults.py`` found 4 such duplicates). Each test stages
one such interleaving deterministically, on memory, SQLite and Redis: the first
owner is held at a chosen step (a gate on its store, or on its reply), the
lease lapses by moving the stores' clock, and the exchange must be stored once,
with counts equal to history.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from fixtures_redis import shift_server_clocks
from test_sessions import SingleStoreService
from test_sessions_replica_path import GatedStore

from kvstore import (
    BackendUnavailableError,
    KVStore,
    MemoryStore,
    SQLiteStore,
    StoreService,
    open_service,
)
from kvstore.testing import ManualClock
from kvstore.wrapper import StoreWrapper
from runtime.errors import ExchangeNotStoredError
from runtime.messages import Message
from runtime.sessions import IdempotencyInFlightError, SessionManager, SessionsConfig
from runtime.sessions.keys import SESSIONS_STORE

pytestmark = pytest.mark.anyio

LEASE = 10.0
"""idempotency_pending_seconds of every manager here."""


class Host:
    """A runtime stand-in whose reply can be held until :attr:`go` is set."""

    agent_id = "agent-1"

    def __init__(self, service: Any, *, hold: bool = False) -> None:
        self.kv_service = service
        self.started = anyio.Event()
        self.go: anyio.Event | None = anyio.Event() if hold else None

    async def compose_state(self, message: Message) -> dict[str, Any]:
        return {}

    async def generate_reply(self, message: Message, state: dict[str, Any]) -> str:
        self.started.set()
        if self.go is not None:
            await self.go.wait()
        return f"re: {message.content}"


@dataclass
class Backend:
    """Stores on one backend, and a clock the managers and (but for Redis) the stores share."""

    service: StoreService
    clock: ManualClock
    redis_url: str | None = None

    async def advance(self, seconds: float) -> None:
        """Let *seconds* pass for the managers and the stores' TTLs."""
        self.clock.advance_by(seconds)
        if self.redis_url is not None:
            await shift_server_clocks([self.redis_url], seconds)

    def manager(self, store: KVStore | None = None, *, hold: bool = False) -> SessionManager:
        """A replica on the backend; *store*: a wrapper of its sessions store."""
        service = self.service if store is None else SingleStoreService(store)
        return SessionManager(
            Host(service, hold=hold),
            clock=self.clock,
            config=SessionsConfig(idempotency_pending_seconds=LEASE),
        )


@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    # Near the wall clock: Redis keeps its TTLs on that one.
    clock = ManualClock(time.time())
    if request.param == "memory":
        yield Backend(StoreService(MemoryStore(clock=clock)), clock)
    elif request.param == "sqlite":
        yield Backend(StoreService(SQLiteStore(tmp_path / "kv.db", clock=clock)), clock)
    else:
        url: str = request.getfixturevalue("redis_url")
        yield Backend(open_service(url, metrics=False), clock, url)


async def stored(manager: SessionManager, session_id: str) -> tuple[list[str], int]:
    """History's contents, oldest first, and the session's message count."""
    history = await manager.messages(session_id, limit=100)
    return [m.content for m in reversed(history)], (await manager.get(session_id)).message_count


async def test_an_owner_stalled_before_writing_loses_to_the_retry_that_took_over(
    backend: Backend,
) -> None:
    gated = GatedStore(backend.service.get_store(SESSIONS_STORE))
    stalled, retry = backend.manager(gated), backend.manager()
    session = await retry.create(user_id="u")
    answers: list[Message] = []

    async def first() -> None:
        answers.append(await stalled.send_message(session.id, "hi", idempotency_key="k"))

    async with anyio.create_task_group() as group:
        gated.armed = True
        group.start_soon(first)
        await gated.blocked.wait()  # seqs allocated, messages about to be written
        await backend.advance(LEASE + 1)  # the stalled owner's lease lapses
        reply = await retry.send_message(session.id, "hi", idempotency_key="k")
        gated.release.set()
    # The stale owner's client gets the answer that was stored: the retry's.
    assert answers == [reply]
    assert await stored(retry, session.id) == (["hi", "re: hi"], 2)
    assert await retry.send_message(session.id, "hi", idempotency_key="k") == reply
    await backend.service.aclose()


async def test_an_owner_stalled_in_its_reply_gets_409_while_the_retry_runs(
    backend: Backend,
) -> None:
    stalled, retry = backend.manager(hold=True), backend.manager(hold=True)
    first_host, retry_host = stalled._runtime, retry._runtime
    assert isinstance(first_host, Host) and isinstance(retry_host, Host)
    assert first_host.go is not None and retry_host.go is not None
    session = await retry.create(user_id="u")
    outcome: list[BaseException] = []
    answers: list[Message] = []
    lost = anyio.Event()

    async def first() -> None:
        try:
            await stalled.send_message(session.id, "hi", idempotency_key="k")
        except IdempotencyInFlightError as err:
            outcome.append(err)
        finally:
            lost.set()

    async def second() -> None:
        answers.append(await retry.send_message(session.id, "hi", idempotency_key="k"))

    async with anyio.create_task_group() as group:
        group.start_soon(first)
        await first_host.started.wait()
        await backend.advance(LEASE + 1)
        group.start_soon(second)
        await retry_host.started.wait()  # the retry holds the key now
        first_host.go.set()
        with anyio.fail_after(60):
            await lost.wait()  # refused: the retry's marker is not its own
        retry_host.go.set()
    assert len(outcome) == 1 and len(answers) == 1
    assert await stored(retry, session.id) == (["hi", "re: hi"], 2)
    await backend.service.aclose()


async def test_giving_up_a_stalled_range_revokes_its_owner_and_keeps_nothing(
    backend: Backend,
) -> None:
    gated = GatedStore(backend.service.get_store(SESSIONS_STORE))
    stalled, other = backend.manager(gated), backend.manager()
    session = await other.create(user_id="u")
    answers: list[Message] = []

    async def first() -> None:
        answers.append(await stalled.send_message(session.id, "hi", idempotency_key="k"))

    async with anyio.create_task_group() as group:
        gated.armed = True
        group.start_soon(first)
        await gated.blocked.wait()
        # Past commit_timeout: a reader gives the stalled range up, revoking its
        # marker; the retry then takes the key over and stores the exchange.
        await backend.advance(max(LEASE, other.config.commit_timeout) + 1)
        assert await stored(other, session.id) == ([], 0)
        reply = await other.send_message(session.id, "hi", idempotency_key="k")
        assert await stored(other, session.id) == (["hi", "re: hi"], 2)
        gated.release.set()  # the stalled owner's messages land late, over the tombstones
    assert answers == [reply]
    assert await stored(other, session.id) == (["hi", "re: hi"], 2)
    await backend.service.aclose()


async def test_a_claim_whose_answer_was_lost_keeps_the_exchange_once(
    backend: Backend,
) -> None:
    """The claim was applied but its reply lost: the commit never came, the answer stands."""

    class LosesTheClaimsReply(StoreWrapper):
        async def update(self, key: str, fn: Any, **options: Any) -> Any:
            result = await self.inner.update(key, fn, **options)
            if key.startswith("i:") and isinstance(result, dict) and result["state"] == "done":
                raise BackendUnavailableError("connection lost after EXEC")
            return result

    failing, other = (
        backend.manager(LosesTheClaimsReply(backend.service.get_store(SESSIONS_STORE))),
        backend.manager(),
    )
    session = await other.create(user_id="u")
    with pytest.raises(BackendUnavailableError):
        await failing.send_message(session.id, "hi", idempotency_key="k")
    # The retry gets the claimed answer at once; its messages show once the
    # range is given up (commit_timeout), not a second time.
    reply = await other.send_message(session.id, "hi", idempotency_key="k")
    assert reply.content == "re: hi"
    await backend.advance(other.config.commit_timeout + 1)
    assert await stored(other, session.id) == (["hi", "re: hi"], 2)
    assert await other.send_message(session.id, "hi", idempotency_key="k") == reply
    await backend.service.aclose()


async def test_an_unkeyed_range_given_up_stays_given_up_when_its_messages_land_late(
    backend: Backend,
) -> None:
    """Without a key the range is fenced by the record: a late write stays invisible.

    The stalled writer's ``set_many`` is in flight when a reader gives its range
    up (tombstones, counted as holes); the write then lands over the tombstones.
    Before the fence those messages showed in history while the count had
    them as holes, so the count and history disagreed for good.
    """
    gated = GatedStore(backend.service.get_store(SESSIONS_STORE))
    stalled, other = backend.manager(gated), backend.manager()
    session = await other.create(user_id="u")
    failures: list[ExchangeNotStoredError] = []

    async def first() -> None:
        try:
            await stalled.send_message(session.id, "late")
        except ExchangeNotStoredError as err:
            failures.append(err)

    async with anyio.create_task_group() as group:
        gated.armed = True
        group.start_soon(first)
        await gated.blocked.wait()  # the messages' write is in flight
        await backend.advance(other.config.commit_timeout + 1)
        assert await stored(other, session.id) == ([], 0)  # given up
        await other.send_message(session.id, "hi")
        gated.release.set()  # the write lands, over the tombstones
    assert len(failures) == 1
    assert await stored(other, session.id) == (["hi", "re: hi"], 2)
    # The page-by-page reads and the searches skip the late messages too.
    first_page = await other.messages(session.id, limit=1, after=session.created_at)
    assert [m.content for m in first_page] == ["hi"]
    assert await stored(stalled, session.id) == (["hi", "re: hi"], 2)
    await backend.service.aclose()
