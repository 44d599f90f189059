"""Sessions on the replica path, on the memory backend with injected clocks (no sleeping).

Several managers on one store stand for replicas. Each test reproduces one way
the first release lost or doubled data when replicas share a backend:

- a poller walking ``messages(after=cursor)`` skipped a message whose seq was
  allocated by one replica but not yet written while another replica's later
  message already was (the staged interleaving below);
- a replica whose clock ran ahead moved the shared sweep cursor past sessions
  the others then never reported to ``on_expired``;
- each create rewrote its expiry bucket's whole id list;
- ending or expiring a session left its cached states behind;
- records of the first release (``tests/data/sessions-v1.json``) must still read.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import orjson
import pytest
from fixtures_redis import shift_server_clocks
from test_sessions import SingleStoreService

from kvstore import KVStore, MemoryStore, StoreService, open_service
from kvstore.testing import ManualClock
from kvstore.wrapper import StoreWrapper
from runtime.agent import AgentRuntime
from runtime.messages import Message
from runtime.sessions import Session, SessionManager
from runtime.sessions.keys import BUCKET_SECONDS, SESSIONS_STORE
from runtime.sessions.sweeper import CHUNK

pytestmark = pytest.mark.anyio

START = 1_700_000_000.0
FIXTURE_V1 = Path(__file__).parent / "data" / "sessions-v1.json"


class Host:
    """The part of a runtime a SessionManager needs; replies echo the content."""

    agent_id = "agent-1"

    def __init__(self, service: Any) -> None:
        self.kv_service = service

    async def compose_state(self, message: Message) -> dict[str, Any]:
        return {}

    async def generate_reply(self, message: Message, state: dict[str, Any]) -> str:
        return f"re: {message.content}"


class GatedStore(StoreWrapper):
    """Holds the first write that touches a message key until :attr:`release` is set."""

    def __init__(self, inner: KVStore) -> None:
        super().__init__(inner)
        self.armed = False
        self.blocked = anyio.Event()
        self.release = anyio.Event()

    async def _gate(self, keys: Iterable[str]) -> None:
        if self.armed and any(key.startswith("m:") for key in keys):
            self.armed = False
            self.blocked.set()
            await self.release.wait()

    async def set(
        self, key: str, value: Any, *, ttl: float | None = None, keep_ttl: bool = False
    ) -> None:
        await self._gate([key])
        await self.inner.set(key, value, ttl=ttl, keep_ttl=keep_ttl)

    async def set_many(self, mapping: Mapping[str, Any], *, ttl: float | None = None) -> None:
        await self._gate(mapping)
        await self.inner.set_many(mapping, ttl=ttl)

    async def add(self, key: str, value: Any, *, ttl: float | None = None) -> bool:
        await self._gate([key])
        return await self.inner.add(key, value, ttl=ttl)


class CountingStore(StoreWrapper):
    """Counts record updates and the bytes every write sends."""

    def __init__(self, inner: KVStore) -> None:
        super().__init__(inner)
        self.bytes_written = 0
        self.updates = 0

    def _count(self, key: str, value: Any) -> None:
        self.bytes_written += len(key) + len(orjson.dumps(value))

    async def set(
        self, key: str, value: Any, *, ttl: float | None = None, keep_ttl: bool = False
    ) -> None:
        await self.inner.set(key, value, ttl=ttl, keep_ttl=keep_ttl)
        self._count(key, value)

    async def set_many(self, mapping: Mapping[str, Any], *, ttl: float | None = None) -> None:
        await self.inner.set_many(mapping, ttl=ttl)
        for key, value in mapping.items():
            self._count(key, value)

    async def add(self, key: str, value: Any, *, ttl: float | None = None) -> bool:
        added = await self.inner.add(key, value, ttl=ttl)
        if added:
            self._count(key, value)
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
        result = await self.inner.update(key, fn, default=default, ttl=ttl, keep_ttl=keep_ttl)
        self.updates += key.startswith("s:")
        self._count(key, result)
        return result


async def poll(
    manager: SessionManager, session_id: str, cursor: float
) -> tuple[list[Message], float]:
    """One round of the documented polling pattern: every page after *cursor*, oldest first."""
    seen: list[Message] = []
    while page := await manager.messages(session_id, after=cursor, limit=3):
        seen.extend(reversed(page))
        cursor = page[0].created_at
    return seen, cursor


# -- pollers never miss ------------------------------------------------------------------------


async def test_a_poller_never_skips_a_message_allocated_before_a_later_one_was_written() -> None:
    clock = ManualClock(START)
    gated = GatedStore(MemoryStore(clock=clock))
    service = SingleStoreService(gated)
    slow, fast, reader = (SessionManager(Host(service), clock=clock) for _ in range(3))
    session = await fast.create(user_id="u")
    cursor = session.created_at

    async with anyio.create_task_group() as group:
        gated.armed = True
        group.start_soon(slow.send_message, session.id, "slow")
        await gated.blocked.wait()  # the slow replica holds seqs it has not written yet
        clock.advance_by(0.01)
        await fast.send_message(session.id, "fast")
        first, cursor = await poll(reader, session.id, cursor)
        gated.release.set()
    second, cursor = await poll(reader, session.id, cursor)

    seen = [m.content for m in first + second]
    assert sorted(seen) == sorted(["slow", "re: slow", "fast", "re: fast"])
    assert len(set(seen)) == len(seen) == (await reader.get(session.id)).message_count


async def test_after_pages_hold_the_messages_right_after_the_cursor() -> None:
    clock = ManualClock(START)
    manager = SessionManager(Host(StoreService(MemoryStore(clock=clock))), clock=clock)
    session = await manager.create(user_id="u")
    for i in range(10):
        clock.advance_by(1)
        await manager.send_message(session.id, f"m{i}")
    oldest_first = list(reversed(await manager.messages(session.id, limit=20)))

    page = await manager.messages(session.id, after=oldest_first[2].created_at, limit=4)
    assert page == list(reversed(oldest_first[3:7]))  # newest first within the page
    walked, _ = await poll(manager, session.id, session.created_at)
    assert walked == oldest_first


async def test_a_burst_gets_distinct_whole_millisecond_timestamps() -> None:
    clock = ManualClock(START + 0.0004)  # the clock does not move during the burst
    manager = SessionManager(Host(StoreService(MemoryStore(clock=clock))), clock=clock)
    session = await manager.create(user_id="u")
    async with anyio.create_task_group() as group:
        for i in range(8):
            group.start_soon(manager.send_message, session.id, f"m{i}")
    stamps = sorted(m.created_at for m in await manager.messages(session.id, limit=20))
    millis = [round(t * 1000) for t in stamps]
    assert len(set(millis)) == len(millis) == 16
    assert all(abs(t * 1000 - ms) < 1e-3 for t, ms in zip(stamps, millis, strict=True))
    assert millis[0] >= round(START * 1000)  # never behind the clock's millisecond


async def test_concurrent_senders_share_record_updates() -> None:
    clock = ManualClock(START)
    counting = CountingStore(MemoryStore(clock=clock))
    manager = SessionManager(Host(SingleStoreService(counting)), clock=clock)
    session = await manager.create(user_id="u")
    counting.updates = 0
    async with anyio.create_task_group() as group:
        for i in range(64):
            group.start_soon(manager.send_message, session.id, f"m{i}")
    history = await manager.messages(session.id, limit=100, after=session.created_at)
    assert len(history) == 100
    assert (await manager.get(session.id)).message_count == 128
    # The first release made two record updates per exchange (128 here).
    assert counting.updates <= 32


# -- expiry -----------------------------------------------------------------------------------


async def test_a_replica_with_its_clock_an_hour_ahead_does_not_hide_sessions_from_others() -> None:
    service = StoreService(MemoryStore())
    real = ManualClock(START)
    ahead = ManualClock(START + 3600)
    fired: dict[str, int] = {}

    def report(session: Session) -> None:
        fired[session.id] = fired.get(session.id, 0) + 1

    skewed = SessionManager(Host(service), clock=ahead, on_expired=report)
    honest = SessionManager(Host(service), clock=real, on_expired=report)
    before = [
        (await honest.create(user_id=f"b{i}", timeout={"timeout_minutes": 90})).id for i in range(5)
    ]
    await skewed.sweep()
    assert fired == {}  # 90 minutes: alive even by the skewed clock
    after = [
        (await honest.create(user_id=f"a{i}", timeout={"timeout_minutes": 1})).id for i in range(50)
    ]
    for _ in range(3):
        real.advance_by(60)
        ahead.advance_by(60)
        await skewed.sweep()
        await honest.sweep()
    assert {sid: fired.get(sid, 0) for sid in after} == dict.fromkeys(after, 1)
    real.advance_by(5400)
    ahead.advance_by(5400)
    await honest.sweep()
    await skewed.sweep()
    assert fired == dict.fromkeys(before + after, 1)


async def test_creates_write_the_same_bytes_however_many_sessions_exist() -> None:
    clock = ManualClock(START)  # every session lands in one expiry bucket
    counting = CountingStore(MemoryStore(clock=clock))
    manager = SessionManager(Host(SingleStoreService(counting)), clock=clock)
    written = []
    for _ in range(6):
        counting.bytes_written = 0
        for i in range(1000):
            await manager.create(user_id=f"user-{i}")
        written.append(counting.bytes_written)
    assert written[-1] <= 1.5 * written[0], written


class IndexUpdates(StoreWrapper):
    """Counts updates of the expiry index's head keys; every update yields first."""

    def __init__(self, inner: KVStore) -> None:
        super().__init__(inner)
        self.head_updates = 0

    async def update(self, key: str, fn: Callable[[Any], Any], **options: Any) -> Any:
        await anyio.lowlevel.checkpoint()  # as over a network: other tasks run meanwhile
        self.head_updates += key.startswith("x:") and ":" not in key[2:]
        return await self.inner.update(key, fn, **options)


