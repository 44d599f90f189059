"""Every script in examples/ runs as a subprocess and prints what its docs promise.

Each run gets a clean environment (no ``KV_STORE_*``/``REDIS_URL`` from the
caller) plus the backend's variables: the scripts pick their backend the way
users do. Redis runs use the private server of the ``redis_url`` fixture.
A new example without an entry in ``EXPECTED`` fails ``test_every_example_is_covered``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TIMEOUT = 90.0
_ENV_VARIABLES = ("KV_STORE_BACKEND", "KV_STORE_PATH", "KV_STORE_TTL", "REDIS_URL", "AGENT_ID")

# Lines each script must print (whole lines, in this order, others may come between).
EXPECTED: dict[str, list[str]] = {
    "quickstart.py": [
        "user:1   -> {'name': 'Ada', 'langs': ['python']}",
        "missing  -> <default>",
        "counter  -> 3",
        "add      -> True False",
        "entries  -> ['user:1', 'user:2', 'user:3']",
        "deleted  -> 2",
    ],
    "custom_service.py": [
        "is a KVStoreService: True",
        "cached state equal: True",
        "reply: Echo: Will it rain today?",
    ],
    "sessions.py": [
        "sent       -> 'hello'              reply 'Echo: hello'",
        "page 1     -> ['Echo: thanks', 'thanks']",
        "page 2     -> ['Echo: what can you do?', 'what can you do?']",
        "still open -> ['grace']",
    ],
    "replicas.py": [
        "replica 2  -> sent 'hello from replica 2', reply 'Echo: hello from replica 2'",
        "replica 1  -> killed (SIGKILL)",
        "replica 2  -> sent 'still there?', reply 'Echo: still there?'",
        "replica 2  -> history has 6 messages, oldest first:",
        "               user: hello from replica 2",
        "              agent: Echo: still there?",
        "replica 2  -> ended the session: True",
        "done       -> nothing was lost when replica 1 died",
    ],
}

# Line prefixes whose presence is checked (their values vary from run to run).
EXPECTED_PREFIXES: dict[str, list[str]] = {
    "sessions.py": ["created    -> ", "renewed    -> ", "on_expired -> ", "after sweep-> session "],
    "replicas.py": ["started    -> replica 1 (pid ", "replica 1  -> created session "],
}

REDIS = pytest.mark.redis
RUNS = [
    pytest.param("quickstart.py", "memory"),
    pytest.param("quickstart.py", "sqlite"),
    pytest.param("quickstart.py", "redis", marks=REDIS),
    pytest.param("custom_service.py", "memory"),
    pytest.param("sessions.py", "memory"),
    pytest.param("sessions.py", "sqlite"),
    pytest.param("replicas.py", "sqlite"),
    pytest.param("replicas.py", "redis", marks=REDIS),
]


# Examples that need LangGraph/LangChain, which only .venv-integrations has: the
# integration suite (make pytest-integrations) runs them, in the file named here.
INTEGRATION_EXAMPLES: dict[str, str] = {
    "langgraph_resume.py": "tests_integrations/test_saver.py",
}


def test_every_example_is_covered() -> None:
    scripts = {path.name for path in EXAMPLES.glob("*.py")} - set(INTEGRATION_EXAMPLES)
    assert scripts == set(EXPECTED), "add the new example to EXPECTED and RUNS"
    assert {param.values[0] for param in RUNS} == scripts
    for script, test_file in INTEGRATION_EXAMPLES.items():
        assert script in (ROOT / test_file).read_text(encoding="utf-8")


def run_example(script: str, env: dict[str, str], cwd: Path) -> list[str]:
    base = {k: v for k, v in os.environ.items() if k not in _ENV_VARIABLES}
    base["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), base.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**base, **env},
        cwd=cwd,
        check=False,
    )
    assert done.returncode == 0, f"{script} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout.splitlines()


def assert_in_order(lines: list[str], wanted: list[str]) -> None:
    position = 0
    for line in wanted:
        assert line in lines[position:], f"missing {line!r} (after line {position}) in:\n" + (
            "\n".join(lines)
        )
        position = lines.index(line, position) + 1


@pytest.mark.parametrize(("script", "backend"), RUNS)
def test_example(script: str, backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    env: dict[str, str] = {}
    database = tmp_path / "kvstore.db"
    redis_url = ""
    if backend == "sqlite" and script != "replicas.py":
        env = {"KV_STORE_BACKEND": "sqlite", "KV_STORE_PATH": str(database)}
    elif backend == "redis":
        redis_url = request.getfixturevalue("redis_url")
        # replicas.py reads REDIS_URL alone; the others follow KV_STORE_BACKEND.
        env = {"KV_STORE_BACKEND": "redis", "REDIS_URL": redis_url}

    lines = run_example(script, env, tmp_path)

    assert_in_order(lines, EXPECTED[script])
    for prefix in EXPECTED_PREFIXES.get(script, []):
        assert any(line.startswith(prefix) for line in lines), (prefix, lines)
    if script == "replicas.py":
        shared = "redis (REDIS_URL)" if backend == "redis" else "sqlite (a temporary file)"
        assert f"backend    -> {shared}" in lines
    elif backend == "sqlite":
        assert database.stat().st_size > 0  # the script really used the file
    if redis_url:
        import redis

        with redis.Redis.from_url(redis_url) as client:
            assert client.dbsize() > 0  # the script really used this server
