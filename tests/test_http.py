"""The Sessions HTTP API, in process: httpx.ASGITransport against create_app().

ASGITransport does not run the lifespan, so the fixtures initialise and close
the runtime themselves; one test drives the lifespan explicitly. Sessions run
on a manager with a ManualClock, so expiry is reached by moving the clock.
"""

from __future__ import annotations

import logging
import math
import random
import sys
from collections.abc import AsyncIterator
from typing import Any, Final

import anyio
import httpx
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import kvstore
from kvstore import BackendUnavailableError, StoreMetrics, StoreService, UpdateConflictError
from kvstore.backends.redis import RedisStore
from kvstore.testing import ManualClock
from kvstore.testing.redis_server import free_port
from runtime import AgentRuntime, Message
from runtime.__main__ import build_parser
from runtime.http import (
    API_PREFIX,
    DEFAULT_MAX_BODY_BYTES,
    backend_name,
    create_app,
    cursor_after,
    cursor_before,
    to_ms,
)
from runtime.sessions import Session, SessionManager, SessionsConfig

pytestmark = pytest.mark.anyio

AGENT = "agent-http"
START = 1_700_000_000.0
MINUTE = 60.0
SMALL_BODY_LIMIT = 4096
CONFIG = SessionsConfig(
    default_timeout_minutes=30,
    warning_threshold_minutes=5,
    max_duration_minutes=120,
    max_page_size=20,
    cleanup_interval=0.05,
    grace_seconds=3600,
)


# -- fixtures --------------------------------------------------------------------------------------


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
async def runtime() -> AsyncIterator[AgentRuntime]:
    # environ={}: a KV_STORE_BACKEND in the test's environment must not leak in.
    async with AgentRuntime(agent_id=AGENT, environ={}) as agent:
        yield agent


@pytest.fixture
def manager(runtime: AgentRuntime, clock: ManualClock) -> SessionManager:
    return SessionManager(runtime, config=CONFIG, clock=clock)


