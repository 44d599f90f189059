"""Two replicas of one agent, in two processes, sharing sessions through the store.

The script starts two copies of itself with ``--replica`` (each one an
``AgentRuntime`` configured from the environment, as ``python -m runtime
serve`` is), then drives them over their stdin/stdout:

1. replica 1 creates a session;
2. replica 2 sends a message in it: it sees the session replica 1 created;
3. replica 1 is killed (SIGKILL, as when a pod is scaled down);
4. replica 2 still serves the whole history and new messages.

With ``REDIS_URL`` set the replicas share that Redis (``KV_STORE_BACKEND=redis``);
otherwise they share a temporary SQLite file (``KV_STORE_BACKEND=sqlite``). The
session is ended at the end; in Redis only cached states remain, until their TTL.

Run it: ``python examples/replicas.py`` (a few seconds).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from runtime import AgentRuntime, Message

AGENT_ID = "replicas-example"


# -- a replica: one runtime answering JSON commands, one per line ----------------------------


def _message(message: Message) -> dict[str, Any]:
    return {"role": message.role, "content": message.content, "created_at": message.created_at}


async def serve_replica() -> None:
    """Answer the commands read from stdin until EOF (or until killed)."""
    async with AgentRuntime(agent_id=AGENT_ID) as runtime:
        sessions = runtime.sessions
        _send({"ready": True, "pid": os.getpid()})
        while line := await anyio.to_thread.run_sync(sys.stdin.readline):
            command = json.loads(line)
            op = command["op"]
            if op == "create":
                session = await sessions.create(user_id=command["user_id"])
                _send({"session_id": session.id})
            elif op == "send":
                reply = await sessions.send_message(command["session_id"], command["content"])
                _send({"reply": reply.content})
            elif op == "history":
                page = await sessions.messages(command["session_id"], limit=100)
                _send({"messages": [_message(m) for m in reversed(page)]})
            elif op == "end":
                _send({"ended": await sessions.end(command["session_id"])})


def _send(data: dict[str, Any]) -> None:
    print(json.dumps(data), flush=True)


# -- the driver -------------------------------------------------------------------------------


class Replica:
    """A replica process and the pipe to talk to it."""

    def __init__(self, name: str, env: dict[str, str]) -> None:
        self.name = name
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--replica"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        if self.process.stdin is None or self.process.stdout is None:
            raise RuntimeError(f"{name}: no pipes to the process")
        self._stdin = self.process.stdin
        self._stdout = self.process.stdout
        self.pid = self._read()["pid"]

    def ask(self, **command: Any) -> dict[str, Any]:
        """Send one command and wait for its answer."""
        self._stdin.write(json.dumps(command) + "\n")
        self._stdin.flush()
        return self._read()

    def _read(self) -> dict[str, Any]:
        line = self._stdout.readline()
        if not line:
            code = self.process.wait()
            raise RuntimeError(f"{self.name} exited with status {code} (see its stderr above)")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def kill(self) -> None:
        """Stop the process abruptly: no shutdown code runs."""
        self.process.kill()
        self.process.wait()

    def close(self) -> None:
        """Let the process finish (EOF on stdin), or kill it if it does not."""
        if self.process.poll() is None:
            self._stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self._stdin.close()
        self._stdout.close()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="replicas-example-") as tmp:
        env = dict(os.environ)
        redis_url = env.get("REDIS_URL", "").strip()
        if redis_url:
            env["KV_STORE_BACKEND"] = "redis"
            print("backend    -> redis (REDIS_URL)")
        else:
            env["KV_STORE_BACKEND"] = "sqlite"
            env["KV_STORE_PATH"] = str(Path(tmp) / "sessions.db")
            print("backend    -> sqlite (a temporary file)")

        replicas: list[Replica] = []
        try:
            one = Replica("replica 1", env)
            replicas.append(one)
            two = Replica("replica 2", env)
            replicas.append(two)
            print(f"started    -> replica 1 (pid {one.pid}), replica 2 (pid {two.pid})")

            session_id = one.ask(op="create", user_id="ada")["session_id"]
            print(f"replica 1  -> created session {session_id[:8]}…")

            answer = two.ask(op="send", session_id=session_id, content="hello from replica 2")
            print(f"replica 2  -> sent 'hello from replica 2', reply {answer['reply']!r}")

            answer = one.ask(op="send", session_id=session_id, content="and from replica 1")
            print(f"replica 1  -> sent 'and from replica 1', reply {answer['reply']!r}")

            one.kill()
            print("replica 1  -> killed (SIGKILL)")

            answer = two.ask(op="send", session_id=session_id, content="still there?")
            print(f"replica 2  -> sent 'still there?', reply {answer['reply']!r}")

            history = two.ask(op="history", session_id=session_id)["messages"]
            print(f"replica 2  -> history has {len(history)} messages, oldest first:")
            for message in history:
                print(f"              {message['role']:>5}: {message['content']}")

            ended = two.ask(op="end", session_id=session_id)["ended"]
            print(f"replica 2  -> ended the session: {ended}")
        finally:
            for replica in replicas:
                replica.close()
        print("done       -> nothing was lost when replica 1 died")


if __name__ == "__main__":
    if sys.argv[1:] == ["--replica"]:
        anyio.run(serve_replica)
    else:
        main()
