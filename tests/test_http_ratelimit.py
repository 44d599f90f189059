"""HTTP_RATE_LIMIT: a per-client budget on /api, shared by replicas through the store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from test_http_e2e import Server, servers  # noqa: F401 - the fixture, reused

from kvstore.testing import ManualClock
from runtime import AgentRuntime
from runtime.http import create_app
from runtime.http.ratelimit import DEFAULT_RATE_LIMIT, RateLimit, RateLimitMiddleware

pytestmark = pytest.mark.anyio

API = "/api/messaging/sessions"
AGENT = "6b1f0c3e-2d4a-4c8e-9f10-1a2b3c4d5e6f"
TOO_MANY = {
    "success": False,
    "error": {
        "code": "RATE_LIMIT_EXCEEDED",
        "message": "Too many requests. Please try again later.",
    },
}


def test_the_variable() -> None:
    assert RateLimit.parse(None) == DEFAULT_RATE_LIMIT == RateLimit(1000, 900)
    assert RateLimit.parse("") == DEFAULT_RATE_LIMIT
    assert RateLimit.parse("0") is None
    assert RateLimit.parse(" 5/60 ") == RateLimit(5, 60)
    for bad in ("5", "5/0", "0/60", "x/60", "5/1.5", "-1/60"):
        with pytest.raises(ValueError, match="HTTP_RATE_LIMIT"):
            RateLimit.parse(bad)


@pytest.fixture
async def runtime() -> AsyncIterator[AgentRuntime]:
    async with AgentRuntime(agent_id=AGENT, environ={}) as agent:
        yield agent


def client(app: object, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 1234))  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def test_past_the_limit_a_client_gets_429(runtime: AgentRuntime) -> None:
    clock = ManualClock(1_000_000.0)
    app = create_app(runtime, sweep=False)
    store = runtime.kv_service.get_store("rate_limit")
    app.add_middleware(RateLimitMiddleware, limit=RateLimit(3, 60), store=store, clock=clock)
    async with client(app, "10.0.0.1") as first, client(app, "10.0.0.2") as second:
        answers = [await first.get(API) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 200]
        assert [a.headers["ratelimit-remaining"] for a in answers] == ["2", "1", "0"]
        assert answers[0].headers["ratelimit-policy"] == "3;w=60"
        assert answers[0].headers["ratelimit-limit"] == "3"
        refused = await first.get(API)
        assert refused.status_code == 429
        assert refused.json() == TOO_MANY
        assert refused.headers["retry-after"] == refused.headers["ratelimit-reset"]
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        # Preflights and non-API paths are not counted or refused.
        preflight = await first.options(
            API, headers={"Origin": "http://a.example", "Access-Control-Request-Method": "GET"}
        )
        assert preflight.status_code == 200
        assert (await first.get("/health")).status_code == 200
        # Another address has its own budget.
        assert (await second.get(API)).status_code == 200
        # The next window starts afresh.
        clock.advance_by(60)
        assert (await first.get(API)).status_code == 200


@pytest.mark.redis
def test_replicas_share_one_budget(
    servers: list[Server],  # noqa: F811 - the fixture
    tmp_path: Path,
    redis_url: str,
) -> None:
    env = {"KV_STORE_BACKEND": "redis", "REDIS_URL": redis_url, "HTTP_RATE_LIMIT": "5/300"}
    for name in ("a", "b"):
        server = Server(tmp_path / f"{name}.log", env, "--agent-id", AGENT)
        servers.append(server)
    for server in servers:
        server.wait_until_serving()
    statuses = [httpx.get(f"{servers[i % 2].url}{API}", timeout=10).status_code for i in range(7)]
    assert statuses == [200] * 5 + [429] * 2
