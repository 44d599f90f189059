"""``python -m runtime serve`` end to end: real server processes, real sockets.

Two servers of one agent share a backend (a SQLite file, or Redis under the
``redis`` marker): a session created on server 1 takes messages on server 2,
and server 2 keeps serving it after server 1 is stopped. Servers are started
on free loopback ports and always stopped in teardown.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from kvstore.testing.redis_server import free_port

ROOT = Path(__file__).resolve().parent.parent
API = "/api/messaging/sessions"
AGENT = "3f2b8c1d-5e6a-4b7c-8d9e-0f1a2b3c4d5e"
USER = "11111111-2222-4333-8444-555555555555"
STARTUP_TIMEOUT = 30.0
_ENV_VARIABLES = (
    "KV_STORE_BACKEND",
    "KV_STORE_PATH",
    "KV_STORE_TTL",
    "REDIS_URL",
    "AGENT_ID",
    "ELIZA_SERVER_AUTH_TOKEN",
)


class Server:
    """One ``python -m runtime serve`` process on a free port of 127.0.0.1."""

    def __init__(
        self,
        log: Path,
        env: Mapping[str, str],
        *args: str,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with log.open("wb") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "runtime", "serve", "--port", str(self.port), *args],
                stdout=output,
                stderr=subprocess.STDOUT,
                env={**base_env(), **env},
                cwd=log.parent,
                preexec_fn=preexec_fn,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_until_serving(self) -> httpx.Response:
        """Poll ``/health`` until the server answers (200 or 503)."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"server exited with {self.process.returncode}:\n{self.output()}")
            try:
                return httpx.get(f"{self.url}/health", timeout=5)
            except httpx.TransportError:
                time.sleep(0.1)
        pytest.fail(f"server did not answer within {STARTUP_TIMEOUT}s:\n{self.output()}")

    def stopped_gracefully(self) -> bool:
        """Exited after the lifespan's shutdown (which closes the runtime) completed.

        uvicorn re-raises the SIGTERM it handled, so the status is 0 or -SIGTERM.
        """
        return self.process.returncode in (0, -signal.SIGTERM) and (
            "Application shutdown complete" in self.output()
        )

    def stop(self) -> int:
        """SIGTERM (graceful), then SIGKILL if it lingers; returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _ENV_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["HTTP_RATE_LIMIT"] = "0"  # tests that check the limiter set their own
    return env


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[Server]]:
    """Servers the test starts; all are stopped at teardown, whatever happened."""
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()


def backend_env(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    if backend == "redis":
        url: str = request.getfixturevalue("redis_url")
        return {"KV_STORE_BACKEND": "redis", "REDIS_URL": url}
    return {"KV_STORE_BACKEND": "sqlite", "KV_STORE_PATH": str(tmp_path / "sessions.db")}


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def test_two_servers_share_sessions(
    backend: str, servers: list[Server], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    env = backend_env(backend, tmp_path, request)
    one = Server(tmp_path / "server1.log", env, "--agent-id", AGENT)
    servers.append(one)
    two = Server(tmp_path / "server2.log", {**env, "AGENT_ID": AGENT})
    servers.append(two)
    for server in (one, two):
        health = server.wait_until_serving()
        assert health.status_code == 200, health.text
        assert health.json()["status"] == "OK"
        metrics = httpx.get(f"{server.url}/metrics", timeout=10).json()
        assert metrics["backend"] == backend and metrics["agentId"] == AGENT

    with (
        httpx.Client(base_url=one.url, timeout=10) as first,
        httpx.Client(base_url=two.url, timeout=10) as second,
    ):
        created = first.post(API, json={"agentId": AGENT, "userId": USER})
        assert created.status_code == 201, created.text
        session_id = created.json()["sessionId"]

        sent = second.post(
            f"{API}/{session_id}/messages", json={"transport": "http", "content": "hello from 2"}
        )
        assert sent.status_code == 201, sent.text
        assert sent.json()["agentResponse"]["text"] == "Echo: hello from 2"
        assert len(first.get(f"{API}/{session_id}/messages").json()["messages"]) == 2

        one.stop()
        assert one.stopped_gracefully(), one.output()
        with pytest.raises(httpx.ConnectError):
            first.get("/health")

        history = second.get(f"{API}/{session_id}/messages").json()
        assert [m["content"] for m in history["messages"]] == ["Echo: hello from 2", "hello from 2"]
        again = second.post(
            f"{API}/{session_id}/messages", json={"transport": "http", "content": "still there?"}
        )
        assert again.status_code == 201, again.text

        pages: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 1}
        while True:
            page = second.get(f"{API}/{session_id}/messages", params=params).json()
            pages += page["messages"]
            if not page["hasMore"]:
                break
            params["before"] = page["cursors"]["before"]
        assert [m["content"] for m in pages] == [
            "Echo: still there?",
            "still there?",
            "Echo: hello from 2",
            "hello from 2",
        ]
        assert second.delete(f"{API}/{session_id}").json()["success"] is True
        assert second.get(f"{API}/{session_id}").status_code == 404


def test_server_starts_while_the_backend_is_down(servers: list[Server], tmp_path: Path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    server = Server(tmp_path / "server.log", {"KV_STORE_BACKEND": "redis", "REDIS_URL": dead})
    servers.append(server)
    health = server.wait_until_serving()
    assert health.status_code == 503
    assert health.json()["dependencies"]["store"].startswith("unavailable")
    body = {"agentId": "00000000-0000-4000-8000-000000000000", "userId": USER}
    created = httpx.post(f"{server.url}{API}", json=body, timeout=10)
    # Another agent's id: the agent check answers first; it needs no store.
    assert created.status_code == 404
    listed = httpx.get(f"{server.url}{API}", timeout=10)
    assert listed.status_code == 503 and listed.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert "unreachable" in server.output()
    server.stop()
    assert server.stopped_gracefully(), server.output()


def test_bad_configuration_stops_the_server(servers: list[Server], tmp_path: Path) -> None:
    server = Server(tmp_path / "server.log", {"KV_STORE_BACKEND": "cassandra"})
    servers.append(server)
    assert server.process.wait(timeout=STARTUP_TIMEOUT) != 0
    assert "KV_STORE_BACKEND='cassandra' is not supported" in server.output()
