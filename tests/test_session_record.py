"""The stored session record: today's JSON decodes into SessionRecord and encodes back unchanged.

The byte strings below were written by the first release's ``runtime/sessions.py``
(a single module then, with the record as a plain dict), under a ManualClock
starting at 1_700_000_000: a fresh session, the same session after a message
exchange, a heartbeat and a renewal, and a session without auto-renew.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any, Final

import orjson
import pytest

from kvstore import MemoryStore, StoreService
from kvstore.testing import ManualClock
from runtime import AgentRuntime
from runtime.errors import SessionError
from runtime.sessions import SessionManager, SessionRecordError, TimeoutConfig
from runtime.sessions.record import SessionRecord, spans

pytestmark = pytest.mark.anyio

START = 1_700_000_000.0

FRESH: Final = (
    b'{"v":1,"agent_id":"agent-1","user_id":"user-1","metadata":{"channel":"web","tags":["a",1]},'
    b'"created_at":1700000000.0,"last_activity":1700000000.0,"renewed_at":1700000000.0,'
    b'"timeout":{"timeout_minutes":30.0,"auto_renew":true,"max_duration_minutes":720.0,'
    b'"warning_threshold_minutes":5.0},"renewal_count":0,"message_count":0,'
    b'"first_message_at":null,"last_message_at":null,"state":"active","expires_at":1700001800.0,'
    b'"id":"-lsi22vWb7wPCrGc5LAaw0qq"}'
)
USED: Final = (
    b'{"v":1,"agent_id":"agent-1","user_id":"user-1","metadata":{"channel":"web","tags":["a",1]},'
    b'"created_at":1700000000.0,"last_activity":1700000042.25,"renewed_at":1700000042.25,'
    b'"timeout":{"timeout_minutes":30.0,"auto_renew":true,"max_duration_minutes":720.0,'
    b'"warning_threshold_minutes":5.0},"renewal_count":3,"message_count":2,'
    b'"first_message_at":1700000012.25,"last_message_at":1700000012.250001,"state":"active",'
    b'"expires_at":1700001842.25,"id":"-lsi22vWb7wPCrGc5LAaw0qq"}'
)
NO_RENEW: Final = (
    b'{"v":1,"agent_id":"other","user_id":"u2","metadata":{},"created_at":1700000042.25,'
    b'"last_activity":1700000042.25,"renewed_at":1700000042.25,"timeout":{"timeout_minutes":0.5,'
    b'"auto_renew":false,"max_duration_minutes":90.0,"warning_threshold_minutes":0.1},'
    b'"renewal_count":0,"message_count":2,"first_message_at":1700000042.25,'
    b'"last_message_at":1700000042.250001,"state":"active","expires_at":1700000072.25,'
    b'"id":"po7cUNd1pyBX0yfwK9nan_Pn"}'
)


def upgraded(raw: bytes, **fields: bytes) -> bytes:
    """*raw* as this release writes it back: format 2, no pending seqs, no holes."""
    for name, value in fields.items():
        start = raw.index(f'"{name}":'.encode()) + len(name) + 3
        end = min(i for i in (raw.find(b",", start), raw.find(b"}", start)) if i >= 0)
        raw = raw[:start] + value + raw[end:]
    return raw.replace(b'{"v":1,', b'{"v":2,', 1)[:-1] + b',"pending":[],"holes":0}'


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
async def manager(clock: ManualClock) -> AsyncIterator[SessionManager]:
    agent = AgentRuntime(agent_id="agent-1", environ={})
    service = StoreService(MemoryStore(clock=clock))
    agent.register_service(service)
    async with agent:
        yield SessionManager(agent, clock=clock)
    await service.aclose()


async def stored(manager: SessionManager, session_id: str) -> bytes:
    return orjson.dumps(await manager.store.get(f"s:{session_id}"))


def with_id(raw: bytes, session_id: str) -> bytes:
    return orjson.dumps({**orjson.loads(raw), "id": session_id})


@pytest.mark.parametrize("raw", [FRESH, USED, NO_RENEW], ids=["fresh", "used", "no-renew"])
def test_first_release_records_decode_and_encode_back_byte_for_byte(raw: bytes) -> None:
    record = SessionRecord.from_dict(orjson.loads(raw))
    assert orjson.dumps(record.to_dict()) == upgraded(raw)
    assert SessionRecord.from_dict(orjson.loads(upgraded(raw))) == record


def test_decoded_fields_are_typed() -> None:
    record = SessionRecord.from_dict(orjson.loads(USED))
    assert record.id == "-lsi22vWb7wPCrGc5LAaw0qq"
    assert record.metadata == {"channel": "web", "tags": ["a", 1]}
    assert record.timeout.to_config() == TimeoutConfig(30.0, True, 720.0, 5.0)
    assert (record.renewal_count, record.message_count, record.state) == (3, 2, "active")
    assert record.last_message_at == 1700000012.250001
    assert record.latest_end == START + 720 * 60


async def test_the_manager_writes_what_the_first_release_wrote(
    manager: SessionManager, clock: ManualClock
) -> None:
    """The first release's steps, replayed: every record byte equal but the random id,
    the format version and message times (now whole milliseconds after the creation)."""
    first = await manager.create(user_id="user-1", metadata={"channel": "web", "tags": ["a", 1]})
    assert await stored(manager, first.id) == with_id(upgraded(FRESH), first.id)
    clock.advance_by(12.25)
    await manager.send_message(first.id, "hello")
    clock.advance_by(30)
    await manager.heartbeat(first.id)
    await manager.renew(first.id)
    used = upgraded(USED, last_message_at=b"1700000012.251")
    assert await stored(manager, first.id) == with_id(used, first.id)
    timeout = {
        "timeout_minutes": 0.5,
        "auto_renew": False,
        "max_duration_minutes": 90,
        "warning_threshold_minutes": 0.1,
    }
    second = await manager.create(agent_id="other", user_id="u2", timeout=timeout)
    await manager.send_message(second.id, "x")
    no_renew = upgraded(
        NO_RENEW, first_message_at=b"1700000042.251", last_message_at=b"1700000042.252"
    )
    assert await stored(manager, second.id) == with_id(no_renew, second.id)


async def test_a_first_release_record_is_served(
    manager: SessionManager, clock: ManualClock
) -> None:
    data = orjson.loads(USED)
    await manager.store.set(f"s:{data['id']}", data)
    clock.advance_by(60)
    session = await manager.get(data["id"])
    assert (session.user_id, session.renewal_count, session.message_count) == ("user-1", 3, 2)
    assert session.expires_at == 1700001842.25
    reply = await manager.send_message(data["id"], "still here?")
    assert reply.content == "Echo: still here?"
    # Seqs 0 and 1 were never written in this store: holes, skipped.
    assert [m.content for m in await manager.messages(data["id"])] == [
        "Echo: still here?",
        "still here?",
    ]
    assert (await manager.get(data["id"])).message_count == 4
    assert await manager.end(data["id"]) is True


def test_timestamps_are_kept_as_read() -> None:
    data = {**orjson.loads(FRESH), "created_at": 1_700_000_000, "renewed_at": 1_700_000_000}
    record = SessionRecord.from_dict(data)
    assert orjson.dumps(record.to_dict()) == upgraded(orjson.dumps(data))  # ints stay ints


def test_pending_ranges_keep_their_fences_through_the_stored_form() -> None:
    record = SessionRecord.from_dict(orjson.loads(FRESH))
    fenced = record.with_messages(
        record.created_at + 1, 4, renewals=2, fences=((2, 2, "i:s:abc", "owner-1"),)
    )
    again = fenced.with_messages(
        record.created_at + 2, 2, renewals=1, fences=((0, 2, "i:s:def", "owner-2"),)
    )
    plain = again.with_messages(record.created_at + 3, 2, renewals=1)
    stored = orjson.loads(orjson.dumps(plain.to_dict()))
    assert stored["pending"] == [
        [0, 4, record.created_at + 1, [[2, 2, "i:s:abc", "owner-1"]]],
        [4, 2, record.created_at + 2, [[4, 2, "i:s:def", "owner-2"]]],  # seqs made absolute
        [6, 2, record.created_at + 3],  # a range without a keyed exchange: three fields
    ]
    assert SessionRecord.from_dict(stored) == plain


def test_dead_seqs_of_a_given_up_range_go_through_the_stored_form() -> None:
    record = SessionRecord.from_dict(orjson.loads(FRESH))
    allocated = record.with_messages(record.created_at + 1, 6, renewals=3)
    assert "dead" not in allocated.to_dict()  # written only when there are some
    dead = spans([5, 1, 2, 4])
    assert dead == ((1, 2), (4, 2))
    given_up = allocated.given_up(0, 4, dead)
    stored = orjson.loads(orjson.dumps(given_up.to_dict()))
    assert stored["dead"] == [[1, 2], [4, 2]]
    assert (stored["holes"], stored["pending"]) == (4, [])
    decoded = SessionRecord.from_dict(stored)
    assert decoded == given_up
    assert decoded.dead_seqs() == {1, 2, 4, 5}
    assert decoded.visible_count == 2
    # A range given up twice (two give-ups racing) counts once.
    assert decoded.given_up(0, 4, dead) == decoded


def test_the_record_is_frozen_and_slotted() -> None:
    record = SessionRecord.from_dict(orjson.loads(FRESH))
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.state = "ended"  # type: ignore[misc]
    assert not hasattr(record, "__dict__")
    ended = record.with_state("ended")
    assert (record.state, ended.state) == ("active", "ended")


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"v": 3}, "format version 3"),
        ({"v": 2, "pending": [[0, 1]], "holes": 0}, "'pending'/'holes'/'dead' are malformed"),
        ({"v": 2, "pending": [], "holes": 0, "dead": [[0]]}, "'dead' are malformed"),
        ({"v": 2, "pending": [], "holes": 0, "dead": [[0, True]]}, "'dead' are malformed"),
        ({"v": 2, "pending": [[0, 2, 1.0, [[0, 2, "i:x"]]]], "holes": 0}, "are malformed"),
        ({"v": 2, "pending": [[0, 2, 1.0, {}]], "holes": 0}, "are malformed"),
        ({"v": "1"}, "format version '1'"),
        ({"state": "paused"}, "'state'"),
        ({"message_count": 1.0}, "'message_count' is a float, not int"),
        ({"created_at": True}, "'created_at'"),
        ({"metadata": []}, "'metadata'"),
        ({"timeout": {"timeout_minutes": 30.0}}, "'timeout.auto_renew' is missing"),
        ({"last_message_at": "yesterday"}, "not int or float or null"),
    ],
    ids=repr,
)
def test_records_it_cannot_read_are_refused(change: dict[str, Any], fragment: str) -> None:
    with pytest.raises(SessionRecordError, match=fragment) as info:
        SessionRecord.from_dict({**orjson.loads(FRESH), **change})
    assert isinstance(info.value, SessionError) and isinstance(info.value, ValueError)


def test_a_missing_field_is_named() -> None:
    data = orjson.loads(FRESH)
    del data["expires_at"]
    with pytest.raises(SessionRecordError, match="'expires_at' is missing"):
        SessionRecord.from_dict(data)


async def test_the_manager_refuses_a_foreign_record_and_changes_nothing(
    manager: SessionManager,
) -> None:
    session = await manager.create(user_id="u")
    foreign = {**orjson.loads(FRESH), "id": session.id, "v": 99}
    await manager.store.set(f"s:{session.id}", foreign)
    with pytest.raises(SessionRecordError, match="newer"):
        await manager.get(session.id)
    with pytest.raises(SessionRecordError):
        await manager.send_message(session.id, "hi")
    assert await manager.store.get(f"s:{session.id}") == foreign
