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
import uuid
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
    iso,
    ms,
)
from runtime.sessions import Session, SessionManager, SessionsConfig
from runtime.sessions.keys import session_key

pytestmark = pytest.mark.anyio

AGENT = "b850bc30-45f8-4041-a00a-83df46d8555d"
USER = "11111111-2222-4333-8444-555555555555"
START = 1_700_000_000.0
MINUTE = 60.0
SMALL_BODY_LIMIT = 4096
BODY = f'{{"agentId": "{AGENT}", "userId": "{USER}"}}'.encode()
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
    app = create_app(runtime, sessions=manager, max_body_bytes=SMALL_BODY_LIMIT, sweep=False)
    # The lifespan runs the reply worker of the websocket and sse transports.
    async with app.router.lifespan_context(app), client_for(app) as http:
        yield http


async def create(client: httpx.AsyncClient, **extra: Any) -> dict[str, Any]:
    response = await client.post(API_PREFIX, json={"agentId": AGENT, "userId": USER, **extra})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    """The error object of *response*, after checking its status and shape."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error: dict[str, Any] = response.json()["error"]
    assert (
        {"code", "message", "timestamp"}
        <= set(error)
        <= {"code", "message", "timestamp", "details"}
    )
    assert error["message"] and error["timestamp"].endswith("Z")
    return error


# -- creating and reading sessions -----------------------------------------------------------------


async def test_create_session(client: httpx.AsyncClient) -> None:
    response = await client.post(
        API_PREFIX, json={"agentId": AGENT, "userId": USER, "metadata": {"channel": "web"}}
    )
    assert response.status_code == 201
    body = response.json()
    assert response.headers["location"] == f"{API_PREFIX}/{body['sessionId']}"
    # ElizaOS's create answer: no status fields (those come with GET).
    assert set(body) == {
        "sessionId",
        "channelId",
        "agentId",
        "userId",
        "createdAt",
        "metadata",
        "expiresAt",
        "timeoutConfig",
    }
    assert uuid.UUID(body["sessionId"]).version == 4
    assert uuid.UUID(body["channelId"]) and body["channelId"] != body["sessionId"]
    assert body["agentId"] == AGENT and body["userId"] == USER
    assert body["metadata"] == {"channel": "web"}
    assert body["createdAt"] == "2023-11-14T22:13:20.000Z"
    assert body["expiresAt"] == "2023-11-14T22:43:20.000Z"
    assert body["timeoutConfig"] == {
        "timeoutMinutes": 30.0,
        "autoRenew": True,
        "maxDurationMinutes": 120.0,
        "warningThresholdMinutes": 5.0,
    }
    again = (await client.get(f"{API_PREFIX}/{body['sessionId']}")).json()
    assert again["channelId"] == body["channelId"]


async def test_create_with_timeout_config(client: httpx.AsyncClient) -> None:
    body = await create(
        client,
        timeoutConfig={"timeoutMinutes": 10, "autoRenew": False, "warningThresholdMinutes": 1},
    )
    assert body["timeoutConfig"] == {
        "timeoutMinutes": 10.0,
        "autoRenew": False,
        "maxDurationMinutes": 120.0,
        "warningThresholdMinutes": 1.0,
    }
    assert body["expiresAt"] == iso(START + 10 * MINUTE)


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        # ElizaOS clamps and coerces where a strict API would refuse.
        ({"timeoutMinutes": 1}, (5, True, 120, 5)),
        ({"timeoutMinutes": 999999, "maxDurationMinutes": 999999}, (1440, True, 2880, 5)),
        ({"timeoutMinutes": "60", "maxDurationMinutes": "90"}, (60, True, 90, 5)),
        ({"timeoutMinutes": "0x10"}, (16, True, 120, 5)),
        ({"timeoutMinutes": "1,000"}, (30, True, 120, 5)),
        ({"timeoutMinutes": None}, (5, True, 120, 5)),
        ({"timeoutMinutes": 60, "maxDurationMinutes": 10}, (60, True, 60, 5)),
        ({"warningThresholdMinutes": 0}, (30, True, 120, 1)),
        ({"warningThresholdMinutes": "NaN"}, (30, True, 120, 5)),
        ({"ttl": 5, "autoRenew": False}, (30, False, 120, 5)),
        ("abc", (30, True, 120, 5)),
        ([5], (30, True, 120, 5)),
    ],
)
async def test_create_clamps_timeouts_as_elizaos(
    client: httpx.AsyncClient, sent: Any, expected: tuple[float, bool, float, float]
) -> None:
    config = (await create(client, timeoutConfig=sent))["timeoutConfig"]
    got = (
        config["timeoutMinutes"],
        config["autoRenew"],
        config["maxDurationMinutes"],
        config["warningThresholdMinutes"],
    )
    assert got == expected


MISSING = "Missing required fields: agentId, userId"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({}, MISSING),
        ({"agentId": AGENT}, MISSING),
        ({"agentId": AGENT, "userId": None}, MISSING),
        ({"agentId": AGENT, "userId": 7}, MISSING),
        ({"agentId": ["x"], "userId": USER}, MISSING),
        ({"agentId": AGENT, "userId": ""}, "Invalid UUID format for field 'userId'"),
        ({"agentId": "agent-1", "userId": "ada"}, "Invalid UUID format for field 'agentId'"),
        ({"agentId": AGENT, "userId": "ada"}, "Invalid UUID format for field 'userId'"),
        ({"agentId": AGENT, "userId": USER, "metadata": "x"}, "'metadata' must be an object"),
    ],
)
async def test_create_rejects_bad_input(
    client: httpx.AsyncClient, body: dict[str, Any], fragment: str
) -> None:
    error = error_of(await client.post(API_PREFIX, json=body), 400)
    assert error["code"] == "VALIDATION_ERROR"
    assert fragment in error["message"]
    if fragment == MISSING:
        assert error["details"] == {"missingFields": ["agentId", "userId"]}
    assert (await client.get(API_PREFIX)).json()["total"] == 0


async def test_create_refuses_metadata_over_10_kb(
    runtime: AgentRuntime, manager: SessionManager
) -> None:
    async with client_for(create_app(runtime, sessions=manager)) as client:
        fits = {"agentId": AGENT, "userId": USER, "metadata": {"b": "x" * (10240 - 10)}}
        assert (await client.post(API_PREFIX, json=fits)).status_code == 201
        over = {"agentId": AGENT, "userId": USER, "metadata": {"b": "x" * 10240}}
        error = error_of(await client.post(API_PREFIX, json=over), 400)
        assert error["message"] == "Invalid metadata: Metadata exceeds maximum size of 10240 bytes"


async def test_create_for_another_agent_is_404(client: httpx.AsyncClient) -> None:
    other = str(uuid.uuid4())
    error = error_of(await client.post(API_PREFIX, json={"agentId": other, "userId": USER}), 404)
    assert error["code"] == "AGENT_NOT_FOUND"
    assert error["message"] == f"Agent with ID '{other}' not found"


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
    response = await client.post(API_PREFIX, content=BODY, headers=headers)
    error = error_of(response, 400)
    assert error["code"] == "INVALID_CONTENT_TYPE"
    listed = (await client.get(API_PREFIX)).json()
    assert listed["sessions"] == []


async def test_json_with_a_charset_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post(
        API_PREFIX,
        content=BODY,
        headers={"content-type": "Application/JSON; charset=utf-8"},
    )
    assert response.status_code == 201


async def test_get_session_status_fields(client: httpx.AsyncClient, clock: ManualClock) -> None:
    created = await create(client)
    clock.advance_by(26 * MINUTE)
    response = await client.get(f"{API_PREFIX}/{created['sessionId']}")
    assert response.status_code == 200
    body = response.json()
    assert list(body) == [
        "sessionId",
        "channelId",
        "agentId",
        "userId",
        "createdAt",
        "lastActivity",
        "metadata",
        "expiresAt",
        "timeoutConfig",
        "renewalCount",
        "timeRemaining",
        "isNearExpiration",
    ]
    assert body["sessionId"] == created["sessionId"]
    assert body["timeRemaining"] == 4 * 60 * 1000
    assert body["isNearExpiration"] is True
    assert body["lastActivity"] == iso(START)


async def test_list_sessions(client: httpx.AsyncClient, clock: ManualClock) -> None:
    first = await create(client)
    clock.advance_by(1)
    second = await create(client, userId=str(uuid.uuid4()))
    body = (await client.get(API_PREFIX)).json()
    assert body["total"] == 2
    assert body["stats"] == {"totalSessions": 2, "activeSessions": 2, "expiredSessions": 0}
    assert [s["sessionId"] for s in body["sessions"]] == [second["sessionId"], first["sessionId"]]
    mine = (await client.get(API_PREFIX, params={"agentId": AGENT})).json()
    assert mine["total"] == 2
    other = (await client.get(API_PREFIX, params={"agentId": "other"})).json()
    assert other["sessions"] == [] and other["total"] == 0
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
    created = await create(client, metadata={"platform": "test"})
    session_id = created["sessionId"]
    clock.advance_by(10 * MINUTE)
    response = await client.post(
        f"{API_PREFIX}/{session_id}/messages",
        json={"content": "hello", "metadata": {"lang": "en"}, "transport": "http"},
    )
    assert response.status_code == 201
    body = response.json()
    assert list(body) == ["success", "userMessage", "agentResponse", "sessionStatus"]
    assert body["success"] is True
    user = body["userMessage"]
    assert set(user) == {
        "id",
        "channel_id",
        "message_server_id",
        "author_id",
        "content",
        "created_at",
        "source_type",
        "raw_message",
        "metadata",
    }
    assert user["channel_id"] == created["channelId"] and user["author_id"] == USER
    assert user["content"] == "hello" and user["source_type"] == "user"
    assert user["raw_message"] == {"content": "hello"}
    assert user["created_at"] == ms(START + 10 * MINUTE)
    # The session's channel metadata is merged under the message's own.
    assert user["metadata"] == {
        "userId": USER,
        "agentId": AGENT,
        "sessionId": session_id,
        "timeoutConfig": created["timeoutConfig"],
        "platform": "test",
        "lang": "en",
    }
    reply = body["agentResponse"]
    assert reply["text"] == "Echo: hello" and reply["actions"] == ["REPLY"]
    assert reply["inReplyTo"] == user["id"] and isinstance(reply["thought"], str)
    # Auto-renew: the activity moved the expiry.
    assert body["sessionStatus"] == {
        "expiresAt": iso(START + 40 * MINUTE),
        "renewalCount": 1,
        "wasRenewed": True,
        "isNearExpiration": False,
    }
    history = (await client.get(f"{API_PREFIX}/{session_id}/messages")).json()["messages"]
    assert [m["isAgent"] for m in history] == [True, False]
    assert history[1]["metadata"] == user["metadata"]
    assert history[1]["authorId"] == USER and history[0]["authorId"] == AGENT
    assert set(history[1]) == {"id", "content", "authorId", "isAgent", "createdAt", "metadata"}


@pytest.mark.parametrize(
    ("transport", "key"), [("http", None), ("websocket", None), ("sse", None), ("http", "k-1")]
)
async def test_a_send_reads_the_session_record_once(
    client: httpx.AsyncClient,
    manager: SessionManager,
    monkeypatch: pytest.MonkeyPatch,
    transport: str,
    key: str | None,
) -> None:
    """ElizaOS's 404/410 check reads it; the answer's status comes from the commit."""
    session_id = (await create(client))["sessionId"]
    store, reads = manager.store, []
    real_get = store.get

    async def get(key: str, default: Any = None) -> Any:
        reads.append(key)
        return await real_get(key, default)

    monkeypatch.setattr(store, "get", get)
    response = await client.post(
        f"{API_PREFIX}/{session_id}/messages",
        json={"content": "hello", "transport": transport},
        headers={} if key is None else {"Idempotency-Key": key},
    )
    assert response.status_code in (200, 201), response.text
    assert reads.count(session_key(session_id)) == 1
    if transport == "http":
        assert response.json()["sessionStatus"]["renewalCount"] == 1


async def test_send_without_auto_renew_was_not_renewed(client: httpx.AsyncClient) -> None:
    session_id = (await create(client, timeoutConfig={"autoRenew": False}))["sessionId"]
    response = await client.post(
        f"{API_PREFIX}/{session_id}/messages", json={"transport": "http", "content": "hi"}
    )
    assert response.json()["sessionStatus"]["wasRenewed"] is False


async def test_send_message_idempotency_key(client: httpx.AsyncClient) -> None:
    session_id = (await create(client))["sessionId"]
    url = f"{API_PREFIX}/{session_id}/messages"
    headers = {"Idempotency-Key": "retry-1"}
    first = await client.post(url, json={"transport": "http", "content": "once"}, headers=headers)
    again = await client.post(url, json={"transport": "http", "content": "once"}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert (
        again.json()["agentResponse"]["responseId"] == first.json()["agentResponse"]["responseId"]
    )
    assert again.json()["userMessage"]["id"] == first.json()["userMessage"]["id"]
    reused = await client.post(url, json={"transport": "http", "content": "other"}, headers=headers)
    assert error_of(reused, 422)["code"] == "IDEMPOTENCY_KEY_REUSED"
    history = (await client.get(url)).json()["messages"]
    assert len(history) == 2


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
        ({}, "Invalid content: Invalid message request format"),
        ({"content": 5}, "Invalid content: Invalid message request format"),
        ({"content": "   "}, "empty"),
        ({"content": "x" * 4001}, "Content exceeds maximum length of 4000 characters"),
        ({"content": "hi", "metadata": [1]}, "'metadata' must be an object, not array"),
        ({"content": "hi", "metadata": {"b": "x" * 10240}}, "Metadata exceeds maximum size"),
        ({"content": "hi", "transport": "carrier-pigeon"}, 'Invalid transport "carrier-pigeon"'),
        ({"content": "hi", "transport": 5}, 'Invalid transport type "number"'),
        ({"content": "hi", "mode": "async"}, 'Invalid transport "async"'),
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
        history = (await client.get(f"{API_PREFIX}/{session_id}/messages")).json()
        assert history["messages"] == []


async def test_content_type_is_checked_before_the_session(client: httpx.AsyncClient) -> None:
    # ElizaOS's order: a bad content is reported even for an unknown session.
    response = await client.post(f"{API_PREFIX}/{uuid.uuid4()}/messages", json={"content": 5})
    assert error_of(response, 400)["code"] == "VALIDATION_ERROR"
    response = await client.post(f"{API_PREFIX}/{uuid.uuid4()}/messages", json={"content": ""})
    assert error_of(response, 404)["code"] == "SESSION_NOT_FOUND"


async def send_many(
    client: httpx.AsyncClient, session_id: str, count: int, clock: ManualClock | None = None
) -> list[str]:
    contents: list[str] = []
    for i in range(count):
        if clock is not None:
            clock.advance_by(0.01)
        response = await client.post(
            f"{API_PREFIX}/{session_id}/messages", json={"transport": "http", "content": f"m{i}"}
        )
        assert response.status_code == 201
        contents += [f"m{i}", f"Echo: m{i}"]
    return contents


class TickingClock(ManualClock):
    """Two milliseconds later at every reading: every message gets a millisecond of its own.

    The wire's cursors are whole milliseconds, as ElizaOS's are; distinct
    millisecond stamps are the sessions layer's to guarantee (branch ``sessions``).
    """

    def __call__(self) -> float:
        self.advance_by(0.002)
        return super().__call__()


async def test_history_pages_with_cursors(runtime: AgentRuntime) -> None:
    manager = SessionManager(runtime, config=CONFIG, clock=TickingClock(START))
    async with client_for(create_app(runtime, sessions=manager)) as client:
        await _pages_with_cursors(client)


async def _pages_with_cursors(client: httpx.AsyncClient) -> None:
    session_id = (await create(client))["sessionId"]
    sent = await send_many(client, session_id, 7)
    url = f"{API_PREFIX}/{session_id}/messages"

    newest = (await client.get(url, params={"limit": 3})).json()
    assert [m["content"] for m in newest["messages"]] == ["Echo: m6", "m6", "Echo: m5"]
    assert newest["hasMore"] is True
    times = [m["createdAt"] for m in newest["messages"]]
    assert all(t.endswith("Z") for t in times) and times == sorted(times, reverse=True)
    cursors = newest["cursors"]
    assert isinstance(cursors["before"], int) and cursors["before"] <= cursors["after"]

    seen: list[str] = []
    params: dict[str, Any] = {"limit": 3}
    while True:
        page = (await client.get(url, params=params)).json()
        seen += [m["content"] for m in page["messages"]]
        if not page["hasMore"]:
            break
        params["before"] = page["cursors"]["before"]
    assert seen == sent[::-1]

    # ISO cursors are parsed as times: the same pages as epoch milliseconds.
    everything = (await client.get(url, params={"limit": 20})).json()["messages"]
    assert len(everything) == 14
    window = await client.get(
        url, params={"after": everything[12]["createdAt"], "before": everything[1]["createdAt"]}
    )
    assert window.json()["messages"] == everything[2:12]
    assert window.json()["hasMore"] is False
    # `after` alone pages forward: the messages right after it (ElizaOS), newest first.
    forward = (
        await client.get(url, params={"after": everything[10]["createdAt"], "limit": 2})
    ).json()
    assert forward["messages"] == everything[8:10]


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
        ({"before": "yesterday"}, "Invalid pagination parameter 'before': Must be a valid"),
        ({"after": "nan"}, "Invalid pagination parameter 'after'"),
        ({"after": "inf"}, "Invalid pagination parameter 'after'"),
        ({"before": "1" + "0" * 20}, "Invalid date from timestamp"),
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


@pytest.mark.parametrize(
    ("limit", "count"), [("0", 1), ("-5", 1), ("1000", 20), ("abc", 20), ("2.7", 2), ("", 20)]
)
async def test_history_limit_is_clamped_as_elizaos(
    client: httpx.AsyncClient, clock: ManualClock, limit: str, count: int
) -> None:
    session_id = (await create(client))["sessionId"]
    await send_many(client, session_id, 11, clock)
    page = await client.get(f"{API_PREFIX}/{session_id}/messages", params={"limit": limit})
    assert len(page.json()["messages"]) == count


@given(created=st.floats(min_value=1e9, max_value=4e9), millis=st.integers(10**12, 4 * 10**12))
@example(created=1204141639.9185028, millis=1204141639918)
@example(created=1850493496.7981212, millis=1850493496798)
def test_cursors_mean_the_same_in_seconds_and_milliseconds(created: float, millis: int) -> None:
    # A cursor is a whole millisecond, as the ISO createdAt shows it.
    assert (created < cursor_before(millis)) == (ms(created) < millis)
    assert (created > cursor_after(millis)) == (ms(created) > millis)
    assert (created < cursor_before(ms(created))) is False
    assert (created > cursor_after(ms(created))) is False


def test_cursors_are_the_tightest_bounds() -> None:
    generator = random.Random(7)
    for millis in [generator.randrange(10**12, 4 * 10**12) for _ in range(2000)]:
        assert cursor_before(millis) * 1000.0 >= millis
        assert math.nextafter(cursor_before(millis), -math.inf) * 1000.0 < millis
        assert ms(cursor_after(millis)) <= millis
        assert ms(math.nextafter(cursor_after(millis), math.inf)) > millis


# -- renew, heartbeat, delete, expiry --------------------------------------------------------------


async def test_renew_and_heartbeat(client: httpx.AsyncClient, clock: ManualClock) -> None:
    session_id = (await create(client, timeoutConfig={"autoRenew": False}))["sessionId"]
    clock.advance_by(20 * MINUTE)
    beat = await client.post(f"{API_PREFIX}/{session_id}/heartbeat")
    assert beat.status_code == 200
    assert beat.json()["lastActivity"] == iso(START + 20 * MINUTE)
    # Without auto-renew a heartbeat records activity but does not extend.
    assert beat.json()["expiresAt"] == iso(START + 30 * MINUTE)
    assert beat.json()["renewalCount"] == 0

    renewed = await client.post(f"{API_PREFIX}/{session_id}/renew")
    assert renewed.status_code == 200
    assert renewed.json()["expiresAt"] == iso(START + 50 * MINUTE)
    assert renewed.json()["renewalCount"] == 1
    assert renewed.json()["sessionId"] == session_id


async def test_renew_past_max_duration_is_410_then_404(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    timeout = {"timeoutMinutes": 10, "maxDurationMinutes": 15}
    session_id = (await create(client, timeoutConfig=timeout))["sessionId"]
    clock.advance_by(9 * MINUTE)
    renewed = (await client.post(f"{API_PREFIX}/{session_id}/renew")).json()
    assert renewed["expiresAt"] == iso(START + 15 * MINUTE)  # capped by the max duration
    clock.advance_by(6 * MINUTE)
    error = error_of(await client.post(f"{API_PREFIX}/{session_id}/renew"), 410)
    assert error["code"] == "SESSION_EXPIRED"
    error = error_of(await client.post(f"{API_PREFIX}/{session_id}/renew"), 404)
    assert error["code"] == "SESSION_NOT_FOUND"


def session_routes(session_id: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    one = f"{API_PREFIX}/{session_id}"
    return [
        ("GET", one, None),
        ("GET", f"{one}/messages", None),
        ("POST", f"{one}/messages", {"transport": "http", "content": "hi"}),
        ("POST", f"{one}/renew", None),
        ("POST", f"{one}/heartbeat", None),
    ]


async def test_expired_session_is_410_then_gone(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    clock.advance_by(0.0123)
    for method, url, body in session_routes("{}"):
        created = await create(client)
        session_id = created["sessionId"]
        clock.advance_by(30 * MINUTE)
        url = url.replace("{}", session_id)
        error = error_of(await client.request(method, url, json=body), 410)
        assert error["code"] == "SESSION_EXPIRED", (method, url)
        expired = created["expiresAt"]
        assert error["message"] == f"Session '{session_id}' expired at {expired}"
        # ElizaOS deletes a session it finds expired: 404 from then on.
        error = error_of(await client.get(f"{API_PREFIX}/{session_id}"), 404)
        assert error["code"] == "SESSION_NOT_FOUND"


@pytest.mark.parametrize("session_id", ["x" * 24, "not*an*id", "health2", "%E2%9C%93"])
async def test_unknown_session_is_404(client: httpx.AsyncClient, session_id: str) -> None:
    routes = [*session_routes(session_id), ("DELETE", f"{API_PREFIX}/{session_id}", None)]
    for method, url, body in routes:
        error = error_of(await client.request(method, url, json=body), 404)
        assert error["code"] == "SESSION_NOT_FOUND", (method, url)


async def test_delete_session(client: httpx.AsyncClient) -> None:
    session_id = (await create(client))["sessionId"]
    for content in ("a", "b"):
        await client.post(
            f"{API_PREFIX}/{session_id}/messages", json={"transport": "http", "content": content}
        )
    response = await client.delete(f"{API_PREFIX}/{session_id}")
    assert response.status_code == 200
    assert response.json() == {
        "success": True,
        "message": f"Session {session_id} deleted successfully",
    }
    error_of(await client.get(f"{API_PREFIX}/{session_id}/messages"), 404)
    error = error_of(await client.delete(f"{API_PREFIX}/{session_id}"), 404)
    assert error["message"] == f"Session with ID '{session_id}' not found"


# -- body size limits ------------------------------------------------------------------------------


JSON: Final = {"content-type": "application/json"}


def padded(size: int) -> bytes:
    """A valid create body of exactly *size* bytes."""
    head = BODY[:-1] + b', "metadata": {"pad": "'
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
        f"{API_PREFIX}/{session_id}/messages",
        json={"transport": "http", "content": "x" * SMALL_BODY_LIMIT},
    )
    assert error_of(response, 413)["code"] == "PAYLOAD_TOO_LARGE"


# -- health and metrics ----------------------------------------------------------------------------


async def test_health(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    body = response.json()
    # ElizaOS's shape; the store joins its dependencies.
    assert list(body) == ["status", "version", "timestamp", "dependencies", "agentCount"]
    assert body["status"] == "OK" and body["agentCount"] == 1
    assert body["dependencies"] == {"agents": "healthy", "store": "healthy"}
    assert body["timestamp"].endswith("Z")


async def test_elizaos_sessions_health(client: httpx.AsyncClient, clock: ManualClock) -> None:
    await create(client)
    await create(client, timeoutConfig={"timeoutMinutes": 2})
    body = (await client.get(f"{API_PREFIX}/health")).json()
    assert body["status"] == "healthy"
    assert body["activeSessions"] == 2 and body["expiringSoon"] == 1
    assert body["uptime"] >= 0 and body["timestamp"].endswith("Z")
    assert set(body) == {"status", "activeSessions", "timestamp", "expiringSoon", "uptime"}


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
        assert health.json()["dependencies"]["store"] == "unavailable: no answer within 0.05s"
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
            ("POST", API_PREFIX, {"agentId": AGENT, "userId": USER}),
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
        assert health.json()["status"] == "UNAVAILABLE"
        assert health.json()["dependencies"]["store"] == "unavailable: BackendUnavailableError"
        eliza = await client.get(f"{API_PREFIX}/health")
        assert eliza.status_code == 503 and eliza.json()["status"] == "unhealthy"


async def test_runtime_not_running_is_503() -> None:
    runtime = AgentRuntime(agent_id=AGENT, environ={})  # never initialised
    async with client_for(create_app(runtime)) as client:
        response = await client.post(API_PREFIX, json={"agentId": AGENT, "userId": USER})
        assert error_of(response, 503)["code"] == "SERVICE_UNAVAILABLE"
        health = await client.get("/health")
        assert health.status_code == 503
        assert health.json()["dependencies"]["store"] == "unavailable: RuntimeStateError"


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
                f"{API_PREFIX}/{session_id}/messages", json={"transport": "http", "content": "hi"}
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
                    f"{API_PREFIX}/{session_id}/messages",
                    json={"transport": "http", "content": "hi"},
                )
            error = error_of(response, 500)
            assert error["code"] == "INTERNAL_SERVER_ERROR"
            assert error["message"] == "an unexpected error occurred"
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
        API_PREFIX, json={"agentId": AGENT, "userId": USER, "metadata": deep}
    )
    assert error_of(refused, 400)["code"] == "VALIDATION_ERROR"
    sent = await client.post(
        f"{API_PREFIX}/{sid}/messages",
        json={"transport": "http", "content": "hi", "metadata": deep},
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
        f"{API_PREFIX}/{sid}/messages",
        json={"transport": "http", "content": "hi", "metadata": deep},
    )
    assert sent.status_code == 201, sent.text
    assert (await client.get(API_PREFIX)).status_code == 200
    assert (await client.get(f"{API_PREFIX}/{sid}/messages")).status_code == 200
