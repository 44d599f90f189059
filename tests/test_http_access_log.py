"""The access log of ``serve`` shows route templates, never session ids (real server process)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
from test_http_e2e import API, Server, servers  # noqa: F401 - the fixture, reused

from runtime.http.access import logged_path

AGENT = "3f2b8c1d-5e6a-4b7c-8d9e-0f1a2b3c4d5e"
USER = "11111111-2222-4333-8444-555555555555"


def test_access_log_has_templates_not_ids(
    servers: list[Server],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    server = Server(
        tmp_path / "server.log",
        {"AGENT_ID": AGENT, "ELIZA_SERVER_AUTH_TOKEN": "k3y"},
        "--log-level",
        "info",
    )
    servers.append(server)
    assert server.wait_until_serving().status_code == 200
    key = {"X-API-KEY": "k3y"}
    with httpx.Client(base_url=server.url, timeout=10, headers=key) as client:
        created = client.post(API, json={"agentId": AGENT, "userId": USER})
        assert created.status_code == 201
        session_id = created.json()["sessionId"]
        sent = client.post(f"{API}/{session_id}/messages", json={"content": "hi"})
        assert sent.status_code == 201
        assert client.get(f"{API}/{session_id}/messages?limit=5").status_code == 200
        assert client.get(f"{API}/{session_id}").status_code == 200
        # Answered before routing (401) and by no route (404): no id either.
        assert httpx.get(f"{server.url}{API}/{session_id}", timeout=10).status_code == 401
        stray = uuid.uuid4()
        assert client.get(f"/api/nowhere/{stray}").status_code == 404
        assert client.delete(f"{API}/{session_id}").status_code == 200
    expected = [
        '"POST /api/messaging/sessions HTTP/1.1" 201',
        '"POST /api/messaging/sessions/{sessionId}/messages HTTP/1.1" 201',
        '"GET /api/messaging/sessions/{sessionId}/messages HTTP/1.1" 200',
        '"GET /api/messaging/sessions/{sessionId} HTTP/1.1" 200',
        '"GET /api/messaging/sessions/{sessionId} HTTP/1.1" 401',
        '"GET /api/nowhere/{id} HTTP/1.1" 404',
        '"DELETE /api/messaging/sessions/{sessionId} HTTP/1.1" 200',
    ]
    deadline = time.monotonic() + 30
    while not all(line in server.output() for line in expected) and time.monotonic() < deadline:
        time.sleep(0.1)
    log = server.output()
    for line in expected:
        assert line in log, log
    assert "runtime.http.access" in log
    assert session_id not in log and str(stray) not in log
    assert "limit=5" not in log


def test_logged_path_without_app() -> None:
    scope = {"type": "http", "path": "/x/0123456789abcdef0123/y/12345678/z"}
    assert logged_path(scope) == "/x/{id}/y/{id}/z"
