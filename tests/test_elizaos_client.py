"""ElizaOS's own client, ``@elizaos/api-client`` 1.7.2, against ``python -m runtime serve``.

``tests/js/client-probe.mjs`` calls every ``SessionsService`` method, the
agents and server discovery calls, and renew/heartbeat/PATCH through the
client's own request helpers; each result is compared with what the same
script recorded against the real ElizaOS 1.7.2 server
(``tests/js/real-client-shapes.json``: values replaced by their JSON types):
the same calls succeed or fail, with the same error codes and statuses, and
successful answers carry the same top-level keys. The client is installed
with ``npm ci --prefix tests/js`` (``.ci/run`` does it; this module does it
when ``tests/js/node_modules`` is missing).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from test_http_e2e import ROOT, Server

JS = ROOT / "tests" / "js"
AGENT = "b850bc30-45f8-4041-a00a-83df46d8555d"
REAL: dict[str, dict[str, Any]] = {
    entry["call"]: entry
    for entry in json.loads((JS / "real-client-shapes.json").read_text())["results"]
}
# Every call answers as on the real server.
NOT_YET: set[str] = set()
# Our agent lists fewer fields than ElizaOS's character (no settings, no secrets).
FEWER_KEYS = {"agents.getAgent(agentId)"}

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None,
    reason="the ElizaOS client suite needs node and npm",
)


@pytest.fixture(scope="module")
def client_installed() -> None:
    if not (JS / "node_modules" / "@elizaos" / "api-client").exists():
        subprocess.run(["npm", "ci", "--prefix", str(JS)], check=True, timeout=600)


def probe(tmp_path: Path, env: dict[str, str]) -> dict[str, dict[str, Any]]:
    server = Server(tmp_path / "server.log", {"AGENT_ID": AGENT, "HTTP_RATE_LIMIT": "0", **env})
    try:
        assert server.wait_until_serving().status_code == 200, server.output()
        out = tmp_path / "client.json"
        subprocess.run(
            ["node", str(JS / "client-probe.mjs"), "--base", server.url, "--out", str(out)],
            check=True,
            timeout=180,
            cwd=JS,
            capture_output=True,
        )
    finally:
        server.stop()
    results = json.loads(out.read_text())["real"]["results"]
    return {entry["call"]: entry for entry in results}


def differences(ours: dict[str, dict[str, Any]]) -> list[str]:
    found: list[str] = []
    for call, real in REAL.items():
        mine = ours.get(call)
        if mine is None:
            found.append(f"{call}: not called")
        elif "error" in real or "error" in mine:
            keys = ("name", "code", "status")
            want = {k: real.get("error", {}).get(k) for k in keys} if "error" in real else "ok"
            got = {k: mine["error"].get(k) for k in keys} if "error" in mine else "ok"
            if want != got:
                found.append(f"{call}: {got} where ElizaOS gives {want}")
        elif isinstance(real["ok"], dict) != isinstance(mine["ok"], dict) or (
            isinstance(real["ok"], dict)
            and not (
                set(mine["ok"]) <= set(real["ok"])
                if call in FEWER_KEYS
                else set(mine["ok"]) == set(real["ok"])
            )
        ):
            found.append(f"{call}: {mine['ok']!r} where ElizaOS has the shape {real['ok']!r}")
    return found


@pytest.mark.parametrize("backend", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
def test_the_elizaos_client_sees_elizaos(
    client_installed: None, backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    env = {}
    if backend == "redis":
        env = {"KV_STORE_BACKEND": "redis", "REDIS_URL": request.getfixturevalue("redis_url")}
    ours = probe(tmp_path, env)
    found = differences(ours)
    unexpected = [d for d in found if not any(d.startswith(f"{c}: ") for c in NOT_YET)]
    assert len(found) - len(unexpected) == len(NOT_YET)  # still different: update the lists
    assert not unexpected, "\n".join(unexpected)
    walk = ours["walk back with before: new Date(last.createdAt), limit 2"]["ok"]
    assert walk["visited"] == walk["distinct"] == walk["total"]
