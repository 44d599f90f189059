"""Changing a live session's timeout: ``SessionManager.update_timeout`` and ``PATCH .../timeout``.

The HTTP rules are the real ElizaOS 1.7.2 router's (``packages/server/src/api/messaging/
sessions.ts``): the session is looked up first (404, or 410 and deleted), then the body is
checked more strictly than create checks it, then merged over the server's defaults, so a
field left out is reset, not kept.
"""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest
from test_http import (  # the app and its fixtures
    CONFIG,
    MINUTE,
    START,
    client,
    clock,
    create,
    error_of,
    manager,
    runtime,
)

from kvstore import MemoryStore, StoreService
from kvstore.testing import ManualClock
from runtime.http import API_PREFIX, iso
from runtime.messages import Message
from runtime.sessions import (
    InvalidSessionInputError,
    Session,
    SessionExpiredError,
    SessionManager,
    SessionNotFoundError,
    SessionsConfig,
    TimeoutConfig,
)

pytestmark = pytest.mark.anyio
__all__ = ["client", "clock", "manager", "runtime"]  # fixtures, used by name


def timeout_url(session_id: str) -> str:
    return f"{API_PREFIX}/{session_id}/timeout"


# -- HTTP ------------------------------------------------------------------------------------------


async def test_patch_applies_the_settings_and_resets_those_not_sent(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    custom = {
        "timeoutMinutes": 60,
        "autoRenew": False,
        "maxDurationMinutes": 100,
        "warningThresholdMinutes": 10,
    }
    session_id = (await create(client, timeoutConfig=custom))["sessionId"]
    clock.advance_by(10 * MINUTE)
    patched = await client.patch(timeout_url(session_id), json={"timeoutMinutes": 90})
    assert patched.status_code == 200, patched.text
    body = patched.json()
    fetched = (await client.get(f"{API_PREFIX}/{session_id}")).json()
    assert set(body) == set(fetched)  # the session info shape, as GET
    # ElizaOS merges over the server's defaults: what was not sent is reset.
    assert body["timeoutConfig"] == {
        "timeoutMinutes": 90,
        "autoRenew": True,
        "maxDurationMinutes": CONFIG.max_duration_minutes,
        "warningThresholdMinutes": CONFIG.warning_threshold_minutes,
    }
    # From the last activity (creation here), capped by the max duration; the
    # activity and the renewals are unchanged.
    assert body["expiresAt"] == iso(START + 90 * MINUTE)
    assert (body["lastActivity"], body["renewalCount"]) == (iso(START), 0)
    assert fetched["timeoutConfig"] == body["timeoutConfig"]
    assert fetched["expiresAt"] == body["expiresAt"]


@pytest.mark.parametrize(
    ("sent", "reason"),
    [
        ({"timeoutMinutes": 4}, "Timeout must be between 5 and 1440 minutes"),
        ({"timeoutMinutes": 1441}, "Timeout must be between 5 and 1440 minutes"),
        ({"timeoutMinutes": "2"}, "Timeout must be between 5 and 1440 minutes"),
        ({"timeoutMinutes": None}, "Invalid timeout configuration format"),
        ({"autoRenew": "yes"}, "Invalid timeout configuration format"),
        ({"maxDurationMinutes": True}, "Invalid timeout configuration format"),
        ({"warningThresholdMinutes": [5]}, "Invalid timeout configuration format"),
    ],
    ids=repr,
)
async def test_patch_refuses_what_elizaos_refuses_and_changes_nothing(
    client: httpx.AsyncClient, sent: dict[str, Any], reason: str
) -> None:
    session_id = (await create(client, timeoutConfig={"timeoutMinutes": 60}))["sessionId"]
    before = (await client.get(f"{API_PREFIX}/{session_id}")).json()
    error = error_of(await client.patch(timeout_url(session_id), json=sent), 400)
    assert error["code"] == "VALIDATION_ERROR"
    assert error["message"] == f"Invalid timeout configuration: {reason}"
    assert error["details"] == {"reason": reason, "providedConfig": sent}
    after = (await client.get(f"{API_PREFIX}/{session_id}")).json()
    assert (after["timeoutConfig"], after["expiresAt"]) == (
        before["timeoutConfig"],
        before["expiresAt"],
    )


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        # Not a number: the default (create's rule); no range check applies.
        ({"timeoutMinutes": "abc"}, {"timeoutMinutes": 30}),
        ({"timeoutMinutes": " 45 "}, {"timeoutMinutes": 45}),
        ({"timeoutMinutes": "0x10"}, {"timeoutMinutes": 16}),
        ({"maxDurationMinutes": "1e9"}, {"maxDurationMinutes": 2880}),
        ({"timeoutMinutes": 40, "maxDurationMinutes": -1}, {"maxDurationMinutes": 40}),
        ({"warningThresholdMinutes": -3}, {"warningThresholdMinutes": 1}),
        ({"warningThresholdMinutes": "x"}, {"warningThresholdMinutes": 5}),
        ({"autoRenew": False, "unknown": 1}, {"autoRenew": False}),
    ],
    ids=repr,
)
async def test_patch_clamps_and_defaults_the_rest_as_create_does(
    client: httpx.AsyncClient, sent: dict[str, Any], expected: dict[str, Any]
) -> None:
    session_id = (await create(client))["sessionId"]
    patched = await client.patch(timeout_url(session_id), json=sent)
    assert patched.status_code == 200, patched.text
    config = patched.json()["timeoutConfig"]
    assert {name: config[name] for name in expected} == expected


