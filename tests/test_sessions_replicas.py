"""Sessions shared by replicas: real OS processes over one SQLite file or one Redis.

Each replica is ``sys.executable`` running a small script (written to the test's
tmp_path) that builds an ``AgentRuntime`` on ``kvstore.open_service(url)``.

- The seed's Test 4: replica 1 creates a session and answers a message, then is
  killed (SIGKILL, as when a pod is scaled down); replica 2 keeps chatting in
  the same session, sees replica 1's message and cached state, loses nothing.
- Two processes send 200 messages each to one session at the same time (each
  waits halfway for the other, so they overlap whatever the OS schedules): all
  800 messages are stored with strictly increasing timestamps and an exact count.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import kvstore
from runtime.messages import Message
from runtime.sessions import SessionManager

REPLICA = """
import asyncio, json, sys

import kvstore
from runtime.agent import AgentRuntime


def send(data):
    print(json.dumps(data), flush=True)


async def main(url, name, command, *args):
    async def provider(runtime, message):
        return {"composed_by": name, "content": message.content}

    service = kvstore.open_service(url)
    runtime = AgentRuntime(agent_id="agent-replicas", providers=[provider], environ={})
    runtime.register_service(service)
    try:
        async with runtime:
            sessions = runtime.sessions
            if command == "create":
                session = await sessions.create(user_id=args[0])
                exchange = await sessions.exchange(session.id, f"hello from {name}")
                send({"session_id": session.id, "user_message_id": exchange.user.id})
                sys.stdin.readline()  # serve until stopped
            elif command == "chat":
                session_id, count = args[0], int(args[1])
                send("ready")
                sys.stdin.readline()  # wait for "go": the replicas start together
                for i in range(count):
                    if i == count // 2:
                        # Halfway, wait for the other replica's first half (each
                        # message is stored with its reply: 2 records), so the two
                        # really run side by side however the OS schedules them.
                        while (await sessions.get(session_id)).message_count < 2 * count:
                            await asyncio.sleep(0.01)
                    await sessions.send_message(session_id, f"{name}-{i}")
                send("done")
            elif command == "takeover":
                session_id, first_user_message_id = args
                for i in range(3):
                    await sessions.send_message(session_id, f"{name}-{i}")
                send("sent")
                sys.stdin.readline()  # meanwhile the other replica is killed
                for i in range(3, 6):
                    await sessions.send_message(session_id, f"{name}-{i}")
                history, before = [], None
                while page := await sessions.messages(session_id, limit=5, before=before):
                    history.extend(message.to_dict() for message in page)
                    before = page[-1].created_at
                session = await sessions.get(session_id)
                send({
                    "history": history,
                    "message_count": session.message_count,
                    "cached_state": await runtime.state_cache.get(first_user_message_id),
                })
    finally:
        await service.aclose()


