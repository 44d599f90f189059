"""ELIZA_SERVER_AUTH_TOKEN: every /api route needs X-API-KEY; preflights and /health don't."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from test_http_e2e import Server, servers  # noqa: F401 - the fixture, reused

from runtime import AgentRuntime
from runtime.http import create_app
from runtime.http.auth import api_key_matches

pytestmark = pytest.mark.anyio

TOKEN = "s3cret-token"
API = "/api/messaging/sessions"
UNAUTHORIZED = {"error": "API key required", "message": "Missing or invalid X-API-KEY header"}
AGENT = "6b1f0c3e-2d4a-4c8e-9f10-1a2b3c4d5e6f"
USER = "11111111-2222-4333-8444-555555555555"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with AgentRuntime(agent_id=AGENT, environ={}) as runtime:
        app = create_app(runtime, api_key=TOKEN, sweep=False)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http


def test_keys_are_compared_exactly() -> None:
    assert api_key_matches(TOKEN, TOKEN)
    assert api_key_matches(TOKEN, TOKEN.encode())
    for wrong in (None, "", TOKEN[:-1], TOKEN + "x", TOKEN.upper(), "\udcff"):
        assert not api_key_matches(TOKEN, wrong)


@pytest.mark.parametrize("api_key", ["", 0])
def test_an_empty_token_is_refused_at_once(api_key: object) -> None:
    with pytest.raises(ValueError, match="api_key"):
        create_app(AgentRuntime(agent_id=AGENT, environ={}), api_key=api_key)  # type: ignore[arg-type]


async def test_every_api_route_needs_the_key(client: httpx.AsyncClient) -> None:
    created = await client.post(
        API, json={"agentId": AGENT, "userId": USER}, headers={"X-API-KEY": TOKEN}
    )
    assert created.status_code == 201, created.text
    sid = created.json()["sessionId"]
    calls = [
        ("GET", API),
        ("POST", API),
        ("GET", f"{API}/{sid}"),
        ("DELETE", f"{API}/{sid}"),
        ("GET", f"{API}/{sid}/messages"),
        ("POST", f"{API}/{sid}/messages"),
        ("POST", f"{API}/{sid}/renew"),
        ("POST", f"{API}/{sid}/heartbeat"),
        ("GET", f"{API}/health"),
        ("GET", "/api/unknown"),
    ]
    for wrong in ({}, {"X-API-KEY": "nope"}, {"X-API-KEY": ""}, {"Authorization": TOKEN}):
        for method, path in calls:
            response = await client.request(method, path, headers=wrong, json={"content": "hi"})
            assert response.status_code == 401, (method, path, wrong)
            assert response.json() == UNAUTHORIZED
    # Nothing the refused calls tried happened: the session is there, without messages.
    headers = {"x-api-key": TOKEN}
    assert (await client.get(f"{API}/{sid}", headers=headers)).status_code == 200
    history = await client.get(f"{API}/{sid}/messages", headers=headers)
    assert history.status_code == 200
    assert history.json()["messages"] == []
    listed = await client.get(API, headers=headers)
    assert [s["sessionId"] for s in listed.json()["sessions"]] == [sid]


async def test_preflights_and_health_need_no_key(client: httpx.AsyncClient) -> None:
    preflight = await client.options(
        API,
        headers={"Origin": "http://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code != 401
    assert (await client.get("/health")).status_code == 200


def test_serve_reads_the_token_from_the_environment(
    servers: list[Server],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    server = Server(tmp_path / "auth.log", {"ELIZA_SERVER_AUTH_TOKEN": TOKEN}, "--agent-id", AGENT)
    servers.append(server)
    server.wait_until_serving()
    body = {"agentId": AGENT, "userId": USER}
    refused = httpx.post(f"{server.url}{API}", json=body, timeout=10)
    assert refused.status_code == 401 and refused.json() == UNAUTHORIZED
    wrong = httpx.get(f"{server.url}{API}", headers={"X-API-KEY": "guess"}, timeout=10)
    assert wrong.status_code == 401
    accepted = httpx.post(f"{server.url}{API}", json=body, headers={"X-API-KEY": TOKEN}, timeout=10)
    assert accepted.status_code == 201, accepted.text
