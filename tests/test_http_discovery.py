"""Discovery routes, the default agent id, and ``SESSION_*`` settings, as ElizaOS has them.

The answers are compared with the real ElizaOS 1.7.2 server's recorded ones
(``/work/notes/eliza-reference.md`` §4): shapes, codes and messages.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from kvstore import ConfigError
from runtime import AgentRuntime
from runtime.__main__ import main
from runtime.http import API_PREFIX, create_app
from runtime.http.agents import DEFAULT_AGENT_ID, DEFAULT_AGENT_NAME
from runtime.http.limits import SessionLimits

pytestmark = pytest.mark.anyio

AGENT = "b850bc30-45f8-4041-a00a-83df46d8555d"
USER = "11111111-2222-4333-8444-555555555555"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    limits = SessionLimits(min_timeout=0.5, max_timeout=60)
    async with AgentRuntime(agent_id=AGENT, environ={}) as runtime:
        app = create_app(runtime, session_limits=limits)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http


async def test_list_and_get_agent(client: httpx.AsyncClient) -> None:
    listed = (await client.get("/api/agents")).json()
    assert listed["success"] is True
    [agent] = listed["data"]["agents"]
    assert set(agent) == {"id", "name", "characterName", "bio", "status"}
    assert agent["id"] == AGENT and agent["status"] == "active"
    one = (await client.get(f"/api/agents/{AGENT}")).json()
    assert one["success"] is True and one["data"]["id"] == AGENT
    # Never the settings or secrets ElizaOS lists (redacted) under "settings".
    assert "settings" not in one["data"] and "secrets" not in str(one)


async def test_get_agent_errors(client: httpx.AsyncClient) -> None:
    unknown = await client.get(f"/api/agents/{uuid.uuid4()}")
    assert unknown.status_code == 404
    assert unknown.json() == {
        "success": False,
        "error": {"code": "NOT_FOUND", "message": "Agent not found"},
    }
    bad = await client.get("/api/agents/not-a-uuid")
    assert bad.status_code == 400
    assert bad.json()["error"] == {"code": "INVALID_ID", "message": "Invalid agent ID format"}


async def test_ping(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/server/ping")).json()
    assert body["pong"] is True and isinstance(body["timestamp"], int)


async def test_limits_clamp_http_timeouts(client: httpx.AsyncClient) -> None:
    sent = {"timeoutMinutes": 0.1, "maxDurationMinutes": 999}
    body = {"agentId": AGENT, "userId": USER, "timeoutConfig": sent}
    config = (await client.post(API_PREFIX, json=body)).json()["timeoutConfig"]
    assert config["timeoutMinutes"] == 0.5 and config["maxDurationMinutes"] == 120


def test_default_agent_id_is_documented_and_stable() -> None:
    assert DEFAULT_AGENT_ID == str(uuid.uuid5(uuid.NAMESPACE_URL, DEFAULT_AGENT_NAME))
    assert uuid.UUID(DEFAULT_AGENT_ID).version == 5


def test_limits_from_env_clamp_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    assert SessionLimits.from_env({}) == SessionLimits()
    with caplog.at_level(logging.WARNING, logger="runtime.http.limits"):
        limits = SessionLimits.from_env(
            {
                "SESSION_MAX_TIMEOUT_MINUTES": "30",
                "SESSION_MIN_TIMEOUT_MINUTES": "0.05",
                "SESSION_WARNING_THRESHOLD_MINUTES": "0",
                "SESSION_DEFAULT_TIMEOUT_MINUTES": " ",
            }
        )
    assert limits.max_timeout == 60 and limits.warning_threshold == 1
    assert limits.min_timeout == 0.05 and limits.default_timeout == 30
    assert any("SESSION_MAX_TIMEOUT_MINUTES" in r.getMessage() for r in caplog.records)
    with pytest.raises(ConfigError, match="SESSION_MAX_DURATION_MINUTES"):
        SessionLimits.from_env({"SESSION_MAX_DURATION_MINUTES": "ten"})


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"AGENT_ID": "agent-1"}, "the agent id must be a UUID"),
        ({"SESSION_MIN_TIMEOUT_MINUTES": "soon"}, "SESSION_MIN_TIMEOUT_MINUTES must be a number"),
    ],
)
def test_serve_refuses_bad_settings_with_one_line(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    fragment: str,
) -> None:
    for name in ("KV_STORE_BACKEND", "REDIS_URL", "KV_STORE_PATH", "AGENT_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1