@pytest.mark.parametrize(
    "backend", ["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)]
)
async def test_concurrent_creates_share_their_bucket_update_and_are_all_swept_once(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """300 creates at once land in one bucket: a few head updates, not 300 racing ones."""
    clock = ManualClock(time.time())  # near the wall clock: Redis keeps its TTLs on that one
    if backend == "redis":
        service = open_service(request.getfixturevalue("redis_url"), metrics=False)
    else:
        url = "memory://" if backend == "memory" else f"sqlite:///{tmp_path / 'kv.db'}"
        service = open_service(url, metrics=False, clock=clock)
    counting = IndexUpdates(service.get_store(SESSIONS_STORE))
    fired: list[str] = []
    manager = SessionManager(
        Host(SingleStoreService(counting)), clock=clock, on_expired=lambda s: fired.append(s.id)
    )
    created: list[str] = []

    async def create() -> None:
        created.append((await manager.create(user_id="u", timeout={"timeout_minutes": 5})).id)

    async with anyio.create_task_group() as group:
        for _ in range(300):
            group.start_soon(create)
    # One update per batch (at most CHUNK ids), plus one per head copied to a chunk.
    assert counting.head_updates <= 2 * (300 // CHUNK + 2), counting.head_updates
    clock.advance_by(5 * 60 + 2 * BUCKET_SECONDS)
    if backend == "redis":
        await shift_server_clocks([request.getfixturevalue("redis_url")], 5 * 60 + 20)
    assert await manager.sweep() == 300
    assert sorted(fired) == sorted(created)
    await service.aclose()


async def test_ending_or_expiring_a_session_removes_its_cached_states() -> None:
    clock = ManualClock(START)
    runtime = AgentRuntime(agent_id="agent-1", environ={})
    runtime.register_service(StoreService(MemoryStore(clock=clock)))
    async with runtime:
        manager = SessionManager(runtime, clock=clock)
        ended = await manager.create(user_id="u1")
        expiring = await manager.create(user_id="u2", timeout={"timeout_minutes": 1})
        kept = await manager.create(user_id="u3")
        for session in (ended, expiring, kept):
            for i in range(3):
                await manager.send_message(session.id, f"hello {i}")
        kept_ids = {m.id for m in await manager.messages(kept.id) if m.role == "user"}
        assert len([k async for k in runtime.state_cache.entries()]) == 9
        assert await manager.end(ended.id)
        clock.advance_by(120)
        assert await manager.sweep() == 1
        assert {k async for k, _ in runtime.state_cache.entries()} == kept_ids


# -- stored data survives the upgrade ----------------------------------------------------------


async def test_sessions_written_by_the_first_release_are_read_and_kept() -> None:
    fixture = json.loads(FIXTURE_V1.read_text())
    clock = ManualClock(fixture["clock"])
    service = StoreService(MemoryStore(clock=clock))
    for name, rows in fixture["stores"].items():
        store = service.get_store(name)
        for row in rows:
            await store.set(row["key"], row["value"], ttl=row["ttl"])
    fired: list[str] = []
    runtime = AgentRuntime(agent_id="agent-1", environ={})
    runtime.register_service(service)
    async with runtime:
        manager = SessionManager(runtime, clock=clock, on_expired=lambda s: fired.append(s.id))
        ids = fixture["session_ids"]
        stored = {
            row["value"]["id"]: row["value"]
            for row in fixture["stores"]["sessions"]
            if row["key"].startswith(f"m:{ids['a']}:")
        }
        a = await manager.get(ids["a"])
        assert a.message_count == len(stored) == 10
        assert a.metadata == {"topic": "v1 fixture"}
        history = await manager.messages(ids["a"], limit=20)
        assert {m.id: m.to_dict() for m in history} == stored
        walked, _ = await poll(manager, ids["a"], a.created_at)
        assert [m.id for m in walked] == [m.id for m in reversed(history)]

        clock.advance_by(1)
        reply = await manager.send_message(ids["a"], "after the upgrade")
        newest = await manager.messages(ids["a"], limit=2)
        assert newest[0].id == reply.id
        assert (await manager.get(ids["a"])).message_count == 12

        b = await manager.get(ids["b"])
        assert (b.message_count, b.renewal_count, b.timeout_config.auto_renew) == (2, 1, False)
        clock.advance_by(120)  # b (1 minute) and c (30 s) expire; a is renewed by activity
        assert await manager.sweep() == 2
        assert sorted(fired) == sorted([ids["b"], ids["c"]])
        assert await manager.end(ids["a"])
        # Only the state of the session the first release ended is left (its own bug).
        written = {
            row["value"]["id"]
            for row in fixture["stores"]["sessions"]
            if row["key"].startswith("m:")
        }
        orphans = {row["key"] for row in fixture["stores"]["state_cache"]} - written
        assert len(orphans) == 1
        assert {k async for k, _ in runtime.state_cache.entries()} == orphans