def client_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.fixture
async def client(
    runtime: AgentRuntime, manager: SessionManager
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(runtime, sessions=manager, max_body_bytes=SMALL_BODY_LIMIT)
    async with client_for(app) as http:
        yield http


async def create(client: httpx.AsyncClient, **extra: Any) -> dict[str, Any]:
    response = await client.post(API_PREFIX, json={"agentId": AGENT, "userId": "ada", **extra})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    """The error object of *response*, after checking its status and shape."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"code", "message"} and error["message"]
    return error


# -- creating and reading sessions -----------------------------------------------------------------


async def test_create_session(client: httpx.AsyncClient) -> None:
    response = await client.post(
        API_PREFIX, json={"agentId": AGENT, "userId": "ada", "metadata": {"channel": "web"}}
    )
    assert response.status_code == 201
    body = response.json()
    assert response.headers["location"] == f"{API_PREFIX}/{body['sessionId']}"
    assert body["agentId"] == AGENT and body["userId"] == "ada"
    assert body["metadata"] == {"channel": "web"}
    assert body["createdAt"] == START * 1000
    assert body["expiresAt"] == (START + 30 * MINUTE) * 1000
    assert body["timeoutConfig"] == {
        "timeoutMinutes": 30.0,
        "autoRenew": True,
        "maxDurationMinutes": 120.0,
        "warningThresholdMinutes": 5.0,
    }
    assert body["renewalCount"] == 0 and body["messageCount"] == 0
    assert body["timeRemaining"] == 30 * 60 * 1000
    assert body["isNearExpiration"] is False


async def test_create_with_timeout_config(client: httpx.AsyncClient) -> None:
    body = await create(
        client,
        timeoutConfig={"timeoutMinutes": 0.5, "autoRenew": False, "warningThresholdMinutes": 1},
    )
    assert body["timeoutConfig"] == {
        "timeoutMinutes": 0.5,
        "autoRenew": False,
        "maxDurationMinutes": 120.0,
        "warningThresholdMinutes": 1.0,
    }
    assert body["expiresAt"] == (START + 30) * 1000
    assert body["isNearExpiration"] is True
    # The timeout is capped by the max duration, as the sessions layer rules.
    capped = await create(client, timeoutConfig={"timeoutMinutes": 500, "maxDurationMinutes": 10})
    assert capped["timeoutConfig"]["timeoutMinutes"] == 10.0


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({}, "Missing required fields: agentId, userId"),
        ({"agentId": AGENT}, "Missing required fields: userId"),
        ({"agentId": AGENT, "userId": None}, "Missing required fields: userId"),
        ({"agentId": AGENT, "userId": 7}, "'userId' must be a string, not number"),
        ({"agentId": ["x"], "userId": "u"}, "'agentId' must be a string, not array"),
        ({"agentId": AGENT, "userId": ""}, "user_id"),
        ({"agentId": AGENT, "userId": "u", "metadata": "x"}, "'metadata' must be an object"),
        ({"agentId": AGENT, "userId": "u", "timeoutConfig": 5}, "'timeoutConfig' must be"),
        ({"agentId": AGENT, "userId": "u", "timeoutConfig": {"ttl": 5}}, "unknown timeoutConfig"),
        (
            {"agentId": AGENT, "userId": "u", "timeoutConfig": {"timeoutMinutes": "30"}},
            "timeoutConfig.timeoutMinutes must be a number, not string",
        ),
        (
            {"agentId": AGENT, "userId": "u", "timeoutConfig": {"autoRenew": 1}},
            "timeoutConfig.autoRenew must be a boolean",
        ),
        ({"agentId": AGENT, "userId": "u", "timeoutConfig": {"timeoutMinutes": 0}}, "> 0"),
        ({"agentId": AGENT, "userId": "u", "timeoutConfig": {"maxDurationMinutes": -1}}, "> 0"),
    ],
)
async def test_create_rejects_bad_input(
    client: httpx.AsyncClient, body: dict[str, Any], fragment: str
) -> None:
    error = error_of(await client.post(API_PREFIX, json=body), 400)
    assert error["code"] == "VALIDATION_ERROR"
    assert fragment in error["message"]
    assert (await client.get(API_PREFIX)).json()["total"] == 0


async def test_create_for_another_agent_is_404(client: httpx.AsyncClient) -> None:
    error = error_of(await client.post(API_PREFIX, json={"agentId": "other", "userId": "u"}), 404)
    assert error == {"code": "AGENT_NOT_FOUND", "message": "Agent with ID 'other' not found"}


@pytest.mark.parametrize(
    ("content", "code", "fragment"),
    [
        (b"{not json", "INVALID_JSON", "not valid JSON"),
        (b"", "INVALID_JSON", "empty"),
        (b"  \n", "INVALID_JSON", "empty"),
        (b"[1, 2]", "VALIDATION_ERROR", "must be a JSON object, not array"),
        (b'"text"', "VALIDATION_ERROR", "not string"),
        (b'{"agentId": NaN}', "INVALID_JSON", "not valid JSON"),
        (b"\xff\xfe", "INVALID_JSON", "not valid JSON"),
    ],
)
async def test_bad_json_body(
    client: httpx.AsyncClient, content: bytes, code: str, fragment: str
) -> None:
    response = await client.post(
        API_PREFIX, content=content, headers={"content-type": "application/json"}
    )
    error = error_of(response, 400)
    assert error["code"] == code
    assert fragment in error["message"]


@pytest.mark.parametrize(
    "content_type",
    [None, "application/x-www-form-urlencoded", "text/plain", "application/vnd.api+json"],
)
async def test_a_body_that_is_not_declared_json_is_refused(
    client: httpx.AsyncClient, content_type: str | None
) -> None:
    # A cross-site form or text/plain POST needs no preflight: refusing it is
    # what keeps a web page from creating sessions with a visitor's browser.
    headers = {} if content_type is None else {"content-type": content_type}
    response = await client.post(
        API_PREFIX, content=b'{"agentId": "agent-http", "userId": "u"}', headers=headers
    )
    error = error_of(response, 400)
    assert error["code"] == "INVALID_CONTENT_TYPE"
    listed = (await client.get(API_PREFIX)).json()
    assert listed["sessions"] == []


async def test_json_with_a_charset_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post(
        API_PREFIX,
        content=b'{"agentId": "agent-http", "userId": "u"}',
        headers={"content-type": "Application/JSON; charset=utf-8"},
    )
    assert response.status_code == 201


async def test_get_session_status_fields(client: httpx.AsyncClient, clock: ManualClock) -> None:
    created = await create(client)
    clock.advance_by(26 * MINUTE)
    response = await client.get(f"{API_PREFIX}/{created['sessionId']}")
    assert response.status_code == 200
    body = response.json()
    assert body["sessionId"] == created["sessionId"]
    assert body["timeRemaining"] == 4 * 60 * 1000
    assert body["isNearExpiration"] is True
    assert body["lastActivity"] == START * 1000
    assert body["lastMessageAt"] is None


async def test_list_sessions(client: httpx.AsyncClient, clock: ManualClock) -> None:
    first = await create(client)
    clock.advance_by(1)
    second = await create(client, userId="grace")
    body = (await client.get(API_PREFIX)).json()
    assert body["total"] == 2
    assert [s["sessionId"] for s in body["sessions"]] == [second["sessionId"], first["sessionId"]]
    mine = (await client.get(API_PREFIX, params={"agentId": AGENT})).json()
    assert mine["total"] == 2
    assert (await client.get(API_PREFIX, params={"agentId": "other"})).json() == {
        "sessions": [],
        "total": 0,
    }
    # Expired sessions are not listed.
    clock.advance_by(31 * MINUTE)
    assert (await client.get(API_PREFIX)).json()["total"] == 0


async def test_unknown_routes_and_methods(client: httpx.AsyncClient) -> None:
    assert error_of(await client.get("/nowhere"), 404)["code"] == "NOT_FOUND"
    response = await client.put(API_PREFIX)
    assert error_of(response, 405)["code"] == "METHOD_NOT_ALLOWED"
    assert set(response.headers["allow"].split(", ")) == {"GET", "HEAD", "POST"}


# -- messages --------------------------------------------------------------------------------------


async def test_send_message(client: httpx.AsyncClient, clock: ManualClock) -> None:
    session_id = (await create(client))["sessionId"]
    clock.advance_by(10 * MINUTE)
    response = await client.post(
        f"{API_PREFIX}/{session_id}/messages",
        json={"content": "hello", "metadata": {"lang": "en"}, "transport": "http"},
    )
    assert response.status_code == 201
    body = response.json()
    user, agent = body["userMessage"], body["agentMessage"]
    assert user["content"] == "hello" and user["metadata"] == {"lang": "en"}
    assert user["role"] == "user" and user["isAgent"] is False and user["authorId"] == "ada"
    assert agent["content"] == "Echo: hello" and body["agentResponse"] == {"text": "Echo: hello"}
    assert agent["role"] == "agent" and agent["isAgent"] is True and agent["authorId"] == AGENT
    assert agent["metadata"] == {"in_reply_to": user["id"]}
    assert user["sessionId"] == agent["sessionId"] == session_id
    assert START * 1000 < user["createdAt"] < agent["createdAt"]
    # Auto-renew: the activity moved the expiry.
    assert body["sessionStatus"] == {
        "expiresAt": (START + 40 * MINUTE) * 1000,
        "renewalCount": 1,
        "wasRenewed": True,
        "isNearExpiration": False,
        "timeRemaining": 30 * 60 * 1000,
    }
    session = (await client.get(f"{API_PREFIX}/{session_id}")).json()
    assert session["messageCount"] == 2
    assert session["lastMessageAt"] == agent["createdAt"]


async def test_send_message_idempotency_key(client: httpx.AsyncClient) -> None:
    session_id = (await create(client))["sessionId"]
    url = f"{API_PREFIX}/{session_id}/messages"
    headers = {"Idempotency-Key": "retry-1"}
    first = await client.post(url, json={"content": "once"}, headers=headers)
    again = await client.post(url, json={"content": "once"}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json()["agentMessage"]["id"] == first.json()["agentMessage"]["id"]
    reused = await client.post(url, json={"content": "other"}, headers=headers)
    assert error_of(reused, 422)["code"] == "IDEMPOTENCY_KEY_REUSED"
    history = (await client.get(url)).json()["messages"]
    session = (await client.get(f"{API_PREFIX}/{session_id}")).json()
    assert len(history) == session["messageCount"] == 2


async def test_send_message_accepts_elizaos_extras(client: httpx.AsyncClient) -> None:
    session_id = (await create(client))["sessionId"]
    extras: list[dict[str, Any]] = [
        {"mode": "sync"},
        {"transport": "websocket"},
        {"attachments": []},
    ]
    for extra in extras:
        response = await client.post(
            f"{API_PREFIX}/{session_id}/messages", json={"content": "hi", **extra}
        )
        assert response.status_code == 201, extra


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({}, "Missing required fields: content"),
        ({"content": 5}, "'content' must be a string, not number"),
        ({"content": "   "}, "empty"),
        ({"content": "x" * 65 * 1024}, "max_content_bytes"),
        ({"content": "hi", "metadata": [1]}, "'metadata' must be an object, not array"),
        ({"content": "hi", "transport": "carrier-pigeon"}, "'transport' must be one of"),
        ({"content": "hi", "mode": "async"}, "'mode' must be one of"),
    ],
)
async def test_send_message_rejects_bad_input(
    runtime: AgentRuntime, manager: SessionManager, body: dict[str, Any], fragment: str
) -> None:
    async with client_for(create_app(runtime, sessions=manager)) as client:
        session_id = (await create(client))["sessionId"]
        response = await client.post(f"{API_PREFIX}/{session_id}/messages", json=body)
        error = error_of(response, 400)
        assert error["code"] == "VALIDATION_ERROR"
        assert fragment in error["message"]
        assert (await client.get(f"{API_PREFIX}/{session_id}")).json()["messageCount"] == 0


async def send_many(client: httpx.AsyncClient, session_id: str, count: int) -> list[str]:
    contents: list[str] = []
    for i in range(count):
        response = await client.post(
            f"{API_PREFIX}/{session_id}/messages", json={"content": f"m{i}"}
        )
        assert response.status_code == 201
        contents += [f"m{i}", f"Echo: m{i}"]
    return contents


async def test_history_pages_with_cursors(client: httpx.AsyncClient) -> None:
    # The clock never moves: messages are 1 µs apart, far below a millisecond.
    session_id = (await create(client))["sessionId"]
    sent = await send_many(client, session_id, 7)
    url = f"{API_PREFIX}/{session_id}/messages"

    newest = (await client.get(url, params={"limit": 3})).json()
    assert [m["content"] for m in newest["messages"]] == ["Echo: m6", "m6", "Echo: m5"]
    assert newest["hasMore"] is True
    times = [m["createdAt"] for m in newest["messages"]]
    assert times == sorted(times, reverse=True) and len(set(times)) == 3
    assert newest["cursors"] == {"before": times[-1], "after": times[0]}

    seen: list[str] = []
    params: dict[str, Any] = {"limit": 3}
    while True:
        page = (await client.get(url, params=params)).json()
        seen += [m["content"] for m in page["messages"]]
        if not page["hasMore"]:
            break
        params["before"] = page["cursors"]["before"]
    assert seen == sent[::-1]

    # A window: strictly between two cursors, newest first.
    everything = (await client.get(url, params={"limit": 20})).json()["messages"]
    assert len(everything) == 14
    window = await client.get(
        url, params={"after": everything[10]["createdAt"], "before": everything[3]["createdAt"]}
    )
    assert [m["content"] for m in window.json()["messages"]] == [
        m["content"] for m in everything[4:10]
    ]
    assert window.json()["hasMore"] is False
    # `after` alone: the messages right after it (ElizaOS); hasMore tells newer ones remain.
    recent = (
        await client.get(url, params={"after": everything[5]["createdAt"], "limit": 2})
    ).json()
    assert [m["content"] for m in recent["messages"]] == [
        everything[3]["content"],
        everything[4]["content"],
    ]
    assert recent["hasMore"] is True


async def test_history_default_limit_and_empty(client: httpx.AsyncClient) -> None:
    session_id = (await create(client))["sessionId"]
    url = f"{API_PREFIX}/{session_id}/messages"
    assert (await client.get(url)).json() == {"messages": [], "hasMore": False}
    await send_many(client, session_id, 11)
    # Default 50, but never more than max_page_size (20 here).
    page = (await client.get(url, params={"before": "", "after": " "})).json()
    assert len(page["messages"]) == 20 and page["hasMore"] is True


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "21"}, "limit"),
        ({"limit": "-1"}, "'limit' must be an integer"),
        ({"limit": "2.5"}, "'limit' must be an integer"),
        ({"limit": "ten"}, "'limit' must be an integer"),
        ({"limit": "1_0"}, "'limit' must be an integer"),
        ({"before": "yesterday"}, "'before' must be a timestamp in epoch milliseconds"),
        ({"before": "2024-01-01T00:00:00Z"}, "'before' must be a timestamp"),
        ({"after": "nan"}, "'after' must be a timestamp"),
        ({"after": "inf"}, "'after' must be a timestamp"),
        ({"before": "1e400"}, "'before' must be a timestamp"),
    ],
)
async def test_history_rejects_bad_query(
    client: httpx.AsyncClient, params: dict[str, str], fragment: str
) -> None:
    session_id = (await create(client))["sessionId"]
    response = await client.get(f"{API_PREFIX}/{session_id}/messages", params=params)
    error = error_of(response, 400)
    assert error["code"] == "VALIDATION_ERROR"
    assert fragment in error["message"]


@given(
    created=st.floats(min_value=1e9, max_value=4e9),
    other=st.floats(min_value=1e9, max_value=4e9),
    exact=st.booleans(),
)
# Floats whose ms form divided by 1000 is not the float itself (~2 % of them):
# one rounds up, one down. Hypothesis rarely draws such values by itself.
@example(created=1204141639.9185028, other=1204141639.9185028, exact=True)
@example(created=1850493496.7981212, other=1850493496.7981212, exact=True)
def test_cursors_mean_the_same_in_seconds_and_milliseconds(
    created: float, other: float, exact: bool
) -> None:
    # A cursor is either some message's wire timestamp, or any number a client made up.
    ms = to_ms(other) if exact else other * 1000.0 + 0.3
    assert (created < cursor_before(ms)) == (to_ms(created) < ms)
    assert (created > cursor_after(ms)) == (to_ms(created) > ms)
    assert (created < cursor_before(to_ms(created))) is False
    assert (created > cursor_after(to_ms(created))) is False


def test_cursors_are_the_tightest_bounds() -> None:
    generator = random.Random(7)
    created = [generator.uniform(1e9, 4e9) for _ in range(2000)]
    # Message timestamps as sent, and numbers a client made up: for both, ms / 1000
    # multiplied back by 1000 may land on either side of ms.
    cursors = [to_ms(c) for c in created] + [generator.uniform(1e12, 4e12) for _ in range(2000)]
    assert any(to_ms(ms / 1000.0) < ms for ms in cursors)
    assert any(to_ms(ms / 1000.0) > ms for ms in cursors)
    for ms in cursors:
        assert to_ms(cursor_before(ms)) >= ms
        assert to_ms(math.nextafter(cursor_before(ms), -math.inf)) < ms
        assert to_ms(cursor_after(ms)) <= ms
        assert to_ms(math.nextafter(cursor_after(ms), math.inf)) > ms


# -- renew, heartbeat, delete, expiry --------------------------------------------------------------


async def test_renew_and_heartbeat(client: httpx.AsyncClient, clock: ManualClock) -> None:
    session_id = (await create(client, timeoutConfig={"autoRenew": False}))["sessionId"]
    clock.advance_by(20 * MINUTE)
    beat = await client.post(f"{API_PREFIX}/{session_id}/heartbeat")
    assert beat.status_code == 200
    assert beat.json()["lastActivity"] == (START + 20 * MINUTE) * 1000
    # Without auto-renew a heartbeat records activity but does not extend.
    assert beat.json()["expiresAt"] == (START + 30 * MINUTE) * 1000
    assert beat.json()["renewalCount"] == 0

    renewed = await client.post(f"{API_PREFIX}/{session_id}/renew")
    assert renewed.status_code == 200
    assert renewed.json()["expiresAt"] == (START + 50 * MINUTE) * 1000
    assert renewed.json()["renewalCount"] == 1
    assert renewed.json()["sessionId"] == session_id


async def test_renew_past_max_duration_is_refused(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    session_id = (await create(client, timeoutConfig={"maxDurationMinutes": 10}))["sessionId"]
    clock.advance_by(10 * MINUTE)
    error = error_of(await client.post(f"{API_PREFIX}/{session_id}/renew"), 400)
    assert error["code"] == "SESSION_RENEWAL_FAILED"
    assert "maximum duration" in error["message"]


def session_routes(session_id: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    one = f"{API_PREFIX}/{session_id}"
    return [
        ("GET", one, None),
        ("GET", f"{one}/messages", None),
        ("POST", f"{one}/messages", {"content": "hi"}),
        ("POST", f"{one}/renew", None),
        ("POST", f"{one}/heartbeat", None),
    ]


async def test_expired_session_is_410(client: httpx.AsyncClient, clock: ManualClock) -> None:
    session_id = (await create(client))["sessionId"]
    clock.advance_by(30 * MINUTE)
    for method, url, body in session_routes(session_id):
        error = error_of(await client.request(method, url, json=body), 410)
        assert error["code"] == "SESSION_EXPIRED", (method, url)
        assert session_id in error["message"]
    # An expired session can still be deleted (it is then gone for good).
    assert (await client.delete(f"{API_PREFIX}/{session_id}")).status_code == 204
    assert error_of(await client.get(f"{API_PREFIX}/{session_id}"), 404)["code"] == (
        "SESSION_NOT_FOUND"
    )


@pytest.mark.parametrize("session_id", ["x" * 24, "not*an*id", "health2", "%E2%9C%93"])
async def test_unknown_session_is_404(client: httpx.AsyncClient, session_id: str) -> None:
    routes = [*session_routes(session_id), ("DELETE", f"{API_PREFIX}/{session_id}", None)]
    for method, url, body in routes:
        error = error_of(await client.request(method, url, json=body), 404)
        assert error["code"] == "SESSION_NOT_FOUND", (method, url)


async def test_delete_session(client: httpx.AsyncClient) -> None:
    session_id = (await create(client))["sessionId"]
    await send_many(client, session_id, 2)
    response = await client.delete(f"{API_PREFIX}/{session_id}")
    assert response.status_code == 204 and response.content == b""
    error_of(await client.get(f"{API_PREFIX}/{session_id}/messages"), 404)
    error_of(await client.delete(f"{API_PREFIX}/{session_id}"), 404)


# -- body size limits ------------------------------------------------------------------------------


JSON: Final = {"content-type": "application/json"}


def padded(size: int) -> bytes:
    """A valid create body of exactly *size* bytes."""
    head = b'{"agentId": "agent-http", "userId": "u", "metadata": {"pad": "'
    tail = b'"}}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


async def test_body_at_the_limit_is_accepted(
    runtime: AgentRuntime, manager: SessionManager
) -> None:
    app = create_app(runtime, sessions=manager, max_body_bytes=SMALL_BODY_LIMIT)
    async with client_for(app) as client:
        assert (
            await client.post(API_PREFIX, content=padded(SMALL_BODY_LIMIT), headers=JSON)
        ).status_code == 201
        response = await client.post(API_PREFIX, content=padded(SMALL_BODY_LIMIT + 1), headers=JSON)
        assert error_of(response, 413)["code"] == "PAYLOAD_TOO_LARGE"


async def test_declared_oversize_body_is_413(client: httpx.AsyncClient) -> None:
    response = await client.post(API_PREFIX, content=b"x" * (SMALL_BODY_LIMIT * 10), headers=JSON)
    error = error_of(response, 413)
    assert str(SMALL_BODY_LIMIT) in error["message"]


async def test_chunked_oversize_body_is_413(client: httpx.AsyncClient) -> None:
    chunks_sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal chunks_sent
        for _ in range(100):
            chunks_sent += 1
            yield b"x" * 1024

    response = await client.post(API_PREFIX, content=chunks(), headers=JSON)
    assert "content-length" not in response.request.headers
    assert error_of(response, 413)["code"] == "PAYLOAD_TOO_LARGE"
    # It stopped reading soon after the limit, not at the end of the stream.
    assert chunks_sent <= SMALL_BODY_LIMIT // 1024 + 2


async def test_lying_content_length_is_413(client: httpx.AsyncClient) -> None:
    response = await client.post(
        API_PREFIX, content=padded(SMALL_BODY_LIMIT * 2), headers={**JSON, "content-length": "10"}
    )
    assert error_of(response, 413)["code"] == "PAYLOAD_TOO_LARGE"


async def test_malformed_content_length_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        API_PREFIX, content=b"{}", headers={**JSON, "content-length": "-2"}
    )
    assert error_of(response, 400)["code"] == "BAD_REQUEST"


async def test_message_body_limit(client: httpx.AsyncClient) -> None:
    session_id = (await create(client))["sessionId"]
    response = await client.post(
        f"{API_PREFIX}/{session_id}/messages", json={"content": "x" * SMALL_BODY_LIMIT}
    )
    assert error_of(response, 413)["code"] == "PAYLOAD_TOO_LARGE"


# -- health and metrics ----------------------------------------------------------------------------


async def test_health(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["agentId"] == AGENT and body["backend"] == "memory"
    assert body["store"]["reachable"] is True and body["store"]["latencyMs"] >= 0


async def test_elizaos_sessions_health(client: httpx.AsyncClient, clock: ManualClock) -> None:
    await create(client)
    await create(client, timeoutConfig={"timeoutMinutes": 2})
    body = (await client.get(f"{API_PREFIX}/health")).json()
    assert body["status"] == "healthy"
    assert body["activeSessions"] == 2 and body["expiringSoon"] == 1
    assert body["uptime"] >= 0 and body["timestamp"] > START * 1000


async def test_metrics_json(client: httpx.AsyncClient) -> None:
    session_id = (await create(client))["sessionId"]
    await client.get(f"{API_PREFIX}/{session_id}")
    body = (await client.get("/metrics")).json()
    assert body["agentId"] == AGENT and body["backend"] == "memory" and body["available"]
    sessions = body["stores"]["sessions"]
    assert sessions["gets"] >= 1 and sessions["backend"] == "memory"
    assert 0 <= sessions["hitRatio"] <= 1
    assert set(sessions["ops"]["get_many"]) >= {"count", "errors", "p50Ms", "p99Ms", "maxMs"}
    assert (await client.get("/metrics", params={"format": "json"})).json()["stores"]


async def test_metrics_prometheus(client: httpx.AsyncClient) -> None:
    await create(client)
    explicit = await client.get("/metrics", params={"format": "prometheus"})
    assert explicit.status_code == 200
    assert explicit.headers["content-type"].startswith("text/plain")
    assert 'kvstore_sets_total{backend="memory",store="sessions"}' in explicit.text
    scraped = await client.get("/metrics", headers={"accept": "text/plain;version=0.0.4"})
    assert scraped.text.startswith("# HELP")
    assert error_of(await client.get("/metrics", params={"format": "xml"}), 400)


class PlainService:
    """A KV store service without get_metrics (only the protocol's two members)."""

    def __init__(self) -> None:
        self._inner = StoreService(metrics=False)

    def get_store(self, name: str) -> Any:
        return self._inner.get_store(name)

    async def aclose(self) -> None:
        await self._inner.aclose()


async def test_metrics_without_get_metrics() -> None:
    service = PlainService()
    runtime = AgentRuntime(agent_id=AGENT, environ={})
    runtime.register_service(service)
    async with runtime, client_for(create_app(runtime)) as client:
        body = (await client.get("/metrics")).json()
        assert body == {
            "agentId": AGENT,
            "backend": "PlainService",
            "available": False,
            "stores": {},
        }
        text = (await client.get("/metrics", params={"format": "prometheus"})).text
        assert text == ""  # no collector: nothing to export
    await service.aclose()


class HangingStore:
    """A store whose reads never answer (a backend that accepts connections, then stalls)."""

    async def get(self, key: str, default: Any = None) -> Any:
        await anyio.sleep_forever()


class OddService:
    """A service whose stores hang and whose get_metrics returns one StoreMetrics."""

    def get_store(self, name: str) -> Any:
        return HangingStore()

    def get_metrics(self) -> StoreMetrics:
        return StoreMetrics(gets=3, hits=2, misses=1, hit_ratio=2 / 3, backend="odd")

    async def aclose(self) -> None:
        pass


async def test_health_times_out_and_single_store_metrics() -> None:
    runtime = AgentRuntime(agent_id=AGENT, environ={})
    runtime.register_service(OddService())
    async with runtime, client_for(create_app(runtime, health_timeout=0.05)) as client:
        with anyio.fail_after(5):
            health = await client.get("/health")
        assert health.status_code == 503
        assert health.json()["store"]["error"] == "no answer within 0.05s"
        stores = (await client.get("/metrics")).json()["stores"]
        assert list(stores) == ["default"]
        assert stores["default"]["hitRatio"] == 2 / 3 and stores["default"]["backend"] == "odd"


async def test_metrics_without_prometheus_client(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As if prometheus-client were missing: importing kvstore.prometheus fails.
    monkeypatch.setitem(sys.modules, "kvstore.prometheus", None)
    monkeypatch.delattr(kvstore, "prometheus", raising=False)
    explicit = await client.get("/metrics", params={"format": "prometheus"})
    assert error_of(explicit, 406)["code"] == "NOT_ACCEPTABLE"
    assert "kvstore-runtime[prometheus]" in explicit.json()["error"]["message"]
    # A scraper's Accept header falls back to JSON.
    scraped = await client.get("/metrics", headers={"accept": "text/plain"})
    assert scraped.status_code == 200 and scraped.json()["available"] is True


def test_backend_names() -> None:
    assert backend_name(StoreService()) == "memory"
    assert backend_name(StoreService(RedisStore("redis://127.0.0.1:1/0"))) == "redis"
    assert backend_name(PlainService()) == "PlainService"


# -- failures: 503 and 500 -------------------------------------------------------------------------


@pytest.fixture
async def dead_backend_runtime() -> AsyncIterator[AgentRuntime]:
    """A runtime whose store is a Redis nobody listens on, without retries."""
    root = RedisStore(f"redis://127.0.0.1:{free_port()}/0", retries=0, socket_connect_timeout=1)
    service = StoreService(root)
    runtime = AgentRuntime(agent_id=AGENT, environ={})
    runtime.register_service(service)
    async with runtime:
        yield runtime
    await service.aclose()


async def test_backend_down_is_503(dead_backend_runtime: AgentRuntime) -> None:
    async with client_for(create_app(dead_backend_runtime)) as client:
        calls: list[tuple[str, str, Any]] = [
            ("POST", API_PREFIX, {"agentId": AGENT, "userId": "u"}),
            ("GET", API_PREFIX, None),
            *session_routes("S" * 24),
            ("DELETE", f"{API_PREFIX}/{'S' * 24}", None),
        ]
        for method, url, body in calls:
            response = await client.request(method, url, json=body)
            error = error_of(response, 503)
            assert error["code"] == "SERVICE_UNAVAILABLE", (method, url)
            assert "127.0.0.1" not in error["message"]
            assert response.headers["retry-after"] == "1"
        health = await client.get("/health")
        assert health.status_code == 503
        assert health.json()["status"] == "unavailable" and health.json()["backend"] == "redis"
        assert health.json()["store"] == {
            "reachable": False,
            "latencyMs": health.json()["store"]["latencyMs"],
            "error": "BackendUnavailableError",
        }
        eliza = await client.get(f"{API_PREFIX}/health")
        assert eliza.status_code == 503 and eliza.json()["status"] == "unhealthy"


async def test_runtime_not_running_is_503() -> None:
    runtime = AgentRuntime(agent_id=AGENT, environ={})  # never initialised
    async with client_for(create_app(runtime)) as client:
        response = await client.post(API_PREFIX, json={"agentId": AGENT, "userId": "u"})
        assert error_of(response, 503)["code"] == "SERVICE_UNAVAILABLE"
        health = await client.get("/health")
        assert health.status_code == 503 and health.json()["backend"] == "unknown"


@pytest.mark.parametrize(
    "error",
    [UpdateConflictError("update('s') gave up"), BackendUnavailableError("OOM at 10.0.0.1")],
    ids=type,
)
async def test_store_faults_are_503_with_retry_after(error: Exception) -> None:
    async def failing(runtime: AgentRuntime, message: Message, state: dict[str, Any]) -> str:
        raise error

    async with AgentRuntime(agent_id=AGENT, handler=failing, environ={}) as runtime:
        async with client_for(create_app(runtime)) as client:
            session_id = (await create(client))["sessionId"]
            response = await client.post(
                f"{API_PREFIX}/{session_id}/messages", json={"content": "hi"}
            )
            assert error_of(response, 503)["code"] == "SERVICE_UNAVAILABLE"
            assert response.headers["retry-after"] == "1"
            assert "10.0.0.1" not in response.text


async def test_unexpected_error_is_a_logged_500(caplog: pytest.LogCaptureFixture) -> None:
    async def broken(runtime: AgentRuntime, message: Message, state: dict[str, Any]) -> str:
        raise RuntimeError("secret detail from the model")

    async with AgentRuntime(agent_id=AGENT, handler=broken, environ={}) as runtime:
        async with client_for(create_app(runtime)) as client:
            session_id = (await create(client))["sessionId"]
            with caplog.at_level(logging.ERROR, logger="runtime.http"):
                response = await client.post(
                    f"{API_PREFIX}/{session_id}/messages", json={"content": "hi"}
                )
            error = error_of(response, 500)
            assert error == {
                "code": "INTERNAL_SERVER_ERROR",
                "message": "an unexpected error occurred",
            }
            assert any(
                record.exc_info and "secret detail" in str(record.exc_info[1])
                for record in caplog.records
            )
            # A 5xx leaves nothing stored: the reply is made before anything is written.
            page = (await client.get(f"{API_PREFIX}/{session_id}/messages")).json()
            assert page["messages"] == []


# -- the application's lifespan and options --------------------------------------------------------


async def test_lifespan_runs_sweeper_and_closes_runtime(clock: ManualClock) -> None:
    runtime = AgentRuntime(agent_id=AGENT, environ={})
    await runtime.initialize()  # the manager below needs the KV service
    manager = SessionManager(runtime, config=CONFIG, clock=clock)
    app = create_app(runtime, sessions=manager)
    swept: list[str] = []
    done = anyio.Event()

    def on_expired(session: Session) -> None:
        swept.append(session.id)
        done.set()

    manager.on_expired = on_expired
    async with app.router.lifespan_context(app), client_for(app) as client:
        session_id = (await create(client))["sessionId"]
        clock.advance_by(31 * MINUTE)
        with anyio.fail_after(10):
            await done.wait()  # the sweeper runs every 0.05 s of real time
        assert swept == [session_id]
        error_of(await client.get(f"{API_PREFIX}/{session_id}"), 404)
    assert not runtime.initialized


async def test_lifespan_initialises_a_fresh_runtime() -> None:
    runtime = AgentRuntime(agent_id=AGENT, environ={})
    app = create_app(runtime, sweep=False)
    assert app.state.runtime is runtime
    async with app.router.lifespan_context(app):
        assert runtime.initialized
        async with client_for(app) as client:
            assert (await client.get("/health")).status_code == 200
    assert not runtime.initialized


def test_default_runtime_and_bad_options() -> None:
    app = create_app()
    assert isinstance(app.state.runtime, AgentRuntime)
    with pytest.raises(ValueError, match="max_body_bytes"):
        create_app(max_body_bytes=0)
    with pytest.raises(TypeError, match="max_body_bytes"):
        create_app(max_body_bytes=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="health_timeout"):
        create_app(health_timeout=math.inf)


# -- the command line ------------------------------------------------------------------------------


def test_serve_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENT_ID", raising=False)
    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.agent_id, args.log_level) == (
        "127.0.0.1",
        8000,
        None,
        "info",
    )
    assert args.max_body_bytes == DEFAULT_MAX_BODY_BYTES
    args = build_parser().parse_args(
        ["serve", "--port", "9001", "--agent-id", "a", "--log-level", "debug"]
    )
    assert (args.port, args.agent_id, args.log_level) == (9001, "a", "debug")


def test_serve_agent_id_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_ID", "from-env")
    assert build_parser().parse_args(["serve"]).agent_id == "from-env"


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["serve", "--port", "70000"],
        ["serve", "--log-level", "loud"],
        ["serve", "--max-body-bytes", "0"],
    ],
)
def test_serve_rejects_bad_arguments(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2
    assert "usage:" in capsys.readouterr().err


def nested_metadata(depth: int) -> dict[str, Any]:
    """A metadata object *depth* levels deep (the object itself is level 1)."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"d": value}
    return value


@pytest.mark.parametrize("depth", [33, 252, 253, 254])
async def test_deep_metadata_is_refused_and_stores_nothing(
    client: httpx.AsyncClient, depth: int
) -> None:
    session = await create(client)
    sid = session["sessionId"]
    deep = nested_metadata(depth)
    refused = await client.post(
        API_PREFIX, json={"agentId": AGENT, "userId": "u", "metadata": deep}
    )
    assert error_of(refused, 400)["code"] == "VALIDATION_ERROR"
    sent = await client.post(
        f"{API_PREFIX}/{sid}/messages", json={"content": "hi", "metadata": deep}
    )
    assert error_of(sent, 400)["code"] == "VALIDATION_ERROR"
    # Nothing changed: one session, no message, and the list still answers.
    listed = await client.get(API_PREFIX)
    assert listed.status_code == 200
    assert [s["sessionId"] for s in listed.json()["sessions"]] == [sid]
    history = await client.get(f"{API_PREFIX}/{sid}/messages")
    assert history.status_code == 200 and history.json()["messages"] == []
    info = (await client.get(f"{API_PREFIX}/{sid}")).json()
    assert info.get("messageCount", 0) == 0


async def test_metadata_at_the_depth_limit_is_kept(client: httpx.AsyncClient) -> None:
    deep = nested_metadata(32)
    session = await create(client, metadata=deep)
    sid = session["sessionId"]
    sent = await client.post(
        f"{API_PREFIX}/{sid}/messages", json={"content": "hi", "metadata": deep}
    )
    assert sent.status_code == 201, sent.text
    assert (await client.get(API_PREFIX)).status_code == 200
    assert (await client.get(f"{API_PREFIX}/{sid}/messages")).status_code == 200
