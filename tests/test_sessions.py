"""SessionManager on the memory backend, with an injected clock (no sleeping).

A small fake runtime stands in for AgentRuntime in most tests; a few use the
real one. Storage-shape tests wrap the store to measure what each call writes
and reads.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
import math
import os
import subprocess
import sys
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import orjson
import pytest

from kvstore import KVStore, KVStoreService, MemoryStore, StoreService
from kvstore.testing import ManualClock
from kvstore.wrapper import StoreWrapper
from runtime.agent import AgentRuntime
from runtime.messages import Message
from runtime.sessions import (
    ContentTooLargeError,
    InvalidSessionInputError,
    Session,
    SessionError,
    SessionExpiredError,
    SessionManager,
    SessionNotFoundError,
    SessionRenewalError,
    SessionsConfig,
    TimeoutConfig,
)
from runtime.sessions.keys import message_key, session_key

pytestmark = pytest.mark.anyio

START = 1_700_000_000.0
MINUTE = 60.0


# -- fixtures and helpers --------------------------------------------------------------------------


@dataclass
class FakeRuntime:
    """The four members SessionManager may use, and a record of the calls."""

    kv_service: KVStoreService
    agent_id: str = "agent-1"
    composed: list[Message] = field(default_factory=list)
    fail_reply: bool = False

    async def compose_state(self, message: Message) -> dict[str, Any]:
        self.composed.append(message)
        return {"echo_of": message.content}

    async def generate_reply(self, message: Message, state: dict[str, Any]) -> str:
        if self.fail_reply:
            raise RuntimeError("model unavailable")
        return f"re: {state['echo_of']}"


class SingleStoreService:
    """A KVStoreService handing out one given store (a wrapper under test)."""

    def __init__(self, store: KVStore) -> None:
        self.store = store

    def get_store(self, name: str) -> KVStore:
        return self.store

    async def aclose(self) -> None:
        await self.store.aclose()


class WrappedStore(StoreWrapper):
    """Delegates to a store, recording reads, written bytes and TTLs.

    With ``yielding=True`` every call first yields to the event loop, so
    concurrent tasks interleave between store operations as they would over
    a network.
    """

    def __init__(self, inner: KVStore, *, yielding: bool = False) -> None:
        super().__init__(inner)
        self.yielding = yielding
        self.keys_read: list[str] = []
        self.bytes_written = 0
        self.writes: list[tuple[str, str, float | None]] = []  # (op, key, ttl)
        self.fail_next: dict[str, Exception] = {}

    def reset(self) -> None:
        self.keys_read.clear()
        self.writes.clear()
        self.bytes_written = 0

    async def _enter(self, op: str) -> None:
        if self.yielding:
            await anyio.lowlevel.checkpoint()
        error = self.fail_next.pop(op, None)
        if error is not None:
            raise error

    def _wrote(self, op: str, key: str, value: Any, ttl: float | None) -> None:
        self.bytes_written += len(key) + len(orjson.dumps(value))
        self.writes.append((op, key, ttl))

    async def get(self, key: str, default: Any = None) -> Any:
        await self._enter("get")
        self.keys_read.append(key)
        return await self.inner.get(key, default)

    async def set(
        self, key: str, value: Any, *, ttl: float | None = None, keep_ttl: bool = False
    ) -> None:
        await self._enter("set")
        await self.inner.set(key, value, ttl=ttl, keep_ttl=keep_ttl)
        self._wrote("set", key, value, ttl)

    async def delete(self, key: str) -> bool:
        await self._enter("delete")
        return await self.inner.delete(key)

    async def entries(self, prefix: str = "") -> AsyncGenerator[tuple[str, Any], None]:
        await self._enter("entries")
        async with aclosing(self.inner.entries(prefix)) as rows:
            async for key, value in rows:
                self.keys_read.append(key)
                yield key, value

    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        await self._enter("get_many")
        wanted = list(keys)
        self.keys_read.extend(wanted)
        return await self.inner.get_many(wanted)

    async def set_many(self, mapping: Mapping[str, Any], *, ttl: float | None = None) -> None:
        await self._enter("set_many")
        await self.inner.set_many(mapping, ttl=ttl)
        for key, value in mapping.items():
            self._wrote("set_many", key, value, ttl)

    async def delete_many(self, keys: Iterable[str]) -> int:
        await self._enter("delete_many")
        return await self.inner.delete_many(keys)

    async def add(self, key: str, value: Any, *, ttl: float | None = None) -> bool:
        await self._enter("add")
        added = await self.inner.add(key, value, ttl=ttl)
        if added:
            self._wrote("add", key, value, ttl)
        return added

    async def update(
        self,
        key: str,
        fn: Callable[[Any], Any],
        *,
        default: Any = None,
        ttl: float | None = None,
        keep_ttl: bool = False,
    ) -> Any:
        await self._enter("update")
        result = await self.inner.update(key, fn, default=default, ttl=ttl, keep_ttl=keep_ttl)
        self._wrote("update", key, result, ttl)
        return result


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def memory(clock: ManualClock) -> MemoryStore:
    return MemoryStore(clock=clock)


@pytest.fixture
def wrapped(memory: MemoryStore) -> WrappedStore:
    return WrappedStore(memory)


@pytest.fixture
def runtime(wrapped: WrappedStore) -> FakeRuntime:
    return FakeRuntime(SingleStoreService(wrapped))


@pytest.fixture
def manager(runtime: FakeRuntime, clock: ManualClock) -> SessionManager:
    return SessionManager(runtime, clock=clock)


def configured(runtime: FakeRuntime, clock: ManualClock, **config: Any) -> SessionManager:
    return SessionManager(runtime, config=SessionsConfig(**config), clock=clock)


async def keys_of(store: KVStore, prefix: str = "") -> set[str]:
    return {key async for key, _ in store.entries(prefix)}


async def all_messages(manager: SessionManager, session_id: str, page: int = 7) -> list[Message]:
    """Every message, newest first, by paging back with ``before``."""
    collected: list[Message] = []
    before: float | None = None
    while True:
        chunk = await manager.messages(session_id, limit=page, before=before)
        if not chunk:
            return collected
        collected.extend(chunk)
        before = chunk[-1].created_at


# -- the seed's Test 1: default in-memory behaviour ------------------------------------------------


async def test_default_in_memory_sessions_with_messages_expiry_and_cleanup() -> None:
    async with AgentRuntime(environ={}) as agent:
        # No service registered, no KV_STORE_BACKEND: sessions live in memory.
        assert isinstance(agent.kv_service, StoreService)
        assert isinstance(agent.kv_service.backend, MemoryStore)
        sessions = agent.sessions
        session = await sessions.create(user_id="user-1", metadata={"channel": "web"})
        assert session.agent_id == agent.agent_id
        reply = await sessions.send_message(session.id, "hello")
        assert reply.role == "agent" and "hello" in reply.content
        history = await sessions.messages(session.id)
        assert [m.role for m in history] == ["agent", "user"]
        assert history[1].content == "hello"
        raw = await agent.kv_service.get_store("sessions").get(f"s:{session.id}")
        assert raw["message_count"] == 2

        # Expiry and cleanup, with a clock we can move, on the same in-memory store.
        clock = ManualClock(session.created_at)
        expired: list[Session] = []
        later = SessionManager(agent, clock=clock, on_expired=expired.append)
        assert (await later.get(session.id)).message_count == 2
        clock.advance_by(31 * MINUTE)
        with pytest.raises(SessionExpiredError):
            await later.get(session.id)
        assert await later.sweep() == 1
        assert [s.id for s in expired] == [session.id]
        with pytest.raises(SessionNotFoundError):
            await sessions.get(session.id)
        store = agent.kv_service.get_store("sessions")
        assert not {k for k in await keys_of(store) if not k.startswith(("c:", "e:"))}


# -- create / get ----------------------------------------------------------------------------------


async def test_create_with_defaults(manager: SessionManager, clock: ManualClock) -> None:
    session = await manager.create(user_id="u1")
    assert session.agent_id == "agent-1"
    assert session.user_id == "u1"
    assert session.metadata == {}
    assert session.created_at == session.last_activity == START
    assert session.expires_at == START + 30 * MINUTE
    assert session.timeout_config == TimeoutConfig(30.0, True, 720.0, 5.0)
    assert session.renewal_count == 0 and session.message_count == 0
    assert session.time_remaining == 30 * MINUTE
    assert not session.is_expired and not session.is_near_expiration
    assert await manager.get(session.id) == session


async def test_create_with_agent_metadata_and_timeout(manager: SessionManager) -> None:
    metadata: dict[str, Any] = {"tags": ["a"], "n": 1}
    session = await manager.create(
        agent_id="other-agent",
        user_id="u1",
        metadata=metadata,
        timeout=TimeoutConfig(timeout_minutes=0.5, auto_renew=False, warning_threshold_minutes=0.1),
    )
    metadata["tags"].append("mutated")
    fetched = await manager.get(session.id)
    assert fetched.agent_id == "other-agent"
    assert fetched.metadata == {"tags": ["a"], "n": 1}
    assert fetched.timeout_config == TimeoutConfig(0.5, False, 720.0, 0.1)
    assert fetched.expires_at == START + 30.0
    # A mapping works as well as a TimeoutConfig.
    other = await manager.create(user_id="u2", timeout={"max_duration_minutes": 10})
    assert other.timeout_config.max_duration_minutes == 10.0
    assert other.timeout_config.timeout_minutes == 10.0  # capped by the max duration
    assert other.expires_at == START + 10 * MINUTE


async def test_config_defaults_apply(runtime: FakeRuntime, clock: ManualClock) -> None:
    manager = configured(
        runtime, clock, default_timeout_minutes=2, auto_renew=False, max_duration_minutes=60
    )
    session = await manager.create(user_id="u")
    assert session.timeout_config == TimeoutConfig(2.0, False, 60.0, 5.0)
    assert session.expires_at == START + 2 * MINUTE
    assert session.is_near_expiration  # the 5-minute warning exceeds the timeout


async def test_session_ids_are_unguessable(manager: SessionManager) -> None:
    ids = {(await manager.create(user_id="u")).id for _ in range(50)}
    assert len(ids) == 50
    for session_id in ids:
        raw = base64.urlsafe_b64decode(session_id + "=" * (-len(session_id) % 4))
        assert len(raw) * 8 >= 128


async def test_get_unknown_and_malformed_ids(manager: SessionManager) -> None:
    with pytest.raises(SessionNotFoundError) as info:
        await manager.get("A" * 24)
    error = info.value
    assert isinstance(error, KeyError) and isinstance(error, SessionError)
    assert str(error) == "session 'AAAAAAAAAAAAAAAAAAAAAAAA' not found (unknown, ended or expired)"
    assert error.session_id == "A" * 24
    for bad in ["", "has:colon", "x" * 200, "nul\x00"]:
        with pytest.raises(SessionNotFoundError):
            await manager.get(bad)
    with pytest.raises(InvalidSessionInputError):
        await manager.get(42)  # type: ignore[arg-type]


# -- send_message ----------------------------------------------------------------------------------


async def test_send_message_stores_user_message_and_reply(
    manager: SessionManager, runtime: FakeRuntime, clock: ManualClock
) -> None:
    session = await manager.create(user_id="u")
    clock.advance_by(1)
    reply = await manager.send_message(session.id, "hello", metadata={"lang": "en"})
    assert reply.role == "agent" and reply.content == "re: hello"
    assert reply.session_id == session.id
    [user] = runtime.composed
    assert user.role == "user" and user.content == "hello" and user.metadata == {"lang": "en"}
    assert reply.metadata == {"in_reply_to": user.id}
    assert user.created_at == START + 1
    assert reply.created_at > user.created_at
    assert await manager.messages(session.id) == [reply, user]
    assert (await manager.get(session.id)).message_count == 2


async def test_exchange_returns_both_messages(manager: SessionManager) -> None:
    session = await manager.create(user_id="u")
    exchange = await manager.exchange(session.id, "ping")
    assert exchange.user.role == "user" and exchange.reply.role == "agent"
    assert await manager.messages(session.id) == [exchange.reply, exchange.user]


async def test_post_answers_from_the_commit_without_reading_the_session_again(
    manager: SessionManager, wrapped: WrappedStore, clock: ManualClock
) -> None:
    session = await manager.create(user_id="u")
    clock.advance_by(1)
    wrapped.reset()
    posted = await manager.post(session, "ping")
    assert session_key(session.id) not in wrapped.keys_read  # exchange() reads it once
    assert posted.reply is not None and posted.reply.content == "re: ping"
    assert await manager.messages(session.id) == [posted.reply, posted.user]
    assert posted.session == await manager.get(session.id)
    assert posted.session.message_count == 2
    assert posted.renewed and posted.session.renewal_count == session.renewal_count + 1
    # Without the reply: the user message alone, as open_exchange() stores it.
    opened = await manager.post(posted.session, "later", reply=False)
    assert (opened.reply, opened.session.message_count) == (None, 3)
    assert await manager.close_exchange(opened.user, "re: later")
    assert (await manager.get(session.id)).message_count == 4


async def test_post_refuses_what_it_cannot_store(manager: SessionManager) -> None:
    session = await manager.create(user_id="u")
    with pytest.raises(InvalidSessionInputError, match="needs reply=True"):
        await manager.post(session, "hi", idempotency_key="k", reply=False)
    with pytest.raises(TypeError, match="takes a Session"):
        await manager.post(session.id, "hi")  # type: ignore[arg-type]
    await manager.end(session.id)
    with pytest.raises(SessionNotFoundError):
        await manager.post(session, "hi")  # the snapshot is stale: storing checks
    assert await manager.store.get(message_key(session.id, 0)) is None


async def test_post_with_a_snapshot_older_than_a_timeout_change_keeps_the_record_alive(
    runtime: FakeRuntime, clock: ManualClock, memory: MemoryStore
) -> None:
    """The record's TTL is fixed from the snapshot's timeout; the commit fixes it when it moved."""
    manager = configured(runtime, clock, default_timeout_minutes=5, max_duration_minutes=600)
    snapshot = await manager.create(user_id="u")
    await manager.update_timeout(snapshot.id, TimeoutConfig(timeout_minutes=120))
    posted = await manager.post(snapshot, "ping")
    assert posted.session.expires_at == pytest.approx(clock() + 120 * 60)
    ttl = await memory.ttl(session_key(snapshot.id))
    assert ttl is not None and ttl >= 120 * 60
    clock.advance_by(60 * 60)  # past the old timeout, well before the new one
    assert (await manager.get(snapshot.id)).message_count == 2


async def test_timestamps_strictly_increase_when_the_clock_stands_still(
    manager: SessionManager,
) -> None:
    session = await manager.create(user_id="u")
    for i in range(20):
        await manager.send_message(session.id, f"m{i}")
    history = await all_messages(manager, session.id)
    stamps = [m.created_at for m in reversed(history)]
    assert len(stamps) == 40
    assert all(a < b for a, b in itertools.pairwise(stamps))
    # Whole milliseconds after the session's creation, running ahead of the clock.
    assert stamps == [(START * 1000 + i) / 1000 for i in range(1, 41)]


async def test_failed_reply_stores_nothing(manager: SessionManager, runtime: FakeRuntime) -> None:
    session = await manager.create(user_id="u")
    runtime.fail_reply = True
    with pytest.raises(RuntimeError, match="model unavailable"):
        await manager.send_message(session.id, "hello?")
    assert await manager.messages(session.id) == []
    assert (await manager.get(session.id)).message_count == 0


async def test_a_reply_must_be_text(manager: SessionManager, runtime: FakeRuntime) -> None:
    async def not_text(message: Message, state: dict[str, Any]) -> str:
        return None  # type: ignore[return-value]

    runtime.generate_reply = not_text  # type: ignore[method-assign]
    session = await manager.create(user_id="u")
    with pytest.raises(TypeError, match="not a str"):
        await manager.send_message(session.id, "hi")
    assert manager.store is runtime.kv_service.get_store("sessions")


async def test_send_to_unknown_or_expired_session(
    manager: SessionManager, clock: ManualClock, runtime: FakeRuntime
) -> None:
    with pytest.raises(SessionNotFoundError):
        await manager.send_message("B" * 24, "hi")
    session = await manager.create(user_id="u")
    clock.advance_by(30 * MINUTE)
    with pytest.raises(SessionExpiredError) as info:
        await manager.send_message(session.id, "hi")
    assert info.value.expired_at == START + 30 * MINUTE
    assert "expired at" in str(info.value)
    assert runtime.composed == []


# -- history pagination ----------------------------------------------------------------------------


async def filled_session(manager: SessionManager, clock: ManualClock, exchanges: int) -> str:
    session = await manager.create(user_id="u")
    for i in range(exchanges):
        if i % 3:  # sometimes the clock moves, sometimes not
            clock.advance_by(0.5)
        await manager.send_message(session.id, f"m{i}")
    return session.id


async def test_pages_newest_first_without_duplicates(
    manager: SessionManager, clock: ManualClock
) -> None:
    session_id = await filled_session(manager, clock, 25)
    everything = await all_messages(manager, session_id, page=7)
    assert len(everything) == 50
    assert len({m.id for m in everything}) == 50
    stamps = [m.created_at for m in everything]
    assert stamps == sorted(stamps, reverse=True) and len(set(stamps)) == 50
    assert everything[-1].content == "m0" and everything[0].content == "re: m24"
    first = await manager.messages(session_id)
    assert first == everything[:50]  # default limit 50


async def test_before_after_windows(manager: SessionManager, clock: ManualClock) -> None:
    session_id = await filled_session(manager, clock, 30)
    everything = await all_messages(manager, session_id)
    stamps = [m.created_at for m in everything]
    for before_i, after_i in [(5, 20), (0, 59), (10, 11), (30, 31), (17, 40)]:
        before, after = stamps[before_i], stamps[after_i]
        page = await manager.messages(session_id, limit=100, before=before, after=after)
        assert page == everything[before_i + 1 : after_i]
    # Only after: the messages right after it (ElizaOS's rule), newest first.
    assert await manager.messages(session_id, limit=3, after=stamps[10]) == everything[7:10]
    assert await manager.messages(session_id, after=stamps[3]) == everything[:3]
    # Only before, between two stamps, and out of range.
    middle = (stamps[8] + stamps[9]) / 2
    assert (await manager.messages(session_id, limit=2, before=middle)) == everything[9:11]
    assert await manager.messages(session_id, before=stamps[-1]) == []
    assert await manager.messages(session_id, before=START - 1) == []
    assert await manager.messages(session_id, after=stamps[0]) == []
    assert await manager.messages(session_id, limit=100, after=START - 1) == everything
    assert await manager.messages(session_id, limit=100, before=stamps[0] + 1) == everything
    assert await manager.messages(session_id, before=stamps[5], after=stamps[5]) == []
    assert await manager.messages(session_id, before=stamps[9], after=stamps[3]) == []
    # Integer cursors are accepted.
    assert await manager.messages(session_id, before=int(START)) == []


async def test_history_reports_has_more(manager: SessionManager, clock: ManualClock) -> None:
    session_id = await filled_session(manager, clock, 5)
    page = await manager.history(session_id, limit=4)
    assert len(page.messages) == 4 and page.has_more
    rest = await manager.history(session_id, limit=6, before=page.messages[-1].created_at)
    assert len(rest.messages) == 6 and not rest.has_more
    assert (await manager.history(session_id, limit=10)).has_more is False


async def test_empty_history(manager: SessionManager) -> None:
    session = await manager.create(user_id="u")
    assert await manager.messages(session.id) == []
    assert await manager.messages(session.id, before=START + 5, after=START - 5) == []


@pytest.mark.parametrize("limit", [0, -1, 101, True, 1.5, "10", None])
async def test_bad_limits(manager: SessionManager, limit: Any) -> None:
    session = await manager.create(user_id="u")
    with pytest.raises(InvalidSessionInputError, match="limit") as info:
        await manager.messages(session.id, limit=limit)
    assert isinstance(info.value, ValueError)


async def test_limit_follows_max_page_size(runtime: FakeRuntime, clock: ManualClock) -> None:
    manager = configured(runtime, clock, max_page_size=3)
    session = await manager.create(user_id="u")
    assert await manager.messages(session.id, limit=3) == []
    with pytest.raises(InvalidSessionInputError, match="from 1 to 3"):
        await manager.messages(session.id)  # the default 50 exceeds it


@pytest.mark.parametrize("cursor", [math.nan, math.inf, -math.inf, "1700000000", True, [1]])
async def test_bad_cursors(manager: SessionManager, cursor: Any) -> None:
    session = await manager.create(user_id="u")
    with pytest.raises(InvalidSessionInputError):
        await manager.messages(session.id, before=cursor)
    with pytest.raises(InvalidSessionInputError):
        await manager.messages(session.id, after=cursor)


async def test_history_skips_holes(
    manager: SessionManager, clock: ManualClock, memory: MemoryStore
) -> None:
    """A seq allocated but never written (a writer died) is skipped, searches still work."""
    session_id = await filled_session(manager, clock, 20)
    everything = await all_messages(manager, session_id)
    oldest_first = list(reversed(everything))
    holes = [0, 5, 6, 7, 8, 9, 10, 21, 39]
    for seq in holes:
        await memory.delete(f"m:{session_id}:{seq:012d}")
    present = [m for seq, m in enumerate(oldest_first) if seq not in holes]
    expected = list(reversed(present))
    assert await all_messages(manager, session_id, page=4) == expected
    stamps = [m.created_at for m in oldest_first]
    for before_seq, after_seq in [(12, 4), (11, 5), (30, 1), (None, 0), (22, 20), (6, 0)]:
        before = None if before_seq is None else stamps[before_seq]
        after = stamps[after_seq]
        page = await manager.messages(session_id, limit=100, before=before, after=after)
        assert page == [
            m
            for m in expected
            if after < m.created_at and (before is None or m.created_at < before)
        ]


# -- expiry, renewal, heartbeat --------------------------------------------------------------------


async def test_auto_renew_on_activity(manager: SessionManager, clock: ManualClock) -> None:
    session = await manager.create(user_id="u")
    clock.advance_by(20 * MINUTE)
    await manager.send_message(session.id, "still here")
    renewed = await manager.get(session.id)
    assert renewed.last_activity == START + 20 * MINUTE
    assert renewed.expires_at == START + 50 * MINUTE
    assert renewed.renewal_count == 1  # one per user message, not per reply
    clock.advance_by(29 * MINUTE)
    assert not (await manager.get(session.id)).is_expired


async def test_without_auto_renew_messages_do_not_extend(
    manager: SessionManager, clock: ManualClock
) -> None:
    session = await manager.create(user_id="u", timeout=TimeoutConfig(auto_renew=False))
    clock.advance_by(20 * MINUTE)
    await manager.send_message(session.id, "hi")
    current = await manager.get(session.id)
    assert current.last_activity == START + 20 * MINUTE
    assert current.expires_at == START + 30 * MINUTE
    assert current.renewal_count == 0
    clock.advance_by(10 * MINUTE)
    with pytest.raises(SessionExpiredError):
        await manager.get(session.id)


async def test_max_duration_caps_auto_renew(manager: SessionManager, clock: ManualClock) -> None:
    session = await manager.create(
        user_id="u", timeout=TimeoutConfig(timeout_minutes=10, max_duration_minutes=15)
    )
    clock.advance_by(9 * MINUTE)
    await manager.send_message(session.id, "hi")
    assert (await manager.get(session.id)).expires_at == START + 15 * MINUTE
    clock.advance_by(5 * MINUTE)
    beat = await manager.heartbeat(session.id)
    assert beat.expires_at == START + 15 * MINUTE
    clock.advance_by(1 * MINUTE)
    with pytest.raises(SessionExpiredError):
        await manager.send_message(session.id, "too late")


async def test_renew(manager: SessionManager, clock: ManualClock) -> None:
    session = await manager.create(
        user_id="u",
        timeout=TimeoutConfig(timeout_minutes=10, auto_renew=False, max_duration_minutes=25),
    )
    clock.advance_by(8 * MINUTE)
    renewed = await manager.renew(session.id)
    assert renewed.expires_at == START + 18 * MINUTE
    assert renewed.renewal_count == 1
    assert renewed.last_activity == START + 8 * MINUTE
    clock.advance_by(9 * MINUTE)
    again = await manager.renew(session.id)
    assert again.expires_at == START + 25 * MINUTE  # capped by the max duration
    assert again.renewal_count == 2
    # Messages after a manual renewal keep the renewed expiry (no auto-renew).
    await manager.send_message(session.id, "hi")
    assert (await manager.get(session.id)).expires_at == START + 25 * MINUTE
    clock.advance_by(8 * MINUTE)  # exactly at the max duration
    with pytest.raises(SessionRenewalError, match="maximum duration of 25 minutes") as info:
        await manager.renew(session.id)
    assert isinstance(info.value, SessionExpiredError)


async def test_renew_after_timeout_is_expired_not_renewal_error(
    manager: SessionManager, clock: ManualClock
) -> None:
    session = await manager.create(user_id="u", timeout=TimeoutConfig(timeout_minutes=1))
    clock.advance_by(2 * MINUTE)
    with pytest.raises(SessionExpiredError) as info:
        await manager.renew(session.id)
    assert not isinstance(info.value, SessionRenewalError)
    with pytest.raises(SessionNotFoundError):
        await manager.renew("C" * 24)


async def test_heartbeat(manager: SessionManager, clock: ManualClock) -> None:
    auto = await manager.create(user_id="u")
    manual = await manager.create(user_id="u", timeout={"auto_renew": False})
    clock.advance_by(10 * MINUTE)
    beat = await manager.heartbeat(auto.id)
    assert beat.last_activity == START + 10 * MINUTE
    assert beat.expires_at == START + 40 * MINUTE and beat.renewal_count == 1
    quiet = await manager.heartbeat(manual.id)
    assert quiet.last_activity == START + 10 * MINUTE
    assert quiet.expires_at == START + 30 * MINUTE and quiet.renewal_count == 0
    clock.advance_by(20 * MINUTE)
    with pytest.raises(SessionExpiredError):
        await manager.heartbeat(manual.id)


async def test_warning_threshold_and_status(manager: SessionManager, clock: ManualClock) -> None:
    session = await manager.create(
        user_id="u", timeout=TimeoutConfig(timeout_minutes=10, warning_threshold_minutes=2.5)
    )
    clock.advance_by(7 * MINUTE)
    assert session.time_remaining == 3 * MINUTE
    assert not session.is_near_expiration
    clock.advance_by(0.5 * MINUTE)
    assert session.is_near_expiration and not session.is_expired
    assert session.to_dict()["is_near_expiration"] is True
    clock.advance_by(2.5 * MINUTE)
    assert session.is_expired and session.time_remaining == 0.0
    clock.advance_by(MINUTE)
    assert session.time_remaining == 0.0


# -- end / list ------------------------------------------------------------------------------------


async def test_end_removes_everything(
    manager: SessionManager, memory: MemoryStore, clock: ManualClock
) -> None:
    keep = await manager.create(user_id="keep")
    session = await manager.create(user_id="u")
    for i in range(3):
        await manager.send_message(session.id, f"m{i}")
    assert await manager.end(session.id) is True
    with pytest.raises(SessionNotFoundError):
        await manager.get(session.id)
    with pytest.raises(SessionNotFoundError):
        await manager.messages(session.id)
    assert not {k for k in await keys_of(memory) if session.id in k and not k.startswith("e:")}
    assert await manager.end(session.id) is False
    assert await manager.end("D" * 24) is False
    assert (await manager.get(keep.id)).user_id == "keep"


async def test_end_of_expired_session_suppresses_the_hook(
    runtime: FakeRuntime, clock: ManualClock
) -> None:
    expired: list[Session] = []
    manager = SessionManager(runtime, clock=clock, on_expired=expired.append)
    session = await manager.create(user_id="u")
    clock.advance_by(31 * MINUTE)
    assert await manager.end(session.id) is True
    assert await manager.sweep() == 0
    assert expired == []


async def test_list(manager: SessionManager, clock: ManualClock) -> None:
    first = await manager.create(user_id="u1")
    clock.advance_by(1)
    second = await manager.create(user_id="u2")
    clock.advance_by(1)
    short = await manager.create(user_id="u3", timeout={"timeout_minutes": 1})
    other = await manager.create(agent_id="agent-1:x", user_id="u4")
    ended = await manager.create(user_id="u5")
    await manager.end(ended.id)
    mine = await manager.list(agent_id="agent-1")
    assert [s.id for s in mine] == [short.id, second.id, first.id]  # newest first
    assert [s.id for s in await manager.list(agent_id="agent-1:x")] == [other.id]
    assert {s.id for s in await manager.list()} == {first.id, second.id, short.id, other.id}
    clock.advance_by(2 * MINUTE)
    assert [s.id for s in await manager.list(agent_id="agent-1")] == [second.id, first.id]
    assert await manager.list(agent_id="nobody") == []
    with pytest.raises(InvalidSessionInputError):
        await manager.list(agent_id="")


# -- sweeping --------------------------------------------------------------------------------------


async def test_sweep_removes_session_messages_and_index(
    runtime: FakeRuntime, clock: ManualClock, memory: MemoryStore
) -> None:
    expired: list[Session] = []
    manager = SessionManager(runtime, clock=clock, on_expired=expired.append)
    doomed = await manager.create(user_id="u", timeout={"timeout_minutes": 5})
    for i in range(4):
        await manager.send_message(doomed.id, f"m{i}")
    alive = await manager.create(user_id="v", timeout={"timeout_minutes": 60})
    await manager.send_message(alive.id, "hello")
    assert await manager.sweep() == 0
    clock.advance_by(6 * MINUTE)
    assert await manager.sweep() == 1
    assert [s.id for s in expired] == [doomed.id]
    assert expired[0].message_count == 8 and expired[0].is_expired
    keys = await keys_of(memory)
    assert not {k for k in keys if doomed.id in k}, "record, messages and index all gone"
    assert f"a:agent-1:{doomed.id}" not in keys and f"s:{alive.id}" in keys
    assert await manager.sweep() == 0 and len(expired) == 1
    with pytest.raises(SessionNotFoundError):
        await manager.get(doomed.id)
    assert len(await manager.messages(alive.id)) == 2
    # Expiry buckets that came due are deleted once settled.
    clock.advance_by(MINUTE)
    await manager.sweep()
    buckets = {k for k in await keys_of(memory, "e:")}
    assert all(int(k[2:]) * 10 >= clock.now - 30 for k in buckets)


async def test_renewed_sessions_are_rechecked_not_swept(
    runtime: FakeRuntime, clock: ManualClock
) -> None:
    expired: list[str] = []

    async def on_expired(session: Session) -> None:  # async hooks work too
        expired.append(session.id)

    manager = SessionManager(runtime, clock=clock, on_expired=on_expired)
    session = await manager.create(user_id="u", timeout={"timeout_minutes": 10})
    for _ in range(5):
        clock.advance_by(8 * MINUTE)
        await manager.send_message(session.id, "keep alive")
        assert await manager.sweep() == 0
    assert expired == []
    clock.advance_by(10 * MINUTE)
    assert await manager.sweep() == 1
    assert expired == [session.id]


async def test_sweep_after_a_long_pause(runtime: FakeRuntime, clock: ManualClock) -> None:
    expired: list[Session] = []
    manager = SessionManager(
        runtime,
        config=SessionsConfig(grace_seconds=4 * 24 * 3600),  # records outlive the pause
        clock=clock,
        on_expired=expired.append,
    )
    await manager.sweep()  # stores a cursor
    sessions = [await manager.create(user_id=f"u{i}") for i in range(3)]
    clock.advance_by(3 * 24 * 3600)  # far more buckets than a walk covers
    assert await manager.sweep() == 3
    assert {s.id for s in expired} == {s.id for s in sessions}


async def test_sweep_right_after_expiry_prunes_the_open_bucket(
    runtime: FakeRuntime, clock: ManualClock, memory: MemoryStore
) -> None:
    manager = SessionManager(runtime, clock=clock)
    await manager.sweep()
    quick = await manager.create(user_id="u", timeout={"timeout_minutes": 0.05})  # 3 s
    clock.advance_by(4)
    assert await manager.sweep() == 1
    # The bucket is recent, so it stays for late arrivals; its swept id is not reported again.
    assert [k async for k, _ in memory.entries("x:")]
    assert await manager.sweep() == 0
    assert await memory.get(f"s:{quick.id}") is None


async def test_sweep_walks_many_buckets_in_batches(
    runtime: FakeRuntime, clock: ManualClock
) -> None:
    expired: list[Session] = []
    manager = SessionManager(
        runtime,
        config=SessionsConfig(grace_seconds=7200),  # the records outlive the pause
        clock=clock,
        on_expired=expired.append,
    )
    await manager.sweep()
    early = await manager.create(user_id="u", timeout={"timeout_minutes": 1})
    late = await manager.create(user_id="v", timeout={"timeout_minutes": 50})
    clock.advance_by(3600)  # 360 ten-second buckets since the last sweep
    assert await manager.sweep() == 2
    assert {s.id for s in expired} == {early.id, late.id}


async def test_sweep_cost_follows_due_sessions(
    runtime: FakeRuntime, clock: ManualClock, wrapped: WrappedStore
) -> None:
    manager = SessionManager(runtime, clock=clock)
    for i in range(200):
        await manager.create(user_id=f"live{i}", timeout={"timeout_minutes": 600})
    due = [
        await manager.create(user_id=f"due{i}", timeout={"timeout_minutes": 1}) for i in range(5)
    ]
    await manager.sweep()
    clock.advance_by(2 * MINUTE)
    wrapped.reset()
    assert await manager.sweep() == 5
    records_read = {k for k in wrapped.keys_read if k.startswith("s:")}
    assert records_read == {f"s:{s.id}" for s in due}
    # Index keys: the lookback window (an hour and two cleanup intervals), in both
    # the first release's scheme and this one; one get_many each.
    index_read = [k for k in wrapped.keys_read if k.startswith(("e:", "x:"))]
    assert len(index_read) < 2 * (4200 // 10 + 20)
    assert len(wrapped.keys_read) - len(index_read) < 60


async def test_hook_errors_are_logged_not_fatal(
    runtime: FakeRuntime, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(session: Session) -> None:
        raise ValueError("hook bug")

    manager = SessionManager(runtime, clock=clock, on_expired=broken)
    for _ in range(2):
        await manager.create(user_id="u", timeout={"timeout_minutes": 1})
    clock.advance_by(2 * MINUTE)
    with caplog.at_level(logging.ERROR, logger="runtime.sessions"):
        assert await manager.sweep() == 2
    assert caplog.text.count("on_expired hook failed") == 2


async def test_two_managers_sweeping_concurrently_report_each_session_once(
    clock: ManualClock, memory: MemoryStore
) -> None:
    reports: list[tuple[str, str]] = []
    managers = []
    for name in ("replica-a", "replica-b"):
        # Each replica has its own store handle that yields between operations,
        # so the two sweeps really interleave.
        replica_runtime = FakeRuntime(SingleStoreService(WrappedStore(memory, yielding=True)))

        def hook(session: Session, name: str = name) -> None:
            reports.append((name, session.id))

        managers.append(SessionManager(replica_runtime, clock=clock, on_expired=hook))
    created = []
    for i in range(40):
        manager = managers[i % 2]
        session = await manager.create(user_id=f"u{i}", timeout={"timeout_minutes": 1 + i % 3})
        await manager.send_message(session.id, "hi")
        created.append(session.id)
    clock.advance_by(5 * MINUTE)
    counts: list[int] = []

    async def sweep(manager: SessionManager) -> None:
        counts.append(await manager.sweep())

    async with anyio.create_task_group() as group:
        for manager in managers * 2:  # two concurrent sweeps per replica
            group.start_soon(sweep, manager)
    assert sorted(session_id for _, session_id in reports) == sorted(created)
    assert sum(counts) == 40
    assert not {k for k in await keys_of(memory) if k.startswith(("s:", "m:", "a:"))}


async def test_sweep_fences_a_concurrent_renewal(runtime: FakeRuntime, clock: ManualClock) -> None:
    """A renewal that lands between the sweeper's read and its claim wins."""
    expired: list[Session] = []
    manager = SessionManager(runtime, clock=clock, on_expired=expired.append)
    session = await manager.create(user_id="u", timeout={"timeout_minutes": 1})
    clock.advance_by(1.5 * MINUTE)
    # Simulate a replica whose clock is behind: it renews the "live" session
    # after our sweep read the record but before it claims it.
    lagging = SessionManager(runtime, clock=lambda: START + 50)
    store = runtime.kv_service.get_store("sessions")
    assert isinstance(store, WrappedStore)
    original = store.update
    renewed = False

    async def update_then_race(key: str, fn: Callable[[Any], Any], **kw: Any) -> Any:
        nonlocal renewed
        if key.startswith("s:") and not renewed:
            renewed = True
            await lagging.renew(session.id)
        return await original(key, fn, **kw)

    store.update = update_then_race  # type: ignore[method-assign]
    assert await manager.sweep() == 0
    assert expired == []
    store.update = original  # type: ignore[method-assign]
    assert (await lagging.get(session.id)).renewal_count == 1
    clock.advance_by(2 * MINUTE)
    assert await manager.sweep() == 1


