"""``GET /api/messaging/sessions`` pages: ``limit``/``offset``, at most 1,000, full ``total``."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from kvstore.testing import ManualClock
from runtime import AgentRuntime, SessionManager
from runtime.http import API_PREFIX, create_app
from runtime.http.sessions import MAX_LIST_PAGE

pytestmark = pytest.mark.anyio

AGENT = "b850bc30-45f8-4041-a00a-83df46d8555d"


@pytest.fixture
async def client() -> AsyncIterator[tuple[httpx.AsyncClient, SessionManager, ManualClock]]:
    clock = ManualClock(1_700_000_000.0)
    async with AgentRuntime(agent_id=AGENT, environ={}) as runtime:
        manager = SessionManager(runtime, clock=clock)
        app = create_app(runtime, sessions=manager)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http, manager, clock


async def test_pages(client: tuple[httpx.AsyncClient, SessionManager, ManualClock]) -> None:
    http, manager, clock = client
    ids = []
    for _ in range(7):
        ids.append((await manager.create(agent_id=AGENT, user_id=str(uuid.uuid4()))).id)
        clock.advance_by(1)
    newest_first = ids[::-1]
    whole = (await http.get(API_PREFIX)).json()
    assert [s["sessionId"] for s in whole["sessions"]] == newest_first
    assert whole["total"] == 7 and whole["stats"]["totalSessions"] == 7
    seen = []
    for offset in range(0, 7, 3):
        page = (await http.get(API_PREFIX, params={"limit": 3, "offset": offset})).json()
        assert page["total"] == 7
        assert set(page) == {"sessions", "total", "stats"}
        seen += [s["sessionId"] for s in page["sessions"]]
    assert seen == newest_first
    count = (await http.get(API_PREFIX, params={"limit": 0})).json()
    assert count["sessions"] == [] and count["total"] == 7
    beyond = (await http.get(API_PREFIX, params={"offset": 100})).json()
    assert beyond["sessions"] == [] and beyond["total"] == 7


@pytest.mark.parametrize(
    ("name", "value"),
    [("limit", "-1"), ("limit", "1001"), ("limit", "ten"), ("limit", "1.5"), ("offset", "-3")],
)
async def test_bad_values(
    client: tuple[httpx.AsyncClient, SessionManager, ManualClock], name: str, value: str
) -> None:
    http, _, _ = client
    answer = await http.get(API_PREFIX, params={name: value})
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "VALIDATION_ERROR" and name in error["message"]


async def test_default_page_is_capped(
    client: tuple[httpx.AsyncClient, SessionManager, ManualClock],
) -> None:
    http, manager, _ = client
    for _ in range(MAX_LIST_PAGE + 5):
        await manager.create(agent_id=AGENT, user_id=str(uuid.uuid4()))
    body = (await http.get(API_PREFIX)).json()
    assert len(body["sessions"]) == MAX_LIST_PAGE
    assert body["total"] == MAX_LIST_PAGE + 5
    rest = (await http.get(API_PREFIX, params={"offset": MAX_LIST_PAGE})).json()
    assert len(rest["sessions"]) == 5