async def test_patch_an_unknown_or_expired_session(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    unknown = "00000000-0000-4000-8000-000000000000"
    error = error_of(await client.patch(timeout_url(unknown), json={"timeoutMinutes": 60}), 404)
    assert error["code"] == "SESSION_NOT_FOUND"
    session_id = (await create(client))["sessionId"]
    clock.advance_by(31 * MINUTE)
    # The session is looked up before the body is checked: 410 even for a bad body.
    error = error_of(await client.patch(timeout_url(session_id), json={"timeoutMinutes": 1}), 410)
    assert error["code"] == "SESSION_EXPIRED"
    error = error_of(await client.patch(timeout_url(session_id), json={}), 404)
    assert error["code"] == "SESSION_NOT_FOUND"
    # A body that is not JSON is refused before anything else.
    response = await client.patch(
        timeout_url(unknown), content=b"{", headers={"content-type": "application/json"}
    )
    assert error_of(response, 400)["code"] == "INVALID_JSON"


# -- the sessions layer ----------------------------------------------------------------------------


class Host:
    agent_id = "agent-1"

    def __init__(self, service: StoreService) -> None:
        self.kv_service = service

    async def compose_state(self, message: Message) -> dict[str, Any]:
        return {}

    async def generate_reply(self, message: Message, state: dict[str, Any]) -> str:
        return f"re: {message.content}"


@pytest.fixture
def sessions() -> SessionManager:
    clock = ManualClock(START)
    return SessionManager(
        Host(StoreService(MemoryStore(clock=clock))),
        clock=clock,
        config=SessionsConfig(cleanup_interval=60, grace_seconds=900),
    )


def advance(manager: SessionManager, seconds: float) -> None:
    clock = manager.clock
    assert isinstance(clock, ManualClock)
    clock.advance_by(seconds)


async def test_fields_left_none_keep_the_sessions_values(sessions: SessionManager) -> None:
    session = await sessions.create(
        user_id="u", timeout=TimeoutConfig(timeout_minutes=20, auto_renew=False)
    )
    changed = await sessions.update_timeout(session.id, {"warning_threshold_minutes": 2})
    assert changed.timeout_config == TimeoutConfig(
        timeout_minutes=20,
        auto_renew=False,
        max_duration_minutes=720,
        warning_threshold_minutes=2,
    )
    assert changed.expires_at == session.expires_at
    assert (await sessions.get(session.id)).timeout_config == changed.timeout_config


async def test_a_shorter_timeout_is_swept_at_its_new_expiry(sessions: SessionManager) -> None:
    expired: list[Session] = []
    sessions.on_expired = expired.append
    session = await sessions.create(user_id="u", timeout={"timeout_minutes": 600})
    changed = await sessions.update_timeout(session.id, {"timeout_minutes": 10})
    assert changed.expires_at == START + 10 * MINUTE
    advance(sessions, 11 * MINUTE)
    with pytest.raises(SessionExpiredError):
        await sessions.get(session.id)
    assert await sessions.sweep() == 1
    assert [s.id for s in expired] == [session.id]
    with pytest.raises(SessionNotFoundError):
        await sessions.get(session.id)


async def test_a_longer_max_duration_keeps_the_messages_that_long(
    sessions: SessionManager,
) -> None:
    session = await sessions.create(
        user_id="u", timeout={"timeout_minutes": 30, "max_duration_minutes": 60}
    )
    await sessions.send_message(session.id, "hi")
    await sessions.update_timeout(session.id, {"max_duration_minutes": 600})
    # Past the old latest end and its grace: the session lives on, so must its history.
    for _ in range(5):
        advance(sessions, 20 * MINUTE)
        await sessions.heartbeat(session.id)
    history = await sessions.messages(session.id)
    assert [m.content for m in reversed(history)] == ["hi", "re: hi"]
    assert [s.id for s in await sessions.list(agent_id="agent-1")] == [session.id]


async def test_concurrent_sends_and_timeout_changes_lose_nothing(
    sessions: SessionManager,
) -> None:
    session = await sessions.create(user_id="u")
    async with anyio.create_task_group() as group:
        for i in range(20):
            group.start_soon(sessions.send_message, session.id, f"m{i}")
            group.start_soon(sessions.update_timeout, session.id, {"timeout_minutes": 40 + i})
    final = await sessions.get(session.id)
    assert final.message_count == 40 == len(await sessions.messages(session.id, limit=100))
    assert 40 <= (final.timeout_config.timeout_minutes or 0) < 60


@pytest.mark.parametrize(
    "bad",
    [{"timeout_minutes": 0}, {"max_duration_minutes": -1}, {"bogus": 1}, {"auto_renew": "no"}, 5],
    ids=repr,
)
async def test_bad_settings_are_refused_and_change_nothing(
    sessions: SessionManager, bad: Any
) -> None:
    session = await sessions.create(user_id="u")
    with pytest.raises(InvalidSessionInputError):
        await sessions.update_timeout(session.id, bad)
    assert (await sessions.get(session.id)).timeout_config == session.timeout_config


async def test_an_unknown_or_expired_session_is_refused(sessions: SessionManager) -> None:
    with pytest.raises(SessionNotFoundError):
        await sessions.update_timeout("nope", {"timeout_minutes": 5})
    session = await sessions.create(user_id="u", timeout={"timeout_minutes": 1})
    advance(sessions, 2 * MINUTE)
    with pytest.raises(SessionExpiredError):
        await sessions.update_timeout(session.id, {"timeout_minutes": 60})