async def test_store_ttls_remove_idle_sessions_without_a_sweeper(
    runtime: FakeRuntime, clock: ManualClock, memory: MemoryStore, wrapped: WrappedStore
) -> None:
    manager = configured(runtime, clock, grace_seconds=60, max_duration_minutes=120)
    session = await manager.create(user_id="u", timeout={"timeout_minutes": 10})
    await manager.send_message(session.id, "hi")
    assert wrapped.writes and all(ttl is not None for _, _, ttl in wrapped.writes)
    clock.advance_by(10 * MINUTE + 30)
    with pytest.raises(SessionExpiredError):  # within the grace period
        await manager.get(session.id)
    clock.advance_by(31)
    with pytest.raises(SessionNotFoundError):  # the record's own TTL ran out
        await manager.get(session.id)
    assert any(k.startswith("m:") for k in await keys_of(memory))
    clock.advance_by(120 * MINUTE)  # messages last at most until the max duration + grace
    assert await keys_of(memory) == set()


# -- running() -------------------------------------------------------------------------------------


async def test_running_sweeps_in_the_background(runtime: FakeRuntime, clock: ManualClock) -> None:
    done = anyio.Event()
    expired: list[str] = []

    def hook(session: Session) -> None:
        expired.append(session.id)
        done.set()

    manager = SessionManager(
        runtime, config=SessionsConfig(cleanup_interval=0.01), clock=clock, on_expired=hook
    )
    session = await manager.create(user_id="u", timeout={"timeout_minutes": 1})
    async with manager.running() as running:
        assert running is manager
        clock.advance_by(2 * MINUTE)
        with anyio.fail_after(5):
            await done.wait()
    assert expired == [session.id]


