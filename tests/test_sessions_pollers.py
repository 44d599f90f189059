"""Pollers never miss, with real processes: two OS processes of 16 senders each write to one
session on one SQLite file or one Redis, while a third process walks
``messages(after=cursor)`` page by page. The poller must see every message exactly once.

The first release lost 20-131 of 1,920 messages this way on SQLite: a seq allocated by
one process but not yet written was skipped while later seqs already were.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import anyio
import pytest
from test_sessions_replicas import Replica

import kvstore
from runtime.messages import Message
from runtime.sessions import SessionManager

pytestmark = pytest.mark.slow

SENDERS: Final = 16
PER_SENDER: Final = 8
TOTAL: Final = 2 * SENDERS * PER_SENDER * 2  # two processes, user message + reply

WORKER = """
import asyncio, json, sys

import anyio
import kvstore
from runtime.agent import AgentRuntime


async def main(url, command, session_id, *args):
    service = kvstore.open_service(url)
    runtime = AgentRuntime(agent_id="agent-pollers", environ={})
    runtime.register_service(service)
    async with runtime:
        sessions = runtime.sessions
        if command == "send":
            name, senders, count = args[0], int(args[1]), int(args[2])
            print(json.dumps("ready"), flush=True)
            sys.stdin.readline()

            async def sender(i):
                for j in range(count):
                    await sessions.send_message(session_id, f"{name}-{i}-{j}")

            async with anyio.create_task_group() as group:
                for i in range(senders):
                    group.start_soon(sender, i)
            print(json.dumps("done"), flush=True)
        else:
            total, cursor, seen = int(args[0]), float(args[1]), []
            print(json.dumps("ready"), flush=True)
            with anyio.fail_after(120):
                while len(seen) < total:
                    page = await sessions.messages(session_id, after=cursor, limit=7)
                    if not page:
                        await anyio.sleep(0.005)
                        continue
                    seen.extend(m.id for m in reversed(page))
                    cursor = page[0].created_at
            print(json.dumps(seen), flush=True)
    await service.aclose()


asyncio.run(main(*sys.argv[1:]))
"""


@pytest.fixture
def workers() -> Iterator[list[Replica]]:
    started: list[Replica] = []
    yield started
    for worker in started:
        worker.kill()


class _Host:
    agent_id = "agent-pollers"

    def __init__(self, service: kvstore.KVStoreService) -> None:
        self.kv_service = service

    async def compose_state(self, message: Message) -> dict[str, Any]:
        return {}

    async def generate_reply(self, message: Message, state: dict[str, Any]) -> str:
        return "unused"


def test_a_poller_in_a_third_process_sees_every_message_exactly_once(
    tmp_path: Path, backend_url: str, workers: list[Replica]
) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)

    async def create() -> tuple[str, float]:
        async with kvstore.open_service(backend_url) as service:
            session = await SessionManager(_Host(service)).create(user_id="u")
            return session.id, session.created_at

    session_id, created_at = anyio.run(create)
    poller = Replica(script, backend_url, "poll", session_id, str(TOTAL), repr(created_at))
    workers.append(poller)
    senders = [
        Replica(script, backend_url, "send", session_id, name, str(SENDERS), str(PER_SENDER))
        for name in "AB"
    ]
    workers.extend(senders)
    for worker in workers:
        assert worker.receive() == "ready"
    for sender in senders:
        sender.tell("go")
    for sender in senders:
        assert sender.receive() == "done"
    seen = poller.receive()

    async def history() -> tuple[list[str], int]:
        async with kvstore.open_service(backend_url) as service:
            manager = SessionManager(_Host(service))
            stored: list[str] = []
            before: float | None = None
            while page := await manager.messages(session_id, limit=100, before=before):
                stored.extend(m.id for m in page)
                before = page[-1].created_at
            return stored[::-1], (await manager.get(session_id)).message_count

    stored, count = anyio.run(history)
    assert count == len(stored) == TOTAL
    missed = set(stored) - set(seen)
    assert (len(missed), len(seen) - len(set(seen))) == (0, 0)
    assert seen == stored  # in order, too
