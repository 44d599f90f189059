"""SQLite under faults: a writer killed with SIGKILL mid-load, and unusable paths.

The writer is a real process (``sys.executable`` running a script written to
``tmp_path``). It prints each key to stdout only *after* ``set`` returned, so
every printed key is a write the store acknowledged. The parent kills it with
SIGKILL at an arbitrary point, then checks with the stdlib ``sqlite3`` module
that the file is intact (``PRAGMA integrity_check``) and with a fresh
:class:`~kvstore.SQLiteStore` that every acknowledged key is there with its
value. Several kill/reopen rounds run on the same file, so recovery from a
crash (the WAL left behind) is exercised too.

Root ignores file permissions, so "cannot open" is produced with paths that no
permission bit can fix: a missing directory, and a "directory" that is a file.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from kvstore import BackendUnavailableError, KVStoreError, SQLiteStore, open_store

pytestmark = pytest.mark.anyio

REPO: Final = Path(__file__).resolve().parent.parent
ROUNDS: Final = 3
TASKS: Final = 8
"""Concurrent writer tasks in the child, so kills land inside group-committed batches."""

WRITER: Final = textwrap.dedent(
    """
    import sys

    import anyio

    from kvstore import SQLiteStore

    PATH, ROUND, TASKS = sys.argv[1], sys.argv[2], int(sys.argv[3])


    async def writer(store: SQLiteStore, task: int) -> None:
        i = 0
        while True:
            key = f"r{ROUND}:t{task}:{i:07d}"
            await store.set(key, {"round": ROUND, "task": task, "i": i, "pad": "x" * 64})
            # Printed only once set() has returned: this key is acknowledged.
            print(key, flush=True)
            i += 1


    async def main() -> None:
        async with SQLiteStore(PATH) as store, anyio.create_task_group() as tg:
            for task in range(TASKS):
                tg.start_soon(writer, store, task)


    anyio.run(main)
    """
)

BATCH_WRITER: Final = textwrap.dedent(
    """
    import sys

    import anyio

    from kvstore import SQLiteStore

    PATH, SIZE = sys.argv[1], int(sys.argv[2])


    async def main() -> None:
        async with SQLiteStore(PATH) as store:
            batch = 0
            while True:
                await store.set_many({f"b{batch:05d}:{i:05d}": batch for i in range(SIZE)})
                print(batch, flush=True)
                batch += 1


    anyio.run(main)
    """
)


def _expected(key: str) -> dict[str, Any]:
    round_, task, i = key.split(":")
    return {"round": round_[1:], "task": int(task[1:]), "i": int(i), "pad": "x" * 64}


async def _run_and_kill(script: Path, args: Sequence[str], kill_after: int) -> list[str]:
    """Run *script*, SIGKILL it once it printed *kill_after* lines; return every line printed."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    lines: list[str] = []
    process: Process = await anyio.open_process(
        [sys.executable, str(script), *args], env=env, stderr=None
    )
    async with process:
        assert process.stdout is not None
        stream = BufferedByteReceiveStream(process.stdout)
        try:
            with anyio.fail_after(60):
                while len(lines) < kill_after:
                    try:
                        line = await stream.receive_until(b"\n", 1024)
                    except (anyio.EndOfStream, anyio.IncompleteRead):
                        pytest.fail(f"the writer exited early (status {await process.wait()})")
                    lines.append(line.decode())
        finally:
            process.send_signal(signal.SIGKILL)
        # Lines printed before the kill are acknowledged writes too.
        with anyio.fail_after(30):
            while True:
                try:
                    lines.append((await stream.receive_until(b"\n", 1024)).decode())
                except (anyio.EndOfStream, anyio.IncompleteRead):
                    break
            assert await process.wait() == -signal.SIGKILL
    return lines


def _integrity(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        result: str = conn.execute("PRAGMA integrity_check").fetchone()[0]
        return result


@pytest.mark.slow
async def test_sigkilled_writer_loses_no_acknowledged_write(tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    db = tmp_path / "faults.db"
    acknowledged: list[str] = []
    for round_, kill_after in zip(range(ROUNDS), (1500, 400, 2500), strict=True):
        acknowledged += await _run_and_kill(script, [str(db), str(round_), str(TASKS)], kill_after)
        assert _integrity(db) == "ok"
        async with SQLiteStore(db) as store:
            found = await store.get_many(acknowledged)
            stored = len([key async for key, _ in store.entries(f"r{round_}:")])
        missing = sorted(set(acknowledged) - found.keys())
        print(
            f"\nSQLite SIGKILL round {round_}: acknowledged {len(acknowledged)} (all rounds),"
            f" found {len(found)}, rows of this round {stored}, missing {len(missing)}"
        )
        assert not missing, f"acknowledged writes lost: {missing[:10]}"
        assert all(found[key] == _expected(key) for key in acknowledged)
    assert len(acknowledged) >= sum((1500, 400, 2500))


@pytest.mark.slow
async def test_sigkill_during_set_many_is_all_or_nothing(tmp_path: Path) -> None:
    script = tmp_path / "batch_writer.py"
    script.write_text(BATCH_WRITER)
    db = tmp_path / "batches.db"
    size = 2000
    acknowledged = {int(line) for line in await _run_and_kill(script, [str(db), str(size)], 5)}
    assert _integrity(db) == "ok"
    counts: dict[int, int] = {}
    async with SQLiteStore(db) as store:
        async for _, batch in store.entries("b"):
            counts[batch] = counts.get(batch, 0) + 1
    print(f"\nSQLite SIGKILL in set_many: {len(acknowledged)} batches acknowledged, found {counts}")
    assert acknowledged <= counts.keys()
    torn = {batch: n for batch, n in counts.items() if n != size}
    assert not torn, f"half-written set_many batches: {torn}"


async def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "dir" / "kv.db"
    store = SQLiteStore(path)
    with pytest.raises(KVStoreError) as info:
        await store.set("k", 1)
    await store.aclose()
    assert isinstance(info.value, BackendUnavailableError)
    assert str(path.parent) in str(info.value)
    assert "does not exist" in str(info.value)
    assert isinstance(info.value.__cause__, sqlite3.Error)
    assert not path.parent.exists()


async def test_parent_is_a_regular_file_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    path = blocker / "kv.db"
    store = open_store(f"sqlite:///{path}")
    with pytest.raises(KVStoreError) as info:
        async with store:
            pass
    assert isinstance(info.value, BackendUnavailableError)
    assert str(path) in str(info.value)
    assert "not a directory" in str(info.value)
    assert isinstance(info.value.__cause__, sqlite3.Error)
    assert blocker.read_text() == "not a directory"


async def test_database_path_is_a_directory_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "a_dir.db"
    path.mkdir()
    store = SQLiteStore(path)
    with pytest.raises(KVStoreError) as info:
        await store.get("k")
    await store.aclose()
    assert str(path) in str(info.value)
    assert not isinstance(info.value, sqlite3.Error)


async def test_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not an SQLite database at all" * 200)
    store = SQLiteStore(path)
    with pytest.raises(KVStoreError) as info:
        await store.get("k")
    await store.aclose()
    assert str(path) in str(info.value)
    assert isinstance(info.value.__cause__, sqlite3.Error)
    assert path.read_bytes().startswith(b"this is not an SQLite database")
