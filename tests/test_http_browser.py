"""Browser safety: CORS (CORS_ORIGIN), preflights without a key, security headers."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator

import httpx
import pytest
from test_http_e2e import ROOT, base_env

from runtime import AgentRuntime
from runtime.http import create_app
from runtime.http.cors import parse_cors_origin
from runtime.http.headers import SECURITY_HEADERS

pytestmark = pytest.mark.anyio

API = "/api/messaging/sessions"
AGENT = "6b1f0c3e-2d4a-4c8e-9f10-1a2b3c4d5e6f"
PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "content-type,x-api-key",
}


async def client_for(**options: object) -> AsyncIterator[httpx.AsyncClient]:
    async with AgentRuntime(agent_id=AGENT, environ={}) as runtime:
        app = create_app(runtime, sweep=False, **options)  # type: ignore[arg-type]
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http


@pytest.fixture
async def open_client() -> AsyncIterator[httpx.AsyncClient]:
    async for http in client_for(api_key="k"):
        yield http


@pytest.fixture
async def strict_client() -> AsyncIterator[httpx.AsyncClient]:
    async for http in client_for(api_key="k", cors_origins=("https://app.example",)):
        yield http


async def test_a_preflight_is_answered_without_a_key(open_client: httpx.AsyncClient) -> None:
    response = await open_client.options(API, headers={"Origin": "http://any.example", **PREFLIGHT})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "http://any.example"
    assert response.headers["access-control-allow-credentials"] == "true"
    allowed = response.headers["access-control-allow-headers"].lower()
    assert {"content-type", "x-api-key", "authorization"} <= set(
        allowed.replace(" ", "").split(",")
    )
    assert "PATCH" in response.headers["access-control-allow-methods"]


async def test_configured_origins_only(strict_client: httpx.AsyncClient) -> None:
    good = await strict_client.options(API, headers={"Origin": "https://app.example", **PREFLIGHT})
    assert good.status_code == 200
    assert good.headers["access-control-allow-origin"] == "https://app.example"
    bad = await strict_client.options(API, headers={"Origin": "https://evil.example", **PREFLIGHT})
    assert bad.status_code == 400
    assert "access-control-allow-origin" not in bad.headers
    # A simple request from another origin carries no allow header: the browser hides the answer.
    answer = await strict_client.get(
        API, headers={"Origin": "https://evil.example", "X-API-KEY": "k"}
    )
    assert "access-control-allow-origin" not in answer.headers


async def test_every_answer_carries_the_security_headers(open_client: httpx.AsyncClient) -> None:
    for response in (
        await open_client.get("/health"),
        await open_client.get(API),  # 401
        await open_client.get(API, headers={"X-API-KEY": "k"}),
        await open_client.get("/nowhere"),
    ):
        for name, value in SECURITY_HEADERS:
            assert response.headers.get(name) == value, (response.request.url, name)


def test_cors_origin_values() -> None:
    assert parse_cors_origin(None) is None
    assert parse_cors_origin("  ") is None
    assert parse_cors_origin("*") == ("*",)
    assert parse_cors_origin("https://a.example/, http://b:3000") == (
        "https://a.example",
        "http://b:3000",
    )
    with pytest.raises(ValueError, match="CORS_ORIGIN"):
        parse_cors_origin("a.example")


def test_a_bad_cors_origin_stops_serve_with_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "runtime", "serve", "--port", "0"],
        env={**base_env(), "CORS_ORIGIN": "not-an-origin"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "CORS_ORIGIN" in done.stderr


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"KV_STORE_BACKEND": "cassandra"}, "KV_STORE_BACKEND"),
        ({"KV_STORE_BACKEND": "memory", "KV_STORE_TTL": "soon"}, "KV_STORE_TTL"),
        ({"KV_STORE_BACKEND": "redis", "REDIS_URL": "http://:pw-S3CR3T?x@h:1/"}, "REDIS_URL"),
    ],
)
def test_a_bad_store_variable_stops_serve_with_one_line(env: dict[str, str], named: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "runtime", "serve", "--port", "0"],
        env={**base_env(), **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert named in done.stderr
    assert "Traceback" not in done.stderr and "S3CR3T" not in done.stderr
