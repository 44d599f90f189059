"""SQLiteStore specifics: URLs, open failures, reclaiming, paging, group commit, durability.

The behaviour every backend shares is in the contract suite (test_contract.py).
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from kvstore import (
    BackendUnavailableError,
    ConfigError,
    KVStoreError,
    SQLiteStore,
    StoreClosedError,
    open_store,
)
from kvstore.backends import sqlite as sqlite_backend
from kvstore.backends.sqlite import committer as sqlite_committer
from kvstore.backends.sqlite import engine as sqlite_engine
from kvstore.testing import ManualClock

pytestmark = pytest.mark.anyio


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def store(tmp_path: Path, clock: ManualClock) -> AsyncIterator[SQLiteStore]:
    async with SQLiteStore(tmp_path / "kv.db", clock=clock) as store:
        yield store


def count_rows(path: Path) -> int:
    """Rows in the kv table, expired ones included, read without the store."""
    with sqlite3.connect(path) as conn:
        count: int = conn.execute("SELECT count(*) FROM kv").fetchone()[0]
    conn.close()
    return count


# -- URLs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///relative.db", "relative.db"),
        ("sqlite:///dir/relative.db", "dir/relative.db"),
        ("sqlite:////abs/path.db", "/abs/path.db"),
        ("sqlite:////abs/with%20space.db", "/abs/with space.db"),
        ("SQLITE:///upper.db", "upper.db"),
        ("sqlite:///:memory:", ":memory:"),
        ("sqlite://:memory:", ":memory:"),
    ],
)
def test_url_paths(url: str, path: str) -> None:
    assert SQLiteStore.from_url(url).path == path


def test_url_options() -> None:
    store = SQLiteStore.from_url(
        "sqlite:///kv.db?busy_timeout=2.5&page_size=7&default_ttl=60&max_value_bytes=1000"
    )
    assert store.default_ttl == 60.0
    assert store.max_value_bytes == 1000
    assert store._page_size == 7
    assert store._engine._busy_timeout == 2.5


def test_keyword_options_win_over_the_url() -> None:
    store = SQLiteStore.from_url("sqlite:///kv.db?default_ttl=60", default_ttl=5)
    assert store.default_ttl == 5.0
    # open_service passes default_ttl=None when it has none: the URL's applies.
    assert (
        SQLiteStore.from_url("sqlite:///kv.db?default_ttl=60", default_ttl=None).default_ttl == 60
    )


def test_open_store_picks_sqlite() -> None:
    store = open_store("sqlite:////tmp/kvstore-url-test.db")
    assert isinstance(store, SQLiteStore)
    assert store.path == "/tmp/kvstore-url-test.db"
    assert store.backend == "sqlite"


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:///",
        "sqlite://host/kv.db",
        "sqlite:kv.db",
        "redis:///kv.db",
        "sqlite:///kv.db?bogus=1",
        "sqlite:///kv.db?busy_timeout=abc",
        "sqlite:///kv.db?busy_timeout=-1",
        "sqlite:///kv.db?busy_timeout=nan",
        "sqlite:///kv.db?busy_timeout",
        "sqlite:///kv.db?page_size=0",
        "sqlite:///kv.db?page_size=2.5",
        "sqlite:///kv.db?default_ttl=0",
        "sqlite:///kv.db?default_ttl=inf",
        "sqlite:///kv.db?max_value_bytes=-5",
        "sqlite:///kv.db?page_size=3&page_size=4",
        "sqlite:///kv.db?&&",
    ],
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        SQLiteStore.from_url(url)
    assert isinstance(info.value, ValueError)
    assert repr(url) in str(info.value) or url in str(info.value)


def test_bad_constructor_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        SQLiteStore("")
    with pytest.raises(ValueError):
        SQLiteStore(tmp_path / "kv.db", busy_timeout=-1)
    with pytest.raises(ValueError):
        SQLiteStore(tmp_path / "kv.db", page_size=0)
    with pytest.raises(TypeError, match="busy_timeout"):
        SQLiteStore(tmp_path / "kv.db", busy_timeout="5")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="page_size"):
        SQLiteStore(tmp_path / "kv.db", page_size=2.5)  # type: ignore[arg-type]
    with pytest.raises(KVStoreError):
        SQLiteStore(tmp_path / "kv.db", namespace="a:b")


# -- opening failures -----------------------------------------------------------
# The tests run as root, and chmod cannot stop root from writing, so an
# unwritable directory is simulated by one that does not exist or whose parent
# is a regular file: SQLite fails to create the database in both cases.


@pytest.mark.parametrize("where", ["missing_dir", "parent_is_a_file"])
async def test_unopenable_path_raises_backend_unavailable(tmp_path: Path, where: str) -> None:
    if where == "missing_dir":
        path = tmp_path / "no" / "such" / "dir" / "kv.db"
    else:
        (tmp_path / "file").write_text("not a directory")
        path = tmp_path / "file" / "kv.db"
    store = SQLiteStore(path)  # lazy: building it does not touch the disk
    for attempt in (store.set("k", 1), store.get("k")):
        with pytest.raises(BackendUnavailableError) as info:
            await attempt
        assert str(path) in str(info.value)
        assert "directory" in str(info.value)
        assert isinstance(info.value.__cause__, sqlite3.Error)
        assert not isinstance(info.value, sqlite3.Error)
    with pytest.raises(KVStoreError):
        async with store:
            pass
    await store.aclose()
    assert not path.exists()


async def test_open_recovers_once_the_directory_exists(tmp_path: Path) -> None:
    path = tmp_path / "later" / "kv.db"
    store = SQLiteStore(path)
    with pytest.raises(BackendUnavailableError):
        await store.get("k")
    path.parent.mkdir()
    await store.set("k", 1)
    assert await store.get("k") == 1
    await store.aclose()


async def test_locked_database_times_out_with_a_typed_error(tmp_path: Path) -> None:
    path = tmp_path / "kv.db"
    async with SQLiteStore(path, busy_timeout=0.05) as store:
        await store.set("k", 1)
        blocker = sqlite3.connect(path, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock
            with pytest.raises(BackendUnavailableError, match="busy_timeout") as info:
                await store.set("k", 2)
            assert isinstance(info.value.__cause__, sqlite3.OperationalError)
            assert await store.get("k") == 1  # WAL readers are not blocked
            blocker.execute("ROLLBACK")
        finally:
            blocker.close()
        await store.set("k", 3)
        assert await store.get("k") == 3


# -- the file -------------------------------------------------------------------


async def test_journal_mode_is_wal(store: SQLiteStore) -> None:
    await store.set("k", 1)
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT ns, key FROM kv").fetchall() == [("default", "k")]
    conn.close()


async def test_second_store_sees_the_data_and_it_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "kv.db"
    first = SQLiteStore(path)
    other_ns = first.namespaced("other")
    await first.set("k", {"v": 1})
    await other_ns.set("k", "other")
    async with SQLiteStore(path) as second:  # a second connection to the same file
        assert await second.get("k") == {"v": 1}
        await second.set("from_second", 2)
        assert await first.get("from_second") == 2
    await first.aclose()
    async with SQLiteStore(path) as reopened:
        assert {k: v async for k, v in reopened.entries()} == {"k": {"v": 1}, "from_second": 2}
        assert await reopened.namespaced("other").get("k") == "other"


async def test_aclose_commits_queued_writes(tmp_path: Path) -> None:
    path = tmp_path / "kv.db"
    store = SQLiteStore(path)
    await store.set("warm", 0)
    tasks = [asyncio.ensure_future(store.set(f"k{i}", i)) for i in range(100)]
    await anyio.lowlevel.checkpoint()  # the writes are queued, none committed yet
    await store.aclose()
    await asyncio.gather(*tasks)
    async with SQLiteStore(path) as reopened:
        assert await reopened.get_many([f"k{i}" for i in range(100)]) == {
            f"k{i}": i for i in range(100)
        }


async def test_memory_database_is_shared_by_views_only() -> None:
    async with SQLiteStore(":memory:") as store:
        view = store.namespaced("view")
        await store.set("k", 1)
        await view.set("k", 2)
        assert (await store.get("k"), await view.get("k")) == (1, 2)
        async with SQLiteStore(":memory:") as separate:
            assert await separate.get("k") is None


# -- namespaces -------------------------------------------------------------------


async def test_namespaced_views_share_the_connection(store: SQLiteStore) -> None:
    view = store.namespaced("sessions", default_ttl=30, page_size=2)
    assert view._engine is store._engine
    assert (view.namespace, view.default_ttl, view._page_size) == ("sessions", 30.0, 2)
    await view.set("k", 1)
    await view.aclose()  # closing a view leaves the shared connection open
    assert await store.namespaced("sessions").get("k") == 1
    with pytest.raises(StoreClosedError):
        await view.get("k")


async def test_closing_the_root_closes_its_views(tmp_path: Path) -> None:
    root = SQLiteStore(tmp_path / "kv.db")
    view = root.namespaced("v")
    await view.set("k", 1)
    await root.aclose()
    with pytest.raises(StoreClosedError):
        await view.get("k")
    with pytest.raises(StoreClosedError):
        await view.set("k", 2)


def test_namespaced_rejects_connection_options(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "kv.db")
    with pytest.raises(ConfigError, match="busy_timeout"):
        store.namespaced("x", busy_timeout=1)
    with pytest.raises(KVStoreError):
        store.namespaced("bad:name")


# -- expiry ---------------------------------------------------------------------


async def test_expired_rows_are_reclaimed_by_writes(store: SQLiteStore, clock: ManualClock) -> None:
    path = Path(store.path)
    await store.set("forever", 1)
    await store.set_many({f"short{i}": i for i in range(50)}, ttl=10)
    assert count_rows(path) == 51
    clock.advance_by(20)
    assert count_rows(path) == 51  # invisible at once, reclaimed by the next batch
    assert [k async for k, _ in store.entries()] == ["forever"]
    await store.set("trigger", 2)
    assert count_rows(path) == 2


async def test_reclaiming_is_bounded_per_batch(store: SQLiteStore, clock: ManualClock) -> None:
    path = Path(store.path)
    limit = sqlite_backend.RECLAIM_LIMIT
    await store.set_many({f"e{i}": i for i in range(limit * 2 + 500)}, ttl=10)
    clock.advance_by(20)
    await store.set("a", 1)
    assert count_rows(path) == limit + 500 + 1
    await store.set("b", 1)  # a backlog is continued by the next write
    assert count_rows(path) == 500 + 2
    await store.set("c", 1)
    assert count_rows(path) == 3


async def test_expired_row_counts_as_absent_for_add(store: SQLiteStore, clock: ManualClock) -> None:
    await store.set("lock", "old", ttl=10)
    clock.advance_by(20)
    assert await store.add("lock", "new") is True  # the expired row is replaced in place
    assert await store.get("lock") == "new"
    assert await store.ttl("lock") is None


# -- entries ------------------------------------------------------------------------


async def test_entries_pages_while_other_tasks_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    page_sizes: list[int] = []
    real_read = sqlite_engine.Engine.read

    async def spy(self: Any, sql: str, params: tuple[Any, ...]) -> list[Any]:
        rows = await real_read(self, sql, params)
        if "ORDER BY key" in sql:
            page_sizes.append(len(rows))
        return rows

    monkeypatch.setattr(sqlite_engine.Engine, "read", spy)
    async with SQLiteStore(tmp_path / "kv.db", page_size=3) as store:
        stable = {f"k{i:02d}": i for i in range(10)}
        await store.set_many(stable)
        await store.set_many({f"k{i:02d}x": -i for i in range(10)})  # deleted meanwhile
        seen: list[str] = []

        async def writer() -> None:
            for i in range(10):
                await store.set(f"k{i:02d}new", i)  # sorts between the stable keys
                await store.delete(f"k{i:02d}x")
                await store.set(f"z{i}", i)  # outside the prefix
                await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            tg.start_soon(writer)
            async for key, _ in store.entries("k"):
                seen.append(key)
                await anyio.lowlevel.checkpoint()
        assert sorted(k for k in seen if k in stable) == sorted(stable)  # each exactly once
        assert len(seen) == len(set(seen))
        assert all(key.startswith("k") for key in seen)
        assert max(page_sizes) == 3 and len(page_sizes) >= 4  # paged, never all at once


PREFIX_KEYS = ["50%_off", "50x_off", "50_x", "b", "\ud7ffx", "\ue000", "\U0010ffff"]
PREFIX_KEYS += ["a\U0010ffff", "a\U0010ffffz"]


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("50%", {"50%_off"}),
        ("50_", {"50_x"}),
        ("a\U0010ffff", {"a\U0010ffff", "a\U0010ffffz"}),
        ("\U0010ffff", {"\U0010ffff"}),
        ("\ud7ff", {"\ud7ffx"}),
        (
            "",
            {
                "50%_off",
                "50x_off",
                "50_x",
                "a\U0010ffff",
                "a\U0010ffffz",
                "b",
                "\ud7ffx",
                "\ue000",
                "\U0010ffff",
            },
        ),
    ],
    ids=["percent", "underscore", "max-char-last", "only-max-chars", "before-surrogates", "all"],
)
async def test_entries_prefix_is_literal(
    store: SQLiteStore, prefix: str, expected: set[str]
) -> None:
    keys = [
        "50%_off",
        "50x_off",
        "50_x",
        "a\U0010ffff",
        "a\U0010ffffz",
        "b",
        "\ud7ffx",
        "\ue000",
        "\U0010ffff",
    ]
    await store.set_many({key: 1 for key in keys})
    assert {k async for k, _ in store.entries(prefix)} == expected


# -- group commit -------------------------------------------------------------------


class Boom(Exception):
    pass


async def test_group_commit_fails_only_the_failing_write(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch_sizes: list[int] = []
    real_commit = sqlite_committer.GroupCommitter._commit

    async def spy(self: Any, batch: list[Any]) -> None:
        batch_sizes.append(len(batch))
        await real_commit(self, batch)

    monkeypatch.setattr(sqlite_committer.GroupCommitter, "_commit", spy)
    await store.set("counter", 0)
    batch_sizes.clear()
    outcomes: dict[int, Any] = {}

    def explode(value: Any) -> Any:
        raise Boom("only me")

    async def op(i: int) -> None:
        try:
            if i == 123:
                outcomes[i] = await store.update("counter", explode)
            elif i % 4 == 0:
                await store.set(f"set{i}", {"i": i})
                outcomes[i] = None
            elif i % 4 == 1:
                outcomes[i] = await store.update("counter", lambda n: n + 1)
            elif i % 4 == 2:
                outcomes[i] = await store.add(f"add{i % 20}", i)  # 5 keys, 10 contenders each
            else:
                outcomes[i] = await store.update(f"own{i}", lambda v: [*v, "x"], default=[])
        except Exception as err:
            outcomes[i] = err

    async with anyio.create_task_group() as tg:
        for i in range(200):
            tg.start_soon(op, i)

    assert isinstance(outcomes.pop(123), Boom)
    assert not [o for o in outcomes.values() if isinstance(o, Exception)]
    assert max(batch_sizes) > 1 and sum(batch_sizes) == 200  # really grouped
    assert await store.get("counter") == 50
    assert await store.get_many([f"set{i}" for i in range(0, 200, 4)]) == {
        f"set{i}": {"i": i} for i in range(0, 200, 4)
    }
    add_wins = Counter(i % 20 for i, won in outcomes.items() if i % 4 == 2 and won is True)
    assert add_wins == Counter({k: 1 for k in range(2, 20, 4)})
    for k in range(2, 20, 4):
        assert (await store.get(f"add{k}")) % 20 == k
    assert await store.get_many([f"own{i}" for i in range(3, 200, 4) if i != 123]) == {
        f"own{i}": ["x"] for i in range(3, 200, 4) if i != 123
    }


async def test_a_failing_statement_fails_only_its_write(store: SQLiteStore) -> None:
    await store.set("warm", 0)
    with sqlite3.connect(store.path) as conn:
        conn.execute(
            "CREATE TRIGGER poison BEFORE INSERT ON kv WHEN NEW.key = 'poison'"
            " BEGIN SELECT RAISE(ABORT, 'poisoned row'); END"
        )
    conn.close()

    async def attempt(key: str) -> Exception | None:
        try:
            await store.set(key, 1)
        except Exception as err:
            return err
        return None

    results = await asyncio.gather(*(attempt(f"k{i}") for i in range(20)), attempt("poison"))
    error = results[-1]
    assert isinstance(error, BackendUnavailableError) and "poisoned row" in str(error)
    assert isinstance(error.__cause__, sqlite3.Error)
    assert results[:-1] == [None] * 20
    assert len(await store.get_many([f"k{i}" for i in range(20)])) == 20
    assert await store.get("poison") is None


async def test_writes_keep_their_order_within_a_batch(store: SQLiteStore) -> None:
    async def sequence() -> None:
        await asyncio.gather(
            store.set("k", 1),
            store.update("k", lambda v: v * 10),
            store.delete("k"),
            store.update("k", lambda v: (v or 0) + 5),
            store.set_many({"k": 100, "j": 1}),
            store.update("k", lambda v: v + 1),
            store.expire("k", 100),
            store.update("k", lambda v: v + 1),
        )

    await sequence()
    assert await store.get_many(["k", "j"]) == {"k": 102, "j": 1}
    assert await store.ttl("k") is None  # the last update wrote without a ttl


async def test_cancelled_caller_does_not_break_the_batch(store: SQLiteStore) -> None:
    await store.set("warm", 0)
    doomed = asyncio.ensure_future(store.set("doomed", 1))
    others = [asyncio.ensure_future(store.set(f"k{i}", i)) for i in range(10)]
    doomed.cancel()
    await asyncio.gather(*others)
    assert len(await store.get_many([f"k{i}" for i in range(10)])) == 10
    with pytest.raises(asyncio.CancelledError):
        await doomed


# -- process lifetime -----------------------------------------------------------------


def test_unclosed_store_does_not_keep_the_interpreter_alive(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, warnings
        from kvstore import SQLiteStore
        warnings.simplefilter("ignore")
        STORE = SQLiteStore({str(tmp_path / "kv.db")!r})

        async def main():
            await STORE.set("k", 1)  # and never aclose()

        asyncio.run(main())
        print("done")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done"
    assert count_rows(tmp_path / "kv.db") == 1


# -- reads on their own connection, idle reclaim --------------------------------

_HOLD_LOCK = textwrap.dedent(
    """
    import sqlite3, sys
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    print("locked", flush=True)
    sys.stdin.readline()
    conn.execute("ROLLBACK")
    """
)


async def test_a_read_does_not_wait_behind_a_batch_blocked_by_another_process(
    tmp_path: Path,
) -> None:
    path = tmp_path / "kv.db"
    async with SQLiteStore(path, busy_timeout=20) as store:
        await store.set("k", "committed")
        holder = await anyio.to_thread.run_sync(
            lambda: subprocess.Popen(
                [sys.executable, "-c", _HOLD_LOCK, str(path)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
        try:
            assert holder.stdout is not None and holder.stdin is not None
            assert await anyio.to_thread.run_sync(holder.stdout.readline) == "locked\n"
            writer = asyncio.ensure_future(store.set("k", "new"))
            committer = store._engine._committer
            # Until its BEGIN waits (the store signals only the end of a batch).
            while committer.outside_transaction.is_set():  # noqa: ASYNC110
                await anyio.sleep(0.01)
            # Far below busy_timeout: the read must not queue behind the BEGIN.
            with anyio.fail_after(10):
                assert await store.get("k") == "committed"
            assert not writer.done()
        finally:
            if holder.stdin is not None:
                holder.stdin.write("\n")
                holder.stdin.close()
            if holder.stdout is not None:
                holder.stdout.close()
            await anyio.to_thread.run_sync(holder.wait)
        await writer
        assert await store.get("k") == "new"


@pytest.mark.parametrize("where", ["file", "memory"])
async def test_a_read_never_sees_a_batch_that_did_not_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    location = str(tmp_path / "kv.db") if where == "file" else ":memory:"
    async with SQLiteStore(location) as store:
        await store.set("k", "old")
        conn = await store._engine.connection()
        execute = conn.execute
        readers: list[asyncio.Future[Any]] = []

        async def failing_commit(sql: str, *args: Any) -> Any:
            if sql == "COMMIT":
                # A read issued while the batch is written but not committed...
                readers.append(asyncio.ensure_future(store.get("k")))
                for _ in range(20):
                    await asyncio.sleep(0)
                raise sqlite3.OperationalError("disk I/O error (injected)")
            return await execute(sql, *args)

        monkeypatch.setattr(conn, "execute", failing_commit)
        with pytest.raises(BackendUnavailableError, match="injected"):
            await store.set("k", "uncommitted")
        monkeypatch.undo()
        # ...sees the committed value, as does every read after the rollback.
        assert await readers[0] == "old"
        assert await store.get("k") == "old"


async def test_expired_rows_are_reclaimed_by_reads_when_nothing_writes(
    store: SQLiteStore, clock: ManualClock
) -> None:
    path = Path(store.path)
    limit = sqlite_backend.RECLAIM_LIMIT
    await store.set("forever", 1)
    await store.set_many({f"e{i}": i for i in range(limit + 10)}, ttl=10)
    clock.advance_by(20)
    committer = store._engine._committer
    assert await store.get("forever") == 1  # due: queues one bounded reclaim
    await committer.wait_idle()
    assert count_rows(path) == 10 + 1
    assert await store.get("e1") is None  # a backlog: the next read continues
    await committer.wait_idle()
    assert count_rows(path) == 1
    assert committer._drainer is None  # no task left behind
