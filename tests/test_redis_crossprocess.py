"""update() is atomic across OS processes sharing one Redis (GET + compare-and-set)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import kvstore

pytestmark = pytest.mark.redis

PROCESSES = 2
INCREMENTS = 500

# Each child connects, says "ready", waits for "go" so that both increment at
# the same time, then reports how often its fn ran (more than INCREMENTS when
# the other process forced a retry).
CHILD = """
import asyncio, sys
from kvstore import open_store

async def main(url: str, increments: int) -> None:
    calls = 0

    def bump(value: int) -> int:
        nonlocal calls
        calls += 1
        return value + 1

    async with open_store(url) as store:
        print("ready", flush=True)
        sys.stdin.readline()
        for _ in range(increments):
            await store.update("counter", bump, default=0)
    print("calls", calls, flush=True)

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def test_two_processes_increment_one_key_without_losing_updates(redis_url: str) -> None:
    import redis

    project_root = Path(kvstore.__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(project_root), *sys.path])}
    url = f"{redis_url}?namespace=crossprocess"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, url, str(INCREMENTS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        for _ in range(PROCESSES)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline() == b"ready\n", child.communicate(timeout=30)[1]
        for child in children:
            assert child.stdin is not None
            child.stdin.write(b"go\n")
            child.stdin.flush()
        outputs = [child.communicate(timeout=120) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.communicate()
    for child, (stdout, stderr) in zip(children, outputs, strict=True):
        assert child.returncode == 0, stderr.decode(errors="replace")
        calls = int(stdout.split()[-1])
        assert calls >= INCREMENTS
    with redis.Redis.from_url(redis_url, socket_timeout=5) as client:
        assert client.get("kv:crossprocess:counter") == str(PROCESSES * INCREMENTS).encode()
