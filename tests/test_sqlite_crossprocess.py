"""Two OS processes incrementing one key of one SQLite file lose no update."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest

INCREMENTS = 500

# Each child opens the store, says "ready", waits for "go" on stdin so that both
# run at the same time, increments (waiting halfway until the other child is
# halfway too), and reports when it started and finished.
CHILD = textwrap.dedent(
    """
    import asyncio, sys, time
    from kvstore import SQLiteStore

    async def main(path, n):
        async with SQLiteStore(path, busy_timeout=60) as store:
            print("ready", flush=True)
            sys.stdin.readline()
            started = time.time()
            for i in range(n):
                if i == n // 2:
                    # Halfway, wait for the other child's first half, so the two
                    # compete for the file however the OS schedules them.
                    while await store.get("counter") < n:
                        await asyncio.sleep(0.01)
                await store.update("counter", lambda v: v + 1, default=0)
            print(started, time.time(), flush=True)

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    """
)


def test_two_processes_lose_no_increment(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path), str(INCREMENTS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            if child.stdout.readline().strip() != "ready":
                child.kill()
                _, err = child.communicate()
                pytest.fail(f"a child process did not start:\n{err}")
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        spans = []
        for child in children:
            out, err = child.communicate(timeout=120)
            assert child.returncode == 0, err
            started, finished = map(float, out.split())
            spans.append((started, finished))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
            child.communicate()  # reaps it and closes its pipes
    # The runs overlapped (by the halfway wait), so the increments really competed.
    assert max(start for start, _ in spans) < min(end for _, end in spans)
    with sqlite3.connect(path) as conn:
        (value,) = conn.execute(
            "SELECT value FROM kv WHERE ns = 'default' AND key = 'counter'"
        ).fetchone()
    conn.close()
    assert orjson.loads(value) == 2 * INCREMENTS
