"""The ``sse`` transport in process, read with a real SSE parser (httpx-sse).

The app's lifespan runs (it owns the reply worker); each test serves a runtime
with the handler it needs: a plain one, one streaming pieces, one failing.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from httpx_sse import ServerSentEvent, aconnect_sse
from realtime_handlers import broken, pieces

from runtime import AgentRuntime
from runtime.http import API_PREFIX, create_app
from runtime.http.replies import REPLY_FAILED

pytestmark = pytest.mark.anyio

AGENT = "b850bc30-45f8-4041-a00a-83df46d8555d"
USER = "11111111-2222-4333-8444-555555555555"


@asynccontextmanager
async def serving(handler: Callable[..., Any] | None = None) -> AsyncIterator[httpx.AsyncClient]:
    runtime = AgentRuntime(agent_id=AGENT, handler=handler, environ={})
    app = create_app(runtime, sweep=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http,
    ):
        yield http


async def session(http: httpx.AsyncClient) -> str:
    created = await http.post(API_PREFIX, json={"agentId": AGENT, "userId": USER})
    assert created.status_code == 201
    sid: str = created.json()["sessionId"]
    return sid


async def stream(
    http: httpx.AsyncClient, sid: str, body: dict[str, Any], **headers: str
) -> tuple[httpx.Response, list[ServerSentEvent]]:
    async with aconnect_sse(
        http, "POST", f"{API_PREFIX}/{sid}/messages", json=body, headers=headers
    ) as source:
        events = [event async for event in source.aiter_sse()]
        return source.response, events


async def history(http: httpx.AsyncClient, sid: str) -> list[dict[str, Any]]:
    page = await http.get(f"{API_PREFIX}/{sid}/messages")
    messages: list[dict[str, Any]] = page.json()["messages"]
    return messages[::-1]  # oldest first


async def test_a_plain_handler_gives_one_chunk_then_done() -> None:
    async with serving() as http:
        sid = await session(http)
        response, events = await stream(http, sid, {"content": "hello", "transport": "sse"})
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["cache-control"] == "no-cache"
        assert [e.event for e in events] == ["user_message", "chunk", "done"]
        user, chunk, done = (json.loads(e.data) for e in events)
        assert user["content"] == "hello" and user["author_id"] == USER
        assert chunk == {"messageId": done["responseId"], "chunk": "Echo: hello", "index": 0}
        assert done["text"] == "Echo: hello" and done["inReplyTo"] == user["id"]
        assert set(done) == {
            "thought",
            "actions",
            "providers",
            "text",
            "simple",
            "responseId",
            "inReplyTo",
        }
        stored = await history(http, sid)
        assert [(m["id"], m["content"]) for m in stored] == [
            (user["id"], "hello"),
            (done["responseId"], "Echo: hello"),
        ]


async def test_a_streaming_handler_gives_a_chunk_per_piece() -> None:
    async with serving(pieces) as http:
        sid = await session(http)
        # The legacy name of the sse transport.
        _, events = await stream(http, sid, {"content": "hi", "mode": "stream"})
        assert [e.event for e in events] == ["user_message", "chunk", "chunk", "chunk", "done"]
        chunks = [json.loads(e.data) for e in events[1:4]]
        assert [c["chunk"] for c in chunks] == ["Echo", ": ", "hi"]
        assert [c["index"] for c in chunks] == [0, 1, 2]
        done = json.loads(events[-1].data)
        assert done["text"] == "Echo: hi"
        assert {c["messageId"] for c in chunks} == {done["responseId"]}
        assert [m["content"] for m in await history(http, sid)] == ["hi", "Echo: hi"]
        # http gets the concatenation of a streaming handler's pieces.
        sent = await http.post(
            f"{API_PREFIX}/{sid}/messages", json={"content": "again", "transport": "http"}
        )
        assert sent.json()["agentResponse"]["text"] == "Echo: again"


async def test_a_failing_handler_gives_error_and_stores_a_marker() -> None:
    async with serving(broken) as http:
        sid = await session(http)
        _, events = await stream(http, sid, {"content": "hello", "transport": "sse"})
        assert [e.event for e in events] == ["user_message", "error"]
        # The handler's own message (it names a host) stays in the log.
        assert json.loads(events[1].data) == {"error": REPLY_FAILED}
        stored = await history(http, sid)
        assert [(m["content"], m["isAgent"]) for m in stored] == [
            ("hello", False),
            (REPLY_FAILED, True),
        ]
        assert stored[1]["metadata"]["error"] is True
        got = await http.get(f"{API_PREFIX}/{sid}")
        assert got.status_code == 200


async def test_an_idempotent_retry_replays_the_first_reply() -> None:
    async with serving() as http:
        sid = await session(http)
        body = {"content": "once", "transport": "sse"}
        _, first = await stream(http, sid, body, **{"Idempotency-Key": "k1"})
        _, again = await stream(http, sid, body, **{"Idempotency-Key": "k1"})
        assert (
            [e.event for e in first]
            == [e.event for e in again]
            == [
                "user_message",
                "chunk",
                "done",
            ]
        )
        assert [e.data for e in first] == [e.data for e in again]
        assert [m["content"] for m in await history(http, sid)] == ["once", "Echo: once"]


async def test_without_the_lifespan_sse_and_websocket_answer_503_and_store_nothing() -> None:
    async with AgentRuntime(agent_id=AGENT, environ={}) as runtime:
        app = create_app(runtime)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            sid = await session(http)
            for body in ({"content": "a", "transport": "sse"}, {"content": "b"}):
                sent = await http.post(f"{API_PREFIX}/{sid}/messages", json=body)
                assert sent.status_code == 503
                assert sent.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
            assert await history(http, sid) == []
            polled = await http.get("/socket.io/?EIO=4&transport=polling")
            assert polled.status_code == 503