async def test_running_survives_failing_sweeps(
    runtime: FakeRuntime,
    clock: ManualClock,
    wrapped: WrappedStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    done = anyio.Event()
    manager = SessionManager(
        runtime,
        config=SessionsConfig(cleanup_interval=0.01),
        clock=clock,
        on_expired=lambda session: done.set(),
    )
    await manager.create(user_id="u", timeout={"timeout_minutes": 1})
    clock.advance_by(2 * MINUTE)
    wrapped.fail_next["get"] = ConnectionError("backend blip")
    with caplog.at_level(logging.ERROR, logger="runtime.sessions"):
        async with manager.running():
            with anyio.fail_after(5):
                await done.wait()
    assert "session sweep failed" in caplog.text and "backend blip" in caplog.text


async def test_running_propagates_body_errors_and_stops(
    runtime: FakeRuntime, clock: ManualClock
) -> None:
    manager = SessionManager(runtime, config=SessionsConfig(cleanup_interval=0.01), clock=clock)
    tasks_before = asyncio.all_tasks()
    with pytest.raises(KeyError, match="from the body"):  # not wrapped in an ExceptionGroup
        async with manager.running():
            assert len(asyncio.all_tasks()) > len(tasks_before)  # the sweeper runs
            raise KeyError("from the body")
    assert asyncio.all_tasks() == tasks_before  # and is gone after exit
    async with manager.running():
        pass
    assert asyncio.all_tasks() == tasks_before


# -- bad input -------------------------------------------------------------------------------------


BAD_MINUTES: list[Any] = [0, -1, -0.5, math.nan, math.inf, True, False, "5", [5], 1e12]


@pytest.mark.parametrize("value", BAD_MINUTES, ids=repr)
@pytest.mark.parametrize(
    "name", ["timeout_minutes", "max_duration_minutes", "warning_threshold_minutes"]
)
async def test_bad_timeout_values(manager: SessionManager, name: str, value: Any) -> None:
    with pytest.raises(InvalidSessionInputError, match=name) as info:
        TimeoutConfig(**{name: value})
    assert isinstance(info.value, ValueError) and isinstance(info.value, SessionError)
    with pytest.raises(InvalidSessionInputError):
        await manager.create(user_id="u", timeout={name: value})
    assert await manager.list() == []


@pytest.mark.parametrize(
    "config",
    [
        {"default_timeout_minutes": 0},
        {"max_duration_minutes": math.nan},
        {"warning_threshold_minutes": "5"},
        {"auto_renew": 1},
        {"cleanup_interval": 0},
        {"cleanup_interval": math.inf},
        {"max_page_size": 0},
        {"max_page_size": 10.0},
        {"max_content_bytes": True},
        {"grace_seconds": -1},
    ],
    ids=repr,
)
def test_bad_config(config: dict[str, Any]) -> None:
    with pytest.raises(InvalidSessionInputError):
        SessionsConfig(**config)


async def test_bad_timeout_shapes(manager: SessionManager) -> None:
    with pytest.raises(InvalidSessionInputError, match="auto_renew"):
        TimeoutConfig(auto_renew="yes")  # type: ignore[arg-type]
    with pytest.raises(InvalidSessionInputError, match="unknown timeout setting"):
        await manager.create(user_id="u", timeout={"timeoutMinutes": 5})
    with pytest.raises(InvalidSessionInputError, match="TimeoutConfig"):
        await manager.create(user_id="u", timeout=5)  # type: ignore[arg-type]
    assert TimeoutConfig(timeout_minutes=0.001).timeout_minutes == 0.001
    assert TimeoutConfig(timeout_minutes=2).timeout_minutes == 2.0


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"user_id": ""}, InvalidSessionInputError),
        ({"user_id": 5}, InvalidSessionInputError),
        ({"user_id": "x" * 300}, InvalidSessionInputError),
        ({"user_id": "u", "agent_id": "a\x00b"}, InvalidSessionInputError),
        ({"user_id": "u", "metadata": ["not", "a", "dict"]}, InvalidSessionInputError),
        ({"user_id": "u", "metadata": {"s": {1, 2}}}, InvalidSessionInputError),
        ({"user_id": "u", "metadata": {"n": math.nan}}, InvalidSessionInputError),
        ({"user_id": "u", "metadata": {"big": "x" * 20_000}}, ContentTooLargeError),
    ],
    ids=repr,
)
async def test_bad_create_arguments(
    manager: SessionManager, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error) as info:
        await manager.create(**kwargs)
    assert isinstance(info.value, ValueError) and str(info.value)
    assert await manager.list() == []


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ("", InvalidSessionInputError),
        ("   \n\t", InvalidSessionInputError),
        (None, InvalidSessionInputError),
        (b"bytes", InvalidSessionInputError),
        ("\ud800 lone surrogate", InvalidSessionInputError),
        ("x" * (64 * 1024 + 1), ContentTooLargeError),
        ("é" * (32 * 1024 + 1), ContentTooLargeError),  # counted in UTF-8 bytes
    ],
    ids=lambda v: repr(v)[:30],
)
async def test_bad_content(
    manager: SessionManager, runtime: FakeRuntime, content: Any, error: type[Exception]
) -> None:
    session = await manager.create(user_id="u")
    with pytest.raises(error) as info:
        await manager.send_message(session.id, content)
    assert isinstance(info.value, ValueError) and isinstance(info.value, SessionError)
    assert runtime.composed == []
    assert (await manager.get(session.id)).message_count == 0


