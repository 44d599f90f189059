"""``HTTP_ALLOWED_HOSTS`` on a real server: foreign Hosts get 400 in the JSON error format."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from test_http_e2e import API, ROOT, Server, base_env, servers  # noqa: F401 - the fixture, reused

from kvstore.testing.redis_server import free_port
from runtime.http.hosts import host_name, parse_allowed_hosts


def test_foreign_hosts_are_refused(
    servers: list[Server],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    server = Server(
        tmp_path / "server.log", {"HTTP_ALLOWED_HOSTS": "127.0.0.1, API.example.com, *.internal"}
    )
    servers.append(server)
    assert server.wait_until_serving().status_code == 200
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for host in ("127.0.0.1:8000", "api.example.com", "a.b.internal", "API.EXAMPLE.COM:1"):
            answer = client.get(API, headers={"Host": host})
            assert answer.status_code == 200, (host, answer.text)
        for host in ("evil.example", "internal", "example.com", "api.example.com.evil", ""):
            answer = client.get(API, headers={"Host": host})
            assert answer.status_code == 400, host
            assert answer.headers["content-type"] == "application/json"
            assert answer.json()["error"]["code"] == "INVALID_HOST"
            # Nothing happens for a foreign Host: not even a session created.
            created = client.post(API, headers={"Host": host}, json={"agentId": "x", "userId": "y"})
            assert created.status_code == 400
        # Probes that address a replica by its IP need no entry.
        assert client.get("/health", headers={"Host": "10.1.2.3:8000"}).status_code == 200


def test_parse_allowed_hosts() -> None:
    assert parse_allowed_hosts(None) is None
    assert parse_allowed_hosts(" ") is None
    assert parse_allowed_hosts("A.example, [::1], *") == ("a.example", "[::1]", "*")
    for bad in ("http://a.example", "a.example:80", "a.*.example", "*.", "a/b"):
        with pytest.raises(ValueError, match="HTTP_ALLOWED_HOSTS"):
            parse_allowed_hosts(bad)
    assert host_name("[::1]") == "[::1]"
    assert host_name("") == ""


def test_bad_value_stops_serve() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "runtime", "serve", "--port", str(free_port())],
        env={**base_env(), "HTTP_ALLOWED_HOSTS": "https://a.example"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "HTTP_ALLOWED_HOSTS" in lines[0], done.stderr