asyncio.run(main(*sys.argv[1:]))
"""


class Replica:
    """One replica process, talking JSON lines on stdout."""

    def __init__(self, script: Path, url: str, name: str, *args: str) -> None:
        project_root = Path(kvstore.__file__).resolve().parents[1]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(project_root), *sys.path])}
        self.name = name
        self.process = subprocess.Popen(
            [sys.executable, str(script), url, name, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )

    def receive(self) -> Any:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            _, stderr = self.process.communicate(timeout=30)
            pytest.fail(f"replica {self.name} exited early:\n{stderr.decode(errors='replace')}")
        return json.loads(line)

    def tell(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def finish(self, timeout: float = 120) -> None:
        _, stderr = self.process.communicate(timeout=timeout)
        assert self.process.returncode == 0, stderr.decode(errors="replace")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate()


@pytest.fixture
def replica_script(tmp_path: Path) -> Path:
    script = tmp_path / "replica.py"
    script.write_text(REPLICA)
    return script


@pytest.fixture
def replicas() -> Iterator[list[Replica]]:
    started: list[Replica] = []
    yield started
    for replica in started:  # never leave a process behind, whatever failed
        replica.kill()


def test_session_survives_the_replica_that_created_it(
    replica_script: Path, backend_url: str, replicas: list[Replica]
) -> None:
    first = Replica(replica_script, backend_url, "r1", "create", "user-1")
    replicas.append(first)
    created = first.receive()
    session_id = created["session_id"]

    second = Replica(
        replica_script, backend_url, "r2", "takeover", session_id, created["user_message_id"]
    )
    replicas.append(second)
    assert second.receive() == "sent"  # while replica 1 still runs
    first.kill()  # scale down replica 1 (SIGKILL: no goodbye)
    assert first.process.returncode != 0
    second.tell("continue")
    result = second.receive()
    second.finish()

    history = [Message.from_dict(data) for data in result["history"]]
    assert result["message_count"] == len(history) == 14
    oldest_first = list(reversed(history))
    assert [m.content for m in oldest_first if m.role == "user"] == [
        "hello from r1",
        *(f"r2-{i}" for i in range(6)),
    ]
    assert all(m.role == "agent" for m in oldest_first[1::2])
    assert oldest_first[1].content == "Echo: hello from r1"
    stamps = [m.created_at for m in oldest_first]
    assert all(a < b for a, b in itertools.pairwise(stamps))
    # The state replica 1 composed is in the shared cache, read by replica 2.
    assert result["cached_state"] == {"composed_by": "r1", "content": "hello from r1"}


MESSAGES_PER_PROCESS = 200


def test_two_processes_chat_in_one_session_concurrently(
    replica_script: Path, backend_url: str, replicas: list[Replica]
) -> None:
    async def create() -> str:
        async with kvstore.open_service(backend_url) as service:
            manager = SessionManager(_Host(service))
            return (await manager.create(user_id="user-1")).id

    session_id = anyio.run(create)
    for name in ("A", "B"):
        replicas.append(
            Replica(
                replica_script, backend_url, name, "chat", session_id, str(MESSAGES_PER_PROCESS)
            )
        )
    for replica in replicas:
        assert replica.receive() == "ready"
    for replica in replicas:
        replica.tell("go")
    for replica in replicas:
        assert replica.receive() == "done"
        replica.finish()

    async def read_back() -> tuple[int, list[Message]]:
        async with kvstore.open_service(backend_url) as service:
            manager = SessionManager(_Host(service))
            history: list[Message] = []
            before: float | None = None
            while page := await manager.messages(session_id, limit=100, before=before):
                history.extend(page)
                before = page[-1].created_at
            return (await manager.get(session_id)).message_count, history

    count, history = anyio.run(read_back)
    total = 2 * 2 * MESSAGES_PER_PROCESS
    assert count == total
    assert len(history) == total
    oldest_first = list(reversed(history))
    stamps = [m.created_at for m in oldest_first]
    assert all(a < b for a, b in itertools.pairwise(stamps))
    users = [m for m in oldest_first if m.role == "user"]
    replies = [m for m in oldest_first if m.role == "agent"]
    assert sorted(m.content for m in users) == sorted(
        f"{name}-{i}" for name in "AB" for i in range(MESSAGES_PER_PROCESS)
    )
    for name in "AB":  # each process's messages in its own order
        mine = [m.content for m in users if m.content.startswith(f"{name}-")]
        assert mine == [f"{name}-{i}" for i in range(MESSAGES_PER_PROCESS)]
    by_id = {m.id: m for m in users}
    assert len(replies) == total // 2
    for reply in replies:
        question = by_id[reply.metadata["in_reply_to"]]
        assert reply.content == f"Echo: {question.content}"
        assert reply.created_at > question.created_at
    # Both processes really interleaved: each waited halfway for the other's
    # first half, so the owners change at least twice (A B A, or A B B A).
    owners = [m.content[0] for m in users]
    assert sum(a != b for a, b in itertools.pairwise(owners)) > 1


class _Host:
    """The part of a runtime a SessionManager needs, for the test process itself."""

    agent_id = "agent-replicas"

    def __init__(self, service: kvstore.KVStoreService) -> None:
        self.kv_service = service

    async def compose_state(self, message: Message) -> dict[str, Any]:
        return {}

    async def generate_reply(self, message: Message, state: dict[str, Any]) -> str:
        return ""