async def test_content_limit_is_configurable(runtime: FakeRuntime, clock: ManualClock) -> None:
    manager = configured(runtime, clock, max_content_bytes=10, max_metadata_bytes=20)
    session = await manager.create(user_id="u")
    await manager.send_message(session.id, "x" * 10)
    with pytest.raises(ContentTooLargeError, match="at most 10"):
        await manager.send_message(session.id, "x" * 11)
    with pytest.raises(ContentTooLargeError, match="max_metadata_bytes"):
        await manager.send_message(session.id, "ok", metadata={"k": "v" * 20})


async def test_constructor_arguments(runtime: FakeRuntime) -> None:
    with pytest.raises(InvalidSessionInputError):
        SessionManager(runtime, config={"max_page_size": 5})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        SessionManager(runtime, clock=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        SessionManager(runtime, on_expired="nope")  # type: ignore[arg-type]
    assert "agent-1" in repr(SessionManager(runtime))


# -- storage shape ---------------------------------------------------------------------------------


async def test_appending_a_message_writes_constant_bytes(
    manager: SessionManager, wrapped: WrappedStore
) -> None:
    session = await manager.create(user_id="u", metadata={"m": "x" * 100})
    costs: dict[int, int] = {}
    for n in range(1001):
        wrapped.reset()
        await manager.send_message(session.id, "the same message")
        costs[n] = wrapped.bytes_written
    assert wrapped.bytes_written < 2000
    # From the 10th to the 1000th exchange the cost grows only by digits.
    assert costs[1000] - costs[10] < 40, costs


async def test_history_page_reads_logarithmic_keys(
    manager: SessionManager, clock: ManualClock, wrapped: WrappedStore
) -> None:
    session = await manager.create(user_id="u")
    stamps = {}
    reads: dict[int, int] = {}
    for target in (100, 4000):
        while (await manager.get(session.id)).message_count < target:
            clock.advance_by(0.01)
            reply = await manager.send_message(session.id, "hi")
            stamps[reply.created_at] = True
        middle = sorted(stamps)[len(stamps) // 3]
        worst = 0
        for before, after in [(middle, None), (None, middle), (middle, middle - 5)]:
            wrapped.reset()
            page = await manager.messages(session.id, limit=20, before=before, after=after)
            assert page
            worst = max(worst, len(wrapped.keys_read))
        reads[target] = worst
    # The record, two searches of 4 probes a round, then limit + 1 messages:
    # O(log n + limit) keys, not O(n).
    rounds = math.ceil(math.log(4000, 5))
    assert reads[4000] <= 1 + 2 * 4 * rounds + 21, reads
    assert reads[4000] - reads[100] <= 2 * 4 * 4, reads  # 40x the messages


async def test_first_page_reads_only_the_page(
    manager: SessionManager, clock: ManualClock, wrapped: WrappedStore
) -> None:
    session_id = await filled_session(manager, clock, 300)
    wrapped.reset()
    assert len(await manager.messages(session_id, limit=10)) == 10
    assert len(wrapped.keys_read) == 1 + 11  # the record, then limit + 1 messages


# -- with the real AgentRuntime --------------------------------------------------------------------


async def test_agent_runtime_sessions_use_its_config_and_state_cache() -> None:
    config = SessionsConfig(default_timeout_minutes=3, max_page_size=10)
    async with AgentRuntime(agent_id="agent-x", sessions_config=config, environ={}) as agent:
        sessions = agent.sessions
        assert sessions.config is config
        session = await sessions.create(user_id="u")
        assert session.agent_id == "agent-x"
        assert session.timeout_config.timeout_minutes == 3.0
        exchange = await sessions.exchange(session.id, "hello")
        assert exchange.reply.content == "Echo: hello"
        assert await agent.state_cache.get(exchange.user.id) == {}
        with pytest.raises(InvalidSessionInputError):
            await sessions.messages(session.id, limit=11)
        assert [s.id for s in await sessions.list(agent_id="agent-x")] == [session.id]


async def test_agent_runtime_with_a_registered_service(clock: ManualClock) -> None:
    service = StoreService(MemoryStore(clock=clock))
    agent = AgentRuntime(agent_id="agent-y", environ={})
    agent.register_service(service)
    async with agent:
        session = await agent.sessions.create(user_id="u")
        await agent.sessions.send_message(session.id, "stored in the registered service")
    raw = await service.get_store("sessions").get(f"s:{session.id}")
    assert raw["message_count"] == 2
    await service.aclose()


def test_example_runs() -> None:
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KV_STORE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(root), *sys.path])
    # The example watches sessions expire in real time (timeouts of about a
    # second). How near expiration it finds a session depends on how long its
    # sleeps really took on this machine, so only that it reports one is checked
    # (is_near_expiration itself is tested on a manual clock above).
    result = subprocess.run(
        [sys.executable, str(root / "examples" / "sessions.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for line in ("page 2     -> ['Echo: what can you do?'", "near expiration: ", "on_expired"):
        assert line in result.stdout
    assert "still open -> ['grace']" in result.stdout
