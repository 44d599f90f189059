"""The reply worker of the ``sse`` and ``websocket`` transports, in process.

Handlers wait on anyio events the test sets, so what runs when is decided by
the test, never by time.
"""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest

from runtime import AgentRuntime, Message
from runtime.http import API_PREFIX, create_app
from runtime.http.context import ServedAgent
from runtime.http.replies import ReplyWorker

pytestmark = pytest.mark.anyio

AGENT = "b850bc30-45f8-4041-a00a-83df46d8555d"
USER = "11111111-2222-4333-8444-555555555555"


class Recorder:
    """A reply sink keeping what it heard; ``finished`` is set by done or failed."""

    def __init__(self) -> None:
        self.heard: list[tuple[str, Any]] = []
        self.finished = anyio.Event()

    async def chunk(self, message_id: str, piece: str, index: int) -> None:
        self.heard.append(("chunk", piece))

    async def done(self, reply: Message) -> None:
        self.heard.append(("done", reply.content))
        self.finished.set()

    async def failed(self, message_id: str, error: str, partial_text: str) -> None:
        self.heard.append(("failed", error))
        self.finished.set()


async def test_at_most_concurrency_replies_are_made_at_once() -> None:
    entered: list[str] = []
    two_in = anyio.Event()
    release = anyio.Event()

    async def handler(runtime: Any, message: Message, state: dict[str, Any]) -> str:
        entered.append(message.content)
        if len(entered) == 2:
            two_in.set()
        await release.wait()
        return f"Echo: {message.content}"

    async with AgentRuntime(agent_id=AGENT, handler=handler, environ={}) as runtime:
        worker = ReplyWorker(ServedAgent(runtime), concurrency=2)
        session = await runtime.sessions.create(user_id=USER)
        sinks = [Recorder() for _ in range(3)]
        async with worker.running():
            for i, sink in enumerate(sinks):
                user = await runtime.sessions.open_exchange(session.id, f"m{i}")
                worker.start(user, session, sink)
            await two_in.wait()
            # Two hold the limiter's tokens; the third waits for one of them.
            await anyio.wait_all_tasks_blocked()
            assert len(entered) == 2
            release.set()
            for sink in sinks:
                await sink.finished.wait()
        assert sorted(entered) == ["m0", "m1", "m2"]
        history = await runtime.sessions.messages(session.id)
        assert len(history) == 6
        assert all(m.role == "agent" for m in history if m.content.startswith("Echo: "))


async def test_shutdown_waits_then_cancels_and_stores_error_markers() -> None:
    started = anyio.Event()

    async def stuck(runtime: Any, message: Message, state: dict[str, Any]) -> str:
        started.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async with AgentRuntime(agent_id=AGENT, handler=stuck, environ={}) as runtime:
        worker = ReplyWorker(ServedAgent(runtime), drain_timeout=0.2)
        session = await runtime.sessions.create(user_id=USER)
        sink = Recorder()
        async with worker.running():
            user = await runtime.sessions.open_exchange(session.id, "never answered")
            worker.start(user, session, sink)
            await started.wait()
        assert not worker.accepting
        assert sink.heard == [("failed", "the server stopped before the reply was made")]
        newest = (await runtime.sessions.messages(session.id))[0]
        assert newest.role == "agent" and newest.metadata["error"] is True
        assert newest.content == "the server stopped before the reply was made"


async def test_websocket_with_an_idempotency_key_makes_the_reply_first() -> None:
    runtime = AgentRuntime(agent_id=AGENT, environ={})
    app = create_app(runtime, sweep=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http,
    ):
        created = await http.post(API_PREFIX, json={"agentId": AGENT, "userId": USER})
        sid = created.json()["sessionId"]
        url = f"{API_PREFIX}/{sid}/messages"
        first = await http.post(url, json={"content": "once"}, headers={"Idempotency-Key": "k"})
        again = await http.post(url, json={"content": "once"}, headers={"Idempotency-Key": "k"})
        assert first.status_code == again.status_code == 201
        assert list(first.json()) == ["success", "userMessage", "sessionStatus"]
        assert first.json()["userMessage"]["id"] == again.json()["userMessage"]["id"]
        page = (await http.get(url)).json()["messages"]
        assert [m["content"] for m in page] == ["Echo: once", "once"]
